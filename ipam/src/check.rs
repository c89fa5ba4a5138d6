//! Looking at the whole store: utilization, consistency check, and garbage collection.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::block::{ATTRIBUTE_NODE, ATTRIBUTE_TIMESTAMP, IPAMBlock};
use crate::error::IpamError;
use crate::ipam::{Change, Ipam};
use crate::model::{AffinityState, BlockAffinity, HandleBlocks, IPAMHandle, block_name};
use crate::store::Store;

/// Addresses of one block, and who borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockUsage {
    pub cidr: IpNet,
    /// The owning node, if any.
    pub node: Option<String>,
    pub total: u64,
    pub in_use: u64,
    pub free: u64,
    /// Addresses held for another node than the block's owner.
    pub borrowed: Vec<BorrowedAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BorrowedAddress {
    pub address: IpAddr,
    pub node: Option<String>,
    pub handle_id: Option<String>,
}

/// Addresses of one pool (`total` counts the pool's whole range, claimed or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    pub name: String,
    pub cidr: IpNet,
    pub disabled: bool,
    pub total: u128,
    pub in_use: u128,
    pub free: u128,
    pub blocks: Vec<BlockUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Utilization {
    pub pools: Vec<PoolUsage>,
    /// Blocks inside no pool (their pool was deleted while they held addresses).
    pub blocks_outside_pools: Vec<BlockUsage>,
}

/// What is known about one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressInfo {
    pub address: IpAddr,
    pub pool: Option<String>,
    pub block: Option<IpNet>,
    pub block_node: Option<String>,
    pub allocated: bool,
    pub handle_id: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub sequence: Option<u64>,
}

/// An address as a report names it: with its sequence number, so that acting on the report
/// later cannot release the address if it has been reallocated since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HeldAddress {
    pub address: IpAddr,
    pub sequence: u64,
}

/// What [`Ipam::release_from_report`] did with each problem of a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportOutcome {
    pub released: Vec<IpAddr>,
    pub repaired_handles: Vec<String>,
    /// Problems left alone, each with the reason.
    pub skipped: Vec<String>,
}

