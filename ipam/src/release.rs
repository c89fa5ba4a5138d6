//! Giving addresses and blocks back: by handle, by address (with the sequence check), and a
//! node's empty blocks.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::block::{IPAMBlock, ReleaseRefusal, ReleasedAddress};
use crate::error::IpamError;
use crate::ipam::{Change, Ipam, unix_now};
use crate::model::{AffinityState, BlockAffinity, IPAMHandle, Kind, block_name};
use crate::store::{Store, StoreError};

impl<S: Store> Ipam<S> {
    /// The block that holds `address`: computed from its pool, or (for a block whose pool
    /// was deleted) found among the blocks.
    pub fn block_holding(&self, address: IpAddr) -> Result<Option<IPAMBlock>, IpamError> {
        let pool = self
            .pools()?
            .into_iter()
            .find(|pool| pool.cidr.contains(&address));
        if let Some(pool) = pool
            && let Some(block) = self.block(&pool.block_for(address))?
        {
            return Ok(Some(block));
        }
        Ok(self
            .blocks()?
            .into_iter()
            .find(|block| block.cidr.contains(&address)))
    }

    /// Releases one address. With `handle_id` and/or `sequence`, only if the address is still
    /// held under them: a release that comes after the address was freed and reused is
    /// refused ([`IpamError::StaleRelease`]) instead of freeing someone else's address.
    /// An address that is not allocated is an error, and nothing changes.
    pub fn release_address(
        &self,
        address: IpAddr,
        handle_id: Option<&str>,
        sequence: Option<u64>,
    ) -> Result<ReleasedAddress, IpamError> {
        let block = self
            .block_holding(address)?
            .ok_or_else(|| IpamError::NotAllocated {
                address,
                why: "no block holds it".to_string(),
            })?;
        let name = block_name(&block.cidr);
        let released =
            self.modify::<IPAMBlock, ReleasedAddress>("releasing an address", &name, |current| {
                let Some(current) = current else {
                    return Err(IpamError::NotAllocated {
                        address,
                        why: format!("block {name} was deleted"),
                    });
                };
                // In place: `release` changes nothing when it refuses.
                let cidr = current.cidr;
                match current.release(address, handle_id, sequence) {
                    Ok(released) => Ok(Change::Updated(released)),
                    Err(ReleaseRefusal::OutsideBlock) | Err(ReleaseRefusal::NotAllocated) => {
                        Err(IpamError::NotAllocated {
                            address,
                            why: format!("free in block {cidr}"),
                        })
                    }
                    Err(ReleaseRefusal::SequenceMismatch { expected, actual }) => {
                        Err(IpamError::StaleRelease {
                            address,
                            expected,
                            actual,
                        })
                    }
                    Err(ReleaseRefusal::HandleMismatch { expected, actual }) => {
                        Err(IpamError::HandleMismatch {
                            address,
                            expected,
                            actual,
                        })
                    }
                }
            })?;
        if let Some(handle_id) = &released.handle_id {
            self.adjust_handle(handle_id, &name, -1)?;
        }
        Ok(released)
    }

    /// Releases everything a handle holds and deletes the handle. Idempotent: an unknown
    /// handle releases nothing and is not an error. Visits only the blocks the handle names.
    pub fn release_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>, IpamError> {
        let Some(handle) = self.handle(handle_id)? else {
            return Ok(Vec::new());
        };
        let blocks: Vec<String> = handle.block.keys().map(str::to_string).collect();
        self.release_handle_in(handle_id, &blocks)
    }

