//! Creating and deleting pools, with the validation that keeps bad pools out of the store.

use ipnet::IpNet;

use crate::block::IPAMBlock;
use crate::error::IpamError;
use crate::ipam::{Change, Ipam};
use crate::model::{
    BLOCK_SIZE_RANGE_V4, BLOCK_SIZE_RANGE_V6, BlockAffinity, EncapsulationMode, Family, IPPool,
    block_name,
};
use crate::selector::Selector;
use crate::store::Store;

/// Parses a pool CIDR, refusing host bits (`198.18.0.1/15`) with the CIDR that was meant.
pub fn parse_pool_cidr(pool: &str, text: &str) -> Result<IpNet, IpamError> {
    let cidr: IpNet = text.trim().parse().map_err(|_| IpamError::InvalidPool {
        pool: pool.to_string(),
        field: "cidr",
        problem: format!("\"{text}\" is not a CIDR (expected e.g. 198.18.0.0/15 or 2001:db8::/48)"),
    })?;
    if cidr.trunc() != cidr {
        return Err(IpamError::InvalidPool {
            pool: pool.to_string(),
            field: "cidr",
            problem: format!("{cidr} has host bits set; did you mean {}?", cidr.trunc()),
        });
    }
    Ok(cidr)
}

/// Checks a pool on its own (not against other pools).
pub fn validate_pool(pool: &IPPool) -> Result<(), IpamError> {
    let invalid = |field: &'static str, problem: String| IpamError::InvalidPool {
        pool: pool.name.clone(),
        field,
        problem,
    };
    if pool.name.is_empty()
        || !pool
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err(invalid(
            "name",
            format!(
                "\"{}\" must be non-empty lowercase letters, digits, '-' and '.'",
                pool.name
            ),
        ));
    }
    if pool.cidr.trunc() != pool.cidr {
        return Err(invalid(
            "cidr",
            format!(
                "{} has host bits set; did you mean {}?",
                pool.cidr,
                pool.cidr.trunc()
            ),
        ));
    }
    let (low, high) = match pool.family() {
        Family::V4 => BLOCK_SIZE_RANGE_V4,
        Family::V6 => BLOCK_SIZE_RANGE_V6,
    };
    if pool.block_size < low || pool.block_size > high {
        return Err(invalid(
            "blockSize",
            format!(
                "{} is out of range for {} pools ({low}–{high})",
                pool.block_size,
                pool.family()
            ),
        ));
    }
    if pool.block_size < pool.cidr.prefix_len() {
        return Err(invalid(
            "blockSize",
            format!(
                "/{} blocks do not fit in {}: the block size must be ≥ the pool's prefix length",
                pool.block_size, pool.cidr
            ),
        ));
    }
    if pool.ipip_mode != EncapsulationMode::Never && pool.vxlan_mode != EncapsulationMode::Never {
        return Err(invalid(
            "ipipMode",
            format!(
                "{} together with vxlanMode {}: a pool uses one encapsulation; set the other to Never",
                pool.ipip_mode, pool.vxlan_mode
            ),
        ));
    }
    if pool.allowed_uses.is_empty() {
        return Err(invalid(
            "allowedUses",
            "is empty; list Workload and/or Tunnel".to_string(),
        ));
    }
    Selector::parse(&pool.node_selector)
        .map_err(|error| invalid("nodeSelector", error.to_string()))?;
    Ok(())
}

impl<S: Store> Ipam<S> {
    /// Adds a pool after checking it and that it overlaps no other pool.
    pub fn create_pool(&self, pool: IPPool) -> Result<(), IpamError> {
        validate_pool(&pool)?;
        for other in self.pools()? {
            if other.name == pool.name {
                return Err(IpamError::PoolExists { pool: pool.name });
            }
            if other.cidr.contains(&pool.cidr.network())
                || pool.cidr.contains(&other.cidr.network())
            {
                return Err(IpamError::PoolOverlap {
                    pool: pool.name,
                    cidr: pool.cidr,
                    other: other.name,
                    other_cidr: other.cidr,
                });
            }
        }
        // Two concurrent creates of overlapping pools with different names can both pass
        // the check above; the store cannot compare across objects. Pool creation is an
        // operator action, and `check` reports overlapping blocks should it ever happen.
        match self.store.create(pool.clone().into()) {
            Ok(_) => Ok(()),
            Err(crate::store::StoreError::AlreadyExists { .. }) => {
                Err(IpamError::PoolExists { pool: pool.name })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Replaces a pool's settings. The CIDR and block size cannot change while blocks exist.
    pub fn update_pool(&self, pool: IPPool) -> Result<(), IpamError> {
        validate_pool(&pool)?;
        let name = pool.name.clone();
        self.modify::<IPPool, ()>("updating a pool", &name, |current| {
            let Some(current) = current else {
                return Err(IpamError::PoolNotFound { pool: name.clone() });
            };
            if current.cidr != pool.cidr || current.block_size != pool.block_size {
                return Err(IpamError::InvalidPool {
                    pool: name.clone(),
                    field: "cidr",
                    problem:
                        "cidr and blockSize cannot change; create a new pool and disable this one"
                            .to_string(),
                });
            }
            Ok(Change::Put(pool.clone(), ()))
        })
    }

    /// Deletes a pool with no address in use: its (empty) blocks and their affinities go
    /// too. A pool with addresses in use is refused, and nothing changes.
    pub fn delete_pool(&self, name: &str) -> Result<(), IpamError> {
        let pool = self.pool(name)?.ok_or_else(|| IpamError::PoolNotFound {
            pool: name.to_string(),
        })?;
        let blocks: Vec<IPAMBlock> = self
            .blocks()?
            .into_iter()
            .filter(|block| pool.cidr.contains(&block.cidr))
            .collect();
        let in_use: u64 = blocks.iter().map(|block| u64::from(block.in_use())).sum();
        if in_use > 0 {
            return Err(IpamError::PoolInUse {
                pool: name.to_string(),
                in_use,
            });
        }
        for block in &blocks {
            let block_key = block_name(&block.cidr);
            self.modify::<IPAMBlock, ()>("deleting a pool's block", &block_key, |current| {
                Ok(match current {
                    Some(current) if !current.is_empty() => {
                        return Err(IpamError::PoolInUse {
                            pool: name.to_string(),
                            in_use: current.in_use().into(),
                        });
                    }
                    _ => Change::Delete(()),
                })
            })?;
        }
        for affinity in self.affinities(None)? {
            if pool.cidr.contains(&affinity.cidr) {
                let affinity_name = BlockAffinity::name_for(&affinity.node, &affinity.cidr);
                self.modify::<BlockAffinity, ()>(
                    "deleting a pool's affinity",
                    &affinity_name,
                    |_| Ok(Change::Delete(())),
                )?;
            }
        }
        self.modify::<IPPool, ()>("deleting a pool", name, |_| Ok(Change::Delete(())))
    }
}
