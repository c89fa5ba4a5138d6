//! Property test: random sequences of assign / assign-specific / release / claim / borrow
//! against a simple model (which address is held by which handle). After every step: no
//! address held twice, the counts add up, and `check` is clean.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use proptest::prelude::*;
use tortie_ipam::{
    AssignIpArgs, AutoAssignArgs, IPAMConfig, IPPool, Ipam, IpamError, MemoryStore, Store,
};

/// 64 addresses in four /28 blocks: small enough that pools fill, blocks run out and
/// nodes borrow within a few steps.
const POOL: &str = "192.0.2.0/26";
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

#[derive(Debug, Clone)]
enum Op {
    Assign { node: usize, count: u32 },
    AssignSpecific { node: usize, offset: u8 },
    ReleaseHandle { pick: usize },
    ReleaseAddress { pick: usize, stale: bool },
    ReleaseEmptyBlocks { node: usize },
    Configure { max_blocks: u32, strict: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..NODES.len(), 1u32..6).prop_map(|(node, count)| Op::Assign { node, count }),
        2 => (0..NODES.len(), 0u8..64).prop_map(|(node, offset)| Op::AssignSpecific { node, offset }),
        3 => any::<usize>().prop_map(|pick| Op::ReleaseHandle { pick }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, stale)| Op::ReleaseAddress { pick, stale }),
        1 => (0..NODES.len()).prop_map(|node| Op::ReleaseEmptyBlocks { node }),
        1 => (0u32..3, any::<bool>()).prop_map(|(max_blocks, strict)| Op::Configure { max_blocks, strict }),
    ]
}

#[derive(Default)]
struct Model {
    /// address → (handle, sequence number)
    held: BTreeMap<IpAddr, (String, u64)>,
    next_handle: usize,
    config: IPAMConfig,
    /// Blocks claimed under strictAffinity keep it (Calico's block field), so once it has
    /// been on, borrowing may be refused even after it is turned off.
    strict_seen: bool,
}

impl Model {
    fn handles(&self) -> Vec<String> {
        let mut handles: Vec<String> = self.held.values().map(|(h, _)| h.clone()).collect();
        handles.sort();
        handles.dedup();
        handles
    }
}

fn verify(ipam: &Ipam<MemoryStore>, model: &Model) -> Result<(), TestCaseError> {
    let report = ipam
        .check()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(report.is_clean(), "check: {:#?}", report.problems);
    prop_assert_eq!(report.allocations, model.held.len());
    let usage = ipam
        .utilization()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let in_use: u128 = usage.pools.iter().map(|p| p.in_use).sum();
    prop_assert_eq!(in_use, model.held.len() as u128);
    for pool in &usage.pools {
        prop_assert_eq!(pool.in_use + pool.free, pool.total);
        for block in &pool.blocks {
            prop_assert_eq!(block.in_use + block.free, block.total);
        }
    }
    for (address, (handle, sequence)) in &model.held {
        let info = ipam
            .address_info(*address)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(info.allocated, "{} should be held by {}", address, handle);
        prop_assert_eq!(info.handle_id.as_deref(), Some(handle.as_str()));
        prop_assert_eq!(info.sequence, Some(*sequence));
    }
    let handle_objects = ipam
        .handles()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut names: Vec<String> = handle_objects
        .iter()
        .map(|h| h.handle_id.to_string())
        .collect();
    names.sort();
    prop_assert_eq!(names, model.handles());
    Ok(())
}