    /// Releases a handle's addresses in the named blocks, then deletes the handle (block
    /// first: a crash in between leaves a handle that points at nothing, which a repeat
    /// or GC removes).
    pub(crate) fn release_handle_in(
        &self,
        handle_id: &str,
        blocks: &[String],
    ) -> Result<Vec<IpAddr>, IpamError> {
        let mut released = Vec::new();
        for name in blocks {
            let freed =
                self.modify::<IPAMBlock, Vec<IpAddr>>("releasing a handle", name, |current| {
                    let Some(current) = current else {
                        return Ok(Change::Keep(Vec::new()));
                    };
                    let freed = current.release_handle(handle_id);
                    Ok(if freed.is_empty() {
                        Change::Keep(freed)
                    } else {
                        Change::Updated(freed)
                    })
                })?;
            released.extend(freed);
        }
        self.modify::<IPAMHandle, ()>("deleting a handle", handle_id, |_| Ok(Change::Delete(())))?;
        if !released.is_empty() {
            tracing::info!(
                handle = handle_id,
                count = released.len(),
                "released handle"
            );
        }
        Ok(released)
    }

    /// Gives up every block of `node` that holds no address: affinity to `pendingDeletion`,
    /// block deleted (compare-and-swap: if anything was allocated meanwhile, the block is
    /// kept and the affinity restored), affinity deleted. Returns the blocks given up.
    pub fn release_empty_blocks(&self, node: &str) -> Result<Vec<IpNet>, IpamError> {
        let mut released = Vec::new();
        for affinity in self.affinities(Some(node))? {
            if affinity.state == AffinityState::Pending {
                continue;
            }
            if self.release_block_if_empty(&affinity)? {
                released.push(affinity.cidr);
            }
        }
        Ok(released)
    }

    /// One block of [`Ipam::release_empty_blocks`]; also GC's way to finish a release that
    /// stopped halfway. Returns whether the block is gone.
    pub(crate) fn release_block_if_empty(
        &self,
        affinity: &BlockAffinity,
    ) -> Result<bool, IpamError> {
        let affinity_name = affinity.name();
        let name = block_name(&affinity.cidr);
        let Some((block, _)) = self.get_typed::<IPAMBlock>(&name)? else {
            self.modify::<BlockAffinity, ()>(
                "deleting an affinity without block",
                &affinity_name,
                |_| Ok(Change::Delete(())),
            )?;
            return Ok(true);
        };
        if !block.is_empty() || block.affinity_node() != Some(affinity.node.as_str()) {
            return Ok(false);
        }
        self.set_affinity_state(affinity, AffinityState::PendingDeletion)?;
        // Read again: a writer that had not yet seen the new state may have allocated.
        let Some((block, versioned)) = self.get_typed::<IPAMBlock>(&name)? else {
            self.modify::<BlockAffinity, ()>(
                "deleting an affinity without block",
                &affinity_name,
                |_| Ok(Change::Delete(())),
            )?;
            return Ok(true);
        };
        let outcome = if block.is_empty() {
            self.store
                .delete(Kind::IPAMBlock, &name, &versioned.revision)
        } else {
            Err(StoreError::Conflict {
                kind: Kind::IPAMBlock,
                name: name.clone(),
                expected: versioned.revision,
            })
        };
        match outcome {
            Ok(()) | Err(StoreError::NotFound { .. }) => {
                self.modify::<BlockAffinity, ()>(
                    "deleting a released block's affinity",
                    &affinity_name,
                    |_| Ok(Change::Delete(())),
                )?;
                tracing::info!(node = affinity.node, block = %affinity.cidr, "released empty block");
                Ok(true)
            }
            Err(StoreError::Conflict { .. }) => {
                self.set_affinity_state(affinity, AffinityState::Confirmed)?;
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }

    pub(crate) fn set_affinity_state(
        &self,
        affinity: &BlockAffinity,
        state: AffinityState,
    ) -> Result<(), IpamError> {
        self.modify::<BlockAffinity, ()>(
            "changing an affinity's state",
            &affinity.name(),
            |current| {
                Ok(match current {
                    None => Change::Keep(()),
                    Some(current) if current.state == state => Change::Keep(()),
                    Some(current) => Change::Put(
                        BlockAffinity {
                            state,
                            timestamp: unix_now(),
                            ..current.clone()
                        },
                        (),
                    ),
                })
            },
        )
    }
}
