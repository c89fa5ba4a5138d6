//! A node's first block: the node agent claims one at start, before any pod asks, so the
//! block's route is announced (and reachable) from the moment the node joins.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::error::IpamError;
use crate::ipam::{Ipam, Reserved};
use crate::model::{AffinityState, AllowedUse, Family};
use crate::selector::Selector;
use crate::store::Store;

impl<S: Store> Ipam<S> {
    /// The node's block of `family`: one it already owns (affinity confirmed, in an
    /// enabled pool), else a newly claimed one from the first eligible pool with room
    /// (enabled, of the family, for workloads, its nodeSelector matching `node_labels`).
    /// `None` when no pool of the family is eligible or every one is full. Idempotent.
    pub fn ensure_block(
        &self,
        node: &str,
        node_labels: &BTreeMap<String, String>,
        family: Family,
    ) -> Result<Option<IpNet>, IpamError> {
        let pools: Vec<_> = self
            .pools()?
            .into_iter()
            .filter(|pool| {
                pool.family() == family
                    && !pool.disabled
                    && pool.allows(AllowedUse::Workload)
                    && Selector::parse(&pool.node_selector)
                        .is_ok_and(|selector| selector.matches(node_labels))
            })
            .collect();
        let owned = self.affinities(Some(node))?.into_iter().find(|affinity| {
            affinity.state == AffinityState::Confirmed
                && pools.iter().any(|pool| pool.cidr.contains(&affinity.cidr))
        });
        if let Some(affinity) = owned {
            return Ok(Some(affinity.cidr));
        }
        let config = self.config()?;
        if !config.auto_allocate_blocks {
            return Ok(None);
        }
        let reserved = Reserved(
            self.reservations()?
                .into_iter()
                .flat_map(|reservation| reservation.reserved_cidrs)
                .collect(),
        );
        for pool in &pools {
            if let Some(cidr) = self.claim_free_block(pool, node, &config, &reserved)? {
                return Ok(Some(cidr));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::model::{Family, IPPool};
    use crate::{Ipam, MemoryStore};

    #[test]
    fn a_node_claims_one_block_and_keeps_it() {
        let ipam = Ipam::new(MemoryStore::new());
        ipam.create_pool(IPPool::new("p", "198.18.0.0/24".parse().unwrap()))
            .unwrap();
        let labels = BTreeMap::new();
        let first = ipam
            .ensure_block("n1", &labels, Family::V4)
            .unwrap()
            .unwrap();
        assert_eq!(
            ipam.ensure_block("n1", &labels, Family::V4).unwrap(),
            Some(first)
        );
        let other = ipam
            .ensure_block("n2", &labels, Family::V4)
            .unwrap()
            .unwrap();
        assert_ne!(first, other);
        assert_eq!(ipam.ensure_block("n1", &labels, Family::V6).unwrap(), None);
        assert!(ipam.check().unwrap().is_clean());
    }

    #[test]
    fn disabled_and_unselected_pools_give_no_block() {
        let ipam = Ipam::new(MemoryStore::new());
        let mut pool = IPPool::new("p", "198.18.0.0/24".parse().unwrap());
        pool.node_selector = "zone == 'a'".into();
        ipam.create_pool(pool).unwrap();
        let labels = BTreeMap::new();
        assert_eq!(ipam.ensure_block("n1", &labels, Family::V4).unwrap(), None);
        let labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        assert!(
            ipam.ensure_block("n1", &labels, Family::V4)
                .unwrap()
                .is_some()
        );
    }
}