fn step(ipam: &Ipam<MemoryStore>, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let pool: IpNet = POOL.parse().unwrap();
    match op {
        Op::Assign { node, count } => {
            let handle = format!("h{}", model.next_handle);
            model.next_handle += 1;
            let args = AutoAssignArgs {
                num4: *count,
                ..AutoAssignArgs::new(handle.as_str(), NODES[*node])
            };
            match ipam.auto_assign(&args) {
                Ok(assigned) => {
                    prop_assert_eq!(assigned.ipv4.len() as u32, *count);
                    for allocation in assigned.ipv4 {
                        prop_assert!(pool.contains(&allocation.address));
                        let previous = model
                            .held
                            .insert(allocation.address, (handle.clone(), allocation.sequence));
                        prop_assert!(
                            previous.is_none(),
                            "{} handed out twice",
                            allocation.address
                        );
                    }
                }
                Err(IpamError::NoAddressAvailable { .. }) => {
                    let free = 64 - model.held.len() as u32;
                    let unconstrained = model.config.max_blocks_per_host == 0 && !model.strict_seen;
                    prop_assert!(
                        !(unconstrained && free >= *count),
                        "refused {} addresses with {} free and no limits",
                        count,
                        free
                    );
                }
                Err(other) => return Err(TestCaseError::fail(format!("assign: {other}"))),
            }
        }
        Op::AssignSpecific { node, offset } => {
            let address = pool
                .hosts()
                .nth(usize::from(*offset))
                .unwrap_or(pool.network());
            let address = if *offset == 0 {
                pool.network()
            } else {
                address
            };
            let handle = format!("h{}", model.next_handle);
            model.next_handle += 1;
            let args = AssignIpArgs {
                address,
                handle_id: handle.clone(),
                node: NODES[*node].to_string(),
                attributes: BTreeMap::new(),
            };
            match ipam.assign_ip(&args) {
                Ok(allocation) => {
                    prop_assert!(
                        !model.held.contains_key(&address),
                        "{} assigned while held",
                        address
                    );
                    model.held.insert(address, (handle, allocation.sequence));
                }
                Err(IpamError::AddressInUse { holder, .. }) => {
                    let expected = model.held.get(&address).map(|(h, _)| h.clone());
                    prop_assert!(
                        expected.is_some(),
                        "{} refused as in use, but it is free",
                        address
                    );
                    prop_assert_eq!(holder, expected);
                }
                Err(IpamError::BorrowRefused { .. }) => prop_assert!(
                    model.strict_seen,
                    "borrowing refused, strictAffinity never on"
                ),
                Err(other) => {
                    return Err(TestCaseError::fail(format!("assign {address}: {other}")));
                }
            }
        }
        Op::ReleaseHandle { pick } => {
            let handles = model.handles();
            let handle = if handles.is_empty() {
                "never-assigned".to_string()
            } else {
                handles[pick % handles.len()].clone()
            };
            let released = ipam
                .release_handle(&handle)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let expected: Vec<IpAddr> = model
                .held
                .iter()
                .filter(|(_, (h, _))| *h == handle)
                .map(|(a, _)| *a)
                .collect();
            let mut released_sorted = released.clone();
            released_sorted.sort();
            prop_assert_eq!(released_sorted, expected);
            model.held.retain(|_, (h, _)| *h != handle);
        }
        Op::ReleaseAddress { pick, stale } => {
            if model.held.is_empty() {
                let result = ipam.release_address(pool.network(), None, None);
                prop_assert!(
                    matches!(result, Err(IpamError::NotAllocated { .. })),
                    "{:?}",
                    result
                );
                return Ok(());
            }
            let (address, (handle, sequence)) = model
                .held
                .iter()
                .nth(pick % model.held.len())
                .map(|(a, v)| (*a, v.clone()))
                .unwrap();
            if *stale {
                let result = ipam.release_address(address, None, Some(sequence + 1));
                prop_assert!(
                    matches!(result, Err(IpamError::StaleRelease { .. })),
                    "{:?}",
                    result
                );
            } else {
                let released = ipam
                    .release_address(address, Some(&handle), Some(sequence))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(released.handle_id.as_deref(), Some(handle.as_str()));
                model.held.remove(&address);
            }
        }
        Op::ReleaseEmptyBlocks { node } => {
            ipam.release_empty_blocks(NODES[*node])
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            for block in ipam
                .blocks_of(NODES[*node])
                .map_err(|e| TestCaseError::fail(e.to_string()))?
            {
                prop_assert!(block.in_use() > 0, "empty block {} kept", block.cidr);
            }
        }
        Op::Configure { max_blocks, strict } => {
            model.strict_seen |= *strict;
            model.config = IPAMConfig {
                max_blocks_per_host: *max_blocks,
                strict_affinity: *strict,
                ..IPAMConfig::default()
            };
            ipam.set_config(model.config.clone())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn ipam_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let ipam = Ipam::new(MemoryStore::new());
        let mut pool = IPPool::new("pool", POOL.parse().unwrap());
        pool.block_size = 28;
        ipam.create_pool(pool).unwrap();
        let mut model = Model { config: IPAMConfig { max_blocks_per_host: 0, ..IPAMConfig::default() }, ..Model::default() };
        ipam.set_config(model.config.clone()).unwrap();
        for op in &ops {
            step(&ipam, &mut model, op)?;
            verify(&ipam, &model)?;
        }
        // Everything released: the store returns to empty blocks and no handles.
        for handle in model.handles() {
            ipam.release_handle(&handle).unwrap();
        }
        for node in NODES {
            ipam.release_empty_blocks(node).unwrap();
        }
        prop_assert!(ipam.blocks().unwrap().is_empty());
        prop_assert!(ipam.store().list(tortie_ipam::Kind::BlockAffinity, None).unwrap().is_empty());
        prop_assert!(ipam.handles().unwrap().is_empty());
    }
}