/// One inconsistency [`Ipam::check`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Problem {
    /// Addresses held in a block under a handle that does not count them (or no handle).
    AllocationWithoutHandle {
        block: IpNet,
        handle_id: Option<String>,
        allocations: Vec<HeldAddress>,
        recorded: u32,
    },
    /// A handle counts more addresses in a block than the block holds for it.
    HandleWithoutAllocation {
        handle_id: String,
        block: String,
        recorded: u32,
        actual: u32,
    },
    /// A block owned by a node that has no confirmed affinity for it.
    BlockWithoutConfirmedAffinity {
        block: IpNet,
        node: String,
        affinity_state: Option<AffinityState>,
    },
    /// An affinity whose block does not exist (or is owned by someone else).
    AffinityWithoutBlock {
        block: IpNet,
        node: String,
        state: AffinityState,
    },
    /// An address held in a block that lies in no pool.
    AllocationOutsidePools {
        block: IpNet,
        address: IpAddr,
        handle_id: Option<String>,
        sequence: u64,
    },
    OverlappingBlocks {
        block: IpNet,
        other: IpNet,
    },
    /// One address held by more than one allocation (only possible with overlapping blocks).
    AddressHeldTwice {
        address: IpAddr,
        blocks: Vec<IpNet>,
    },
    /// A block whose own bookkeeping is inconsistent.
    BlockCorrupt {
        block: IpNet,
        problem: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub pools: usize,
    pub blocks: usize,
    pub affinities: usize,
    pub handles: usize,
    pub allocations: usize,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What [`Ipam::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Handles released (not live, older than the grace period), with what they held.
    pub released_handles: BTreeMap<String, Vec<IpAddr>>,
    /// Allocations without any handle ID, released by address.
    pub released_unhandled: Vec<IpAddr>,
    /// Live handles whose counts were corrected to what the blocks hold.
    pub repaired_handles: Vec<String>,
    pub confirmed_affinities: Vec<String>,
    pub deleted_affinities: Vec<String>,
    pub recreated_affinities: Vec<String>,
    pub deleted_blocks: Vec<IpNet>,
}

fn allocation_age(now: u64, timestamp: Option<&str>) -> u64 {
    // An allocation without a readable timestamp is as old as can be.
    timestamp
        .and_then(|t| t.parse::<u64>().ok())
        .map(|t| now.saturating_sub(t))
        .unwrap_or(u64::MAX)
}

fn usage(block: &IPAMBlock) -> BlockUsage {
    let owner = block.affinity_node();
    BlockUsage {
        cidr: block.cidr,
        node: owner.map(str::to_string),
        total: u64::from(block.size()),
        in_use: u64::from(block.in_use()),
        free: u64::from(block.free()),
        borrowed: block
            .allocations_iter()
            .filter(|view| {
                view.secondary(ATTRIBUTE_NODE)
                    .is_some_and(|node| Some(node) != owner)
            })
            .map(|view| BorrowedAddress {
                address: view.address,
                node: view.secondary(ATTRIBUTE_NODE).map(str::to_string),
                handle_id: view.handle_id().map(str::to_string),
            })
            .collect(),
    }
}

impl<S: Store> Ipam<S> {
    /// Sets a handle's per-block counts to what the blocks hold (deleting the handle if they
    /// hold nothing for it). Returns whether anything changed. Lists every block: a repair,
    /// not a hot path.
    pub fn repair_handle(&self, handle_id: &str) -> Result<bool, IpamError> {
        let blocks = self.blocks()?;
        self.repair_handle_from(handle_id, &blocks)
    }

    fn repair_handle_from(&self, handle_id: &str, blocks: &[IPAMBlock]) -> Result<bool, IpamError> {
        let mut truth = HandleBlocks::new();
        for block in blocks {
            let count = block
                .allocations_iter()
                .filter(|v| v.handle_id() == Some(handle_id))
                .count();
            if count > 0 {
                truth.insert(&block_name(&block.cidr), count as u32);
            }
        }
        self.modify::<IPAMHandle, bool>("repairing a handle", handle_id, |current| {
            Ok(match current {
                Some(current) if current.block == truth => Change::Keep(false),
                Some(_) if truth.is_empty() => Change::Delete(true),
                Some(current) => {
                    current.block = truth.clone();
                    Change::Updated(true)
                }
                None if truth.is_empty() => Change::Keep(false),
                None => Change::Put(
                    IPAMHandle {
                        handle_id: handle_id.into(),
                        block: truth.clone(),
                        deleted: false,
                        timestamp: crate::ipam::unix_now(),
                    },
                    true,
                ),
            })
        })
    }

    /// Acts on a report from [`Ipam::check`] (possibly an old one): releases addresses no
    /// handle accounts for, unless they were reallocated since the report (the sequence
    /// check), and recounts handles that disagree with their blocks. Everything else is left
    /// for GC or an operator, and listed with the reason.
    pub fn release_from_report(&self, report: &CheckReport) -> Result<ReportOutcome, IpamError> {
        let mut outcome = ReportOutcome::default();
        for problem in &report.problems {
            match problem {
                Problem::AllocationWithoutHandle { handle_id, allocations, recorded: 0, .. } => {
                    for held in allocations {
                        match self.release_address(held.address, handle_id.as_deref(), Some(held.sequence)) {
                            Ok(_) => outcome.released.push(held.address),
                            Err(
                                error @ (IpamError::StaleRelease { .. }
                                | IpamError::NotAllocated { .. }
                                | IpamError::HandleMismatch { .. }),
                            ) => outcome.skipped.push(error.to_string()),
                            Err(error) => return Err(error),
                        }
                    }
                }
                Problem::AllocationWithoutHandle { handle_id: Some(handle_id), .. }
                | Problem::HandleWithoutAllocation { handle_id, .. } => {
                    if !outcome.repaired_handles.contains(handle_id) && self.repair_handle(handle_id)? {
                        outcome.repaired_handles.push(handle_id.clone());
                    }
                }
                other => outcome.skipped.push(format!(
                    "{}: not an address to release; the node agent's GC finishes claims and releases",
                    serde_json::to_string(other).unwrap_or_else(|_| format!("{other:?}"))
                )),
            }
        }
        Ok(outcome)
    }

    /// Addresses per pool and per block.
    pub fn utilization(&self) -> Result<Utilization, IpamError> {
        let pools = self.pools()?;
        let blocks = self.blocks()?;
        let mut result = Utilization {
            pools: Vec::new(),
            blocks_outside_pools: Vec::new(),
        };
        let mut placed = vec![false; blocks.len()];
        for pool in pools {
            let host_bits = u32::from(pool.cidr.max_prefix_len() - pool.cidr.prefix_len());
            let total = 1u128.checked_shl(host_bits).unwrap_or(u128::MAX);
            let mut usage_blocks = Vec::new();
            for (index, block) in blocks.iter().enumerate() {
                if pool.cidr.contains(&block.cidr) {
                    placed[index] = true;
                    usage_blocks.push(usage(block));
                }
            }
            let in_use: u128 = usage_blocks.iter().map(|b| u128::from(b.in_use)).sum();
            result.pools.push(PoolUsage {
                name: pool.name,
                cidr: pool.cidr,
                disabled: pool.disabled,
                total,
                in_use,
                free: total - in_use.min(total),
                blocks: usage_blocks,
            });
        }
        for (index, block) in blocks.iter().enumerate() {
            if !placed[index] {
                result.blocks_outside_pools.push(usage(block));
            }
        }
        Ok(result)
    }

    /// Everything known about one address.
    pub fn address_info(&self, address: IpAddr) -> Result<AddressInfo, IpamError> {
        let pool = self
            .pools()?
            .into_iter()
            .find(|pool| pool.cidr.contains(&address));
        let block = self.block_holding(address)?;
        let view = block.as_ref().and_then(|block| {
            block
                .allocations_iter()
                .find(|view| view.address == address)
                .map(|view| {
                    (
                        view.handle_id().map(str::to_string),
                        view.attribute
                            .map(|a| a.secondary.to_map())
                            .unwrap_or_default(),
                        view.sequence,
                    )
                })
        });
        Ok(AddressInfo {
            address,
            pool: pool.map(|pool| pool.name),
            block: block.as_ref().map(|block| block.cidr),
            block_node: block
                .as_ref()
                .and_then(|block| block.affinity_node().map(str::to_string)),
            allocated: view.is_some(),
            handle_id: view.as_ref().and_then(|v| v.0.clone()),
            attributes: view.as_ref().map(|v| v.1.clone()).unwrap_or_default(),
            sequence: view.and_then(|v| v.2),
        })
    }

    /// Reads everything and reports every inconsistency. Read-only. On a store with writers
    /// running it may report what an assignment in flight has half done; run it again, or
    /// quiet the writers, before acting on a finding.
    pub fn check(&self) -> Result<CheckReport, IpamError> {
        let pools = self.pools()?;
        let mut blocks = self.blocks()?;
        let affinities = self.affinities(None)?;
        let handles = self.handles()?;
        let mut report = CheckReport {
            pools: pools.len(),
            blocks: blocks.len(),
            affinities: affinities.len(),
            handles: handles.len(),
            ..CheckReport::default()
        };
        let problems = &mut report.problems;

        let affinity_by_name: HashMap<String, &BlockAffinity> = affinities
            .iter()
            .map(|affinity| (affinity.name(), affinity))
            .collect();
        let block_by_name: HashMap<String, &IPAMBlock> = blocks
            .iter()
            .map(|block| (block_name(&block.cidr), block))
            .collect();

        // Blocks: their own bookkeeping, their owner's affinity, their pool.
        let mut holders: HashMap<IpAddr, Vec<IpNet>> = HashMap::new();
        let mut actual: HashMap<(String, String), (u32, Vec<HeldAddress>)> = HashMap::new();
        for block in &blocks {
            for problem in block.integrity_problems() {
                problems.push(Problem::BlockCorrupt {
                    block: block.cidr,
                    problem,
                });
            }
            if let Some(node) = block.affinity_node() {
                let state = affinity_by_name
                    .get(&BlockAffinity::name_for(node, &block.cidr))
                    .map(|a| a.state);
                if state != Some(AffinityState::Confirmed) {
                    problems.push(Problem::BlockWithoutConfirmedAffinity {
                        block: block.cidr,
                        node: node.to_string(),
                        affinity_state: state,
                    });
                }
            }
            let in_pool = pools.iter().any(|pool| pool.cidr.contains(&block.cidr));
            let name = block_name(&block.cidr);
            let mut unhandled = Vec::new();
            for view in block.allocations_iter() {
                report.allocations += 1;
                holders.entry(view.address).or_default().push(block.cidr);
                if !in_pool {
                    problems.push(Problem::AllocationOutsidePools {
                        block: block.cidr,
                        address: view.address,
                        handle_id: view.handle_id().map(str::to_string),
                        sequence: view.sequence.unwrap_or(0),
                    });
                }
                match view.handle_id() {
                    Some(handle_id) => {
                        let entry = actual
                            .entry((handle_id.to_string(), name.clone()))
                            .or_default();
                        entry.0 += 1;
                        entry.1.push(HeldAddress {
                            address: view.address,
                            sequence: view.sequence.unwrap_or(0),
                        });
                    }
                    None => unhandled.push(HeldAddress {
                        address: view.address,
                        sequence: view.sequence.unwrap_or(0),
                    }),
                }
            }
            if !unhandled.is_empty() {
                problems.push(Problem::AllocationWithoutHandle {
                    block: block.cidr,
                    handle_id: None,
                    allocations: unhandled,
                    recorded: 0,
                });
            }
        }

        // Handles against what the blocks hold.
        let mut recorded: HashMap<(String, String), u32> = HashMap::new();
        for handle in &handles {
            for (block, &count) in &handle.block {
                recorded.insert((handle.handle_id.to_string(), block.to_string()), count);
            }
        }
        let keys: BTreeSet<&(String, String)> = recorded.keys().chain(actual.keys()).collect();
        for key in keys {
            let recorded_count = recorded.get(key).copied().unwrap_or(0);
            let (actual_count, addresses) = actual.get(key).cloned().unwrap_or_default();
            if actual_count > recorded_count {
                let block = block_by_name.get(&key.1).map(|b| b.cidr);
                if let Some(block) = block {
                    problems.push(Problem::AllocationWithoutHandle {
                        block,
                        handle_id: Some(key.0.clone()),
                        allocations: addresses,
                        recorded: recorded_count,
                    });
                }
            } else if recorded_count > actual_count {
                problems.push(Problem::HandleWithoutAllocation {
                    handle_id: key.0.clone(),
                    block: key.1.clone(),
                    recorded: recorded_count,
                    actual: actual_count,
                });
            }
        }

        // Affinities whose block is missing or someone else's.
        for affinity in &affinities {
            let block = block_by_name.get(&block_name(&affinity.cidr));
            if block.is_none_or(|block| block.affinity_node() != Some(affinity.node.as_str())) {
                problems.push(Problem::AffinityWithoutBlock {
                    block: affinity.cidr,
                    node: affinity.node.clone(),
                    state: affinity.state,
                });
            }
        }

        // Overlaps, by a sweep over blocks sorted by first address.
        blocks.sort_by_key(|block| (block.cidr.network(), block.cidr.prefix_len()));
        let mut widest: Option<IpNet> = None;
        for block in &blocks {
            if let Some(previous) = widest
                && previous.contains(&block.cidr.network())
            {
                problems.push(Problem::OverlappingBlocks {
                    block: block.cidr,
                    other: previous,
                });
                if previous.contains(&block.cidr.broadcast()) {
                    continue;
                }
            }
            widest = Some(block.cidr);
        }
        let mut twice: Vec<(IpAddr, Vec<IpNet>)> = holders
            .into_iter()
            .filter(|(_, blocks)| blocks.len() > 1)
            .collect();
        twice.sort();
        for (address, blocks) in twice {
            problems.push(Problem::AddressHeldTwice { address, blocks });
        }
        Ok(report)
    }

    /// Garbage collection. Releases every handle not in `live_handles` whose allocations
    /// (and handle object) are older than `grace`, and finishes what crashed writers left:
    /// pending claims (confirmed if the block exists, deleted if not), releases stopped
    /// halfway, handle counts that disagree with the blocks, blocks whose affinity is gone.
    /// `live_handles` must name every handle in use, tunnel handles included. The grace
    /// period keeps GC from racing a pod that is being set up right now.
    pub fn gc(
        &self,
        live_handles: &HashSet<String>,
        grace: Duration,
    ) -> Result<GcReport, IpamError> {
        let now = crate::ipam::unix_now();
        let grace = grace.as_secs();
        let old_enough = |age: u64| age >= grace;
        let mut report = GcReport::default();

        let blocks = self.blocks()?;
        let handles: HashMap<String, IPAMHandle> = self
            .handles()?
            .into_iter()
            .map(|h| (h.handle_id.to_string(), h))
            .collect();

        // 1. Leaked handles: seen in blocks or as objects, not live, old enough.
        let mut leaked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut young: HashSet<String> = HashSet::new();
        let mut unhandled = Vec::new();
        for block in &blocks {
            let name = block_name(&block.cidr);
            for view in block.allocations_iter() {
                let age = allocation_age(now, view.secondary(ATTRIBUTE_TIMESTAMP));
                match view.handle_id() {
                    None if old_enough(age) => unhandled.push(view.address),
                    None => {}
                    Some(handle_id) if live_handles.contains(handle_id) => {}
                    Some(handle_id) if old_enough(age) => {
                        leaked
                            .entry(handle_id.to_string())
                            .or_default()
                            .insert(name.clone());
                    }
                    Some(handle_id) => {
                        young.insert(handle_id.to_string());
                    }
                }
            }
        }
        for handle in handles.values() {
            if !live_handles.contains(handle.handle_id.as_str())
                && old_enough(now.saturating_sub(handle.timestamp))
            {
                leaked
                    .entry(handle.handle_id.to_string())
                    .or_default()
                    .extend(handle.block.keys().map(str::to_string));
            }
        }
        for (handle_id, blocks) in leaked {
            if young.contains(&handle_id) {
                continue;
            }
            let blocks: Vec<String> = blocks.into_iter().collect();
            let released = self.release_handle_in(&handle_id, &blocks)?;
            report.released_handles.insert(handle_id, released);
        }
        for address in unhandled {
            match self.release_address(address, None, None) {
                Ok(_) | Err(IpamError::NotAllocated { .. }) => {
                    report.released_unhandled.push(address)
                }
                Err(error) => return Err(error),
            }
        }

        // 2. Live handles whose counts disagree with the blocks: count again.
        for handle_id in live_handles {
            let Some(handle) = self.handle(handle_id)? else {
                continue;
            };
            if old_enough(now.saturating_sub(handle.timestamp))
                && self.repair_handle_from(handle_id, &blocks)?
            {
                report.repaired_handles.push(handle_id.clone());
            }
        }

        // 3. Affinities left mid-claim or mid-release.
        let blocks = self.blocks()?;
        let owner: HashMap<IpNet, Option<&str>> =
            blocks.iter().map(|b| (b.cidr, b.affinity_node())).collect();
        for affinity in self.affinities(None)? {
            let name = affinity.name();
            let block_owner = owner.get(&affinity.cidr).copied().flatten();
            let ours = block_owner == Some(affinity.node.as_str());
            let age_ok = old_enough(now.saturating_sub(affinity.timestamp));
            match affinity.state {
                AffinityState::Pending if ours => {
                    self.confirm_affinity(&affinity.node, &affinity.cidr)?;
                    report.confirmed_affinities.push(name);
                }
                AffinityState::Confirmed if ours => {}
                AffinityState::PendingDeletion if ours && age_ok => {
                    if self.release_block_if_empty(&affinity)? {
                        report.deleted_blocks.push(affinity.cidr);
                        report.deleted_affinities.push(name);
                    } else {
                        self.set_affinity_state(&affinity, AffinityState::Confirmed)?;
                        report.confirmed_affinities.push(name);
                    }
                }
                _ if !ours && age_ok => {
                    self.modify::<BlockAffinity, ()>(
                        "deleting an affinity without block",
                        &name,
                        |current| {
                            Ok(match current {
                                Some(current) if current.state == affinity.state => {
                                    Change::Delete(())
                                }
                                _ => Change::Keep(()),
                            })
                        },
                    )?;
                    report.deleted_affinities.push(name);
                }
                _ => {}
            }
        }

        // 4. Blocks owned by a node that has no affinity for them at all.
        let affinity_names: HashSet<String> = self
            .affinities(None)?
            .iter()
            .map(BlockAffinity::name)
            .collect();
        for block in &blocks {
            let Some(node) = block.affinity_node() else {
                continue;
            };
            let name = BlockAffinity::name_for(node, &block.cidr);
            if !affinity_names.contains(&name) {
                self.confirm_affinity(node, &block.cidr)?;
                report.recreated_affinities.push(name);
            }
        }
        Ok(report)
    }
}
