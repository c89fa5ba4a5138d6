//! Handing addresses out: automatic assignment (own blocks, then a new block, then
//! borrowing), a named address, and tunnel addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Serialize;
use smallvec::SmallVec;

use crate::block::{ATTRIBUTE_TYPE, AllocationAttribute, IPAMBlock};
use crate::error::{IpamError, PoolAttempt, PoolRefusal};
use crate::ipam::{Change, Ipam, Reserved, Typed, node_hash, unix_now};
use crate::model::{
    AffinityState, AllowedUse, BlockAffinity, BlockName, EncapsulationMode, Family, HandleBlocks,
    IPAMConfig, IPAMHandle, IPPool, IPReservation, Kind, Resource, block_name,
};
use crate::name::Name;
use crate::secondary::Secondary;
use crate::selector::Selector;
use crate::store::{Read, Store, StoreError};

/// A node's tunnel device, which gets one address from a pool using that encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TunnelType {
    Ipip,
    Vxlan,
}

impl TunnelType {
    /// Calico's handle for a node's tunnel address.
    pub fn handle_id(self, node: &str) -> String {
        match self {
            TunnelType::Ipip => format!("ipip-tunnel-addr-{node}"),
            TunnelType::Vxlan => format!("vxlan-tunnel-addr-{node}"),
        }
    }

    /// The allocation's `type` attribute.
    pub fn attribute_type(self) -> &'static str {
        match self {
            TunnelType::Ipip => "ipipTunnelAddress",
            TunnelType::Vxlan => "vxlanTunnelAddress",
        }
    }

    fn uses(self, pool: &IPPool) -> bool {
        let mode = match self {
            TunnelType::Ipip => pool.ipip_mode,
            TunnelType::Vxlan => pool.vxlan_mode,
        };
        mode != EncapsulationMode::Never
    }

    fn field(self) -> &'static str {
        match self {
            TunnelType::Ipip => "ipipMode",
            TunnelType::Vxlan => "vxlanMode",
        }
    }
}

/// What to assign automatically.
#[derive(Debug, Clone)]
pub struct AutoAssignArgs {
    pub handle_id: String,
    pub num4: u32,
    pub num6: u32,
    pub node: String,
    /// The node's labels, matched against each pool's `nodeSelector`.
    pub node_labels: BTreeMap<String, String>,
    /// Secondary attributes to record (`pod`, `namespace`, `type`, ...); `node` and
    /// `timestamp` are added.
    pub attributes: BTreeMap<String, String>,
    /// Pools to use, by name; empty means every pool.
    pub pools: Vec<String>,
    pub intended_use: AllowedUse,
    /// Only pools that use this encapsulation (for tunnel addresses).
    pub tunnel: Option<TunnelType>,
}

impl AutoAssignArgs {
    /// One IPv4 address for a workload.
    pub fn new(handle_id: impl Into<String>, node: impl Into<String>) -> AutoAssignArgs {
        AutoAssignArgs {
            handle_id: handle_id.into(),
            num4: 1,
            num6: 0,
            node: node.into(),
            node_labels: BTreeMap::new(),
            attributes: BTreeMap::new(),
            pools: Vec::new(),
            intended_use: AllowedUse::Workload,
            tunnel: None,
        }
    }
}

/// One assigned address. `sequence` goes with a later release by address, so that a stale
/// release cannot free the address after it has been reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allocation {
    pub address: IpAddr,
    pub block: IpNet,
    pub sequence: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Assigned {
    pub ipv4: Vec<Allocation>,
    pub ipv6: Vec<Allocation>,
}

/// A named address to assign.
#[derive(Debug, Clone)]
pub struct AssignIpArgs {
    pub address: IpAddr,
    pub handle_id: String,
    pub node: String,
    pub attributes: BTreeMap<String, String>,
}

/// Which blocks an assignment may take from.
#[derive(Clone, Copy)]
enum Owner<'a> {
    /// Only blocks whose affinity is this node.
    Node(&'a str),
    /// Any block not marked strict (borrowing).
    Borrow,
}

/// The pools an assignment may use: a handful, held inline.
type Pools<'c> = SmallVec<[&'c IPPool; 4]>;

/// One of the node's blocks, as step 1 of an assignment sees it: its affinity's state and,
/// if the block exists, how many addresses it has free.
#[derive(Clone, Copy)]
struct OwnBlock {
    cidr: IpNet,
    state: AffinityState,
    free: Option<u32>,
}

/// The node's blocks as one read of its affinities and its blocks shows them, in CIDR
/// order.
#[derive(Default)]
struct OwnBlocks {
    blocks: SmallVec<[OwnBlock; 4]>,
    /// What each block the node owns has free, until [`OwnBlocks::finish`] notes it.
    free: SmallVec<[(IpNet, u32); 4]>,
}

impl OwnBlocks {
    /// Notes one of the node's affinities or blocks.
    fn note(&mut self, resource: &Resource, node: &str, reserved: &Reserved) {
        match resource {
            Resource::BlockAffinity(affinity) => self.blocks.push(OwnBlock {
                cidr: affinity.cidr,
                state: affinity.state,
                free: None,
            }),
            Resource::IPAMBlock(block) if block.affinity_node() == Some(node) => {
                self.free.push((block.cidr, reserved.assignable(block)));
            }
            _ => {}
        }
    }

    /// Matches each block to its affinity. A block without one (a claim being given up)
    /// and an affinity without a block (a claim under way) are both left unused.
    /// (In place: the two lists are a few hundred bytes, and moving them cost more than
    /// the matching.)
    fn finish(&mut self) -> &[OwnBlock] {
        if self.blocks.len() > 1 {
            self.blocks.sort_unstable_by_key(|block| block.cidr);
        }
        for &(cidr, free) in &self.free {
            if let Ok(found) = self.blocks.binary_search_by_key(&cidr, |own| own.cidr) {
                self.blocks[found].free = Some(free);
            }
        }
        &self.blocks
    }
}

/// Everything one automatic assignment reads once and uses throughout.
struct Context<'a> {
    args: &'a AutoAssignArgs,
    config: IPAMConfig,
    /// The pools as read (shared with the store, not copied).
    pools: SmallVec<[Arc<Resource>; 2]>,
    reserved: Reserved,
    attribute: Arc<AllocationAttribute>,
    /// The handle's name, allocated once for the attribute and a new handle object.
    handle: Name,
    /// Unix seconds at the start of the call: the allocation's and a new handle's timestamp.
    now: u64,
}

/// How [`Ipam::adjust_handle_at`] makes a handle that does not exist yet: with the name the
/// allocations' attribute shares, and the time the caller read.
#[derive(Clone, Copy)]
struct NewHandle<'a> {
    name: &'a Name,
    now: u64,
}

impl Context<'_> {
    fn pools(&self) -> impl Iterator<Item = &IPPool> {
        self.pools
            .iter()
            .filter_map(|pool| IPPool::from_resource(pool))
    }
}

impl<S: Store> Ipam<S> {
    /// Assigns `num4` IPv4 and `num6` IPv6 addresses to a handle on a node: from the node's
    /// own blocks first, then from a newly claimed block, then (unless `strictAffinity`) from
    /// other nodes' blocks. All or nothing: on failure, whatever this call took is released.
    pub fn auto_assign(&self, args: &AutoAssignArgs) -> Result<Assigned, IpamError> {
        validate_handle(&args.handle_id)?;
        validate_node(&args.node)?;
        let mut secondary = Secondary::from_map(&args.attributes);
        secondary.set_node(&args.node);
        let now = unix_now();
        secondary.set_timestamp(now);
        if let Some(tunnel) = args.tunnel {
            secondary.insert(
                ATTRIBUTE_TYPE.to_string(),
                tunnel.attribute_type().to_string(),
            );
        }
        let handle = Name::new(&args.handle_id);
        // One call for everything the assignment reads (the memory store makes it under
        // one lock): the settings, then the node's affinities and blocks, for the first
        // family that wants addresses.
        let node = args.node.as_str();
        let reads = [
            Read::all(Kind::IPAMConfig),
            Read::all(Kind::IPPool),
            Read::all(Kind::IPReservation),
            Read::of_node(Kind::BlockAffinity, node),
            Read::of_node(Kind::IPAMBlock, node),
        ];
        let mut config = None;
        let mut pools = SmallVec::new();
        let mut reserved = Reserved(Vec::new());
        let mut own = OwnBlocks::default();
        self.store
            .visit_each(&reads, &mut |read, resource| match read {
                0 => config = IPAMConfig::from_resource(resource).cloned(),
                1 => pools.push(Arc::clone(resource)),
                2 => {
                    if let Some(reservation) = IPReservation::from_resource(resource) {
                        reserved.0.extend_from_slice(&reservation.reserved_cidrs);
                    }
                }
                _ => own.note(resource, node, &reserved),
            })?;
        let context = Context {
            args,
            config: config.unwrap_or_default(),
            pools,
            reserved,
            attribute: Arc::new(AllocationAttribute {
                handle_id: Some(handle.clone()),
                secondary,
            }),
            handle,
            now,
        };
        // The second family reads the node again if the first may have claimed a block.
        let own = own.finish();
        let (own4, own6) = if args.num4 > 0 {
            (Some(own), None)
        } else {
            (None, Some(own))
        };
        let ipv4 = self.assign_family(&context, Family::V4, args.num4, own4)?;
        let ipv6 = match self.assign_family(&context, Family::V6, args.num6, own6) {
            Ok(ipv6) => ipv6,
            Err(error) => {
                self.roll_back(&args.handle_id, &ipv4);
                return Err(error);
            }
        };
        Ok(Assigned { ipv4, ipv6 })
    }

    fn assign_family(
        &self,
        context: &Context<'_>,
        family: Family,
        wanted: u32,
        own: Option<&[OwnBlock]>,
    ) -> Result<Vec<Allocation>, IpamError> {
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let args = context.args;
        let node = args.node.as_str();
        let (eligible, mut refused) = classify_pools(context, family)?;
        let mut got: Vec<Allocation> = Vec::with_capacity(wanted.min(64) as usize);
        let in_eligible = |cidr: &IpNet| eligible.iter().any(|pool| pool.cidr.contains(cidr));

        // 1. Blocks the node owns: two indexed, borrowed reads (its affinities, its blocks),
        //    however many blocks there are in all, made with the call's first reads unless
        //    an earlier family may have changed them. What each block has free is noted
        //    and let go before writing, so that the memory store changes the block in place.
        let mut reread = OwnBlocks::default();
        let own = match own {
            Some(own) => own,
            None => {
                let reads = [
                    Read::of_node(Kind::BlockAffinity, node),
                    Read::of_node(Kind::IPAMBlock, node),
                ];
                self.store.visit_each(&reads, &mut |_, resource| {
                    reread.note(resource, node, &context.reserved)
                })?;
                reread.finish()
            }
        };
        let mut owned = own.len() as u32;
        for &OwnBlock { cidr, state, free } in own {
            if got.len() as u32 >= wanted {
                break;
            }
            if Family::of_net(&cidr) != family || !in_eligible(&cidr) {
                continue;
            }
            let Some(free) = free else {
                continue;
            };
            match state {
                AffinityState::Confirmed => {}
                // A claim that stopped after creating the block (a crash): the block is
                // ours, so finish the claim. A claim still without its block is left to GC.
                AffinityState::Pending => self.confirm_affinity(node, &cidr)?,
                AffinityState::PendingDeletion => continue,
            }
            let planned = free.min(wanted - got.len() as u32);
            self.assign_from_block(context, &cidr, planned, Owner::Node(node), &mut got)?;
        }

        // 2. Claim new blocks, starting where the node's name hashes to in each pool.
        let max = context.config.max_blocks_per_host;
        let mut block_limit = false;
        let mut exhausted: BTreeSet<String> = BTreeSet::new();
        while (got.len() as u32) < wanted && context.config.auto_allocate_blocks {
            if max > 0 && owned >= max {
                block_limit = true;
                break;
            }
            let mut claimed = None;
            for pool in &eligible {
                if exhausted.contains(&pool.name) {
                    continue;
                }
                match self.claim_free_block(pool, node, &context.config, &context.reserved)? {
                    Some(cidr) => {
                        claimed = Some(cidr);
                        break;
                    }
                    None => {
                        exhausted.insert(pool.name.clone());
                    }
                }
            }
            let Some(cidr) = claimed else { break };
            owned += 1;
            let planned = (wanted - got.len() as u32).min(crate::block::block_size_of(&cidr));
            self.assign_from_block(context, &cidr, planned, Owner::Node(node), &mut got)?;
        }

        // 3. Borrow from other nodes' blocks. This lists blocks, but only when the node can
        //    neither use its own nor claim one.
        if (got.len() as u32) < wanted && !context.config.strict_affinity && !eligible.is_empty() {
            let candidates: Vec<(IpNet, u32)> = self
                .store
                .list(Kind::IPAMBlock, None)?
                .iter()
                .filter_map(|versioned| IPAMBlock::from_resource(&versioned.value))
                .filter(|block| {
                    block.family() == family && in_eligible(&block.cidr) && !block.strict_affinity
                })
                .map(|block| (block.cidr, context.reserved.assignable(block)))
                .filter(|&(_, free)| free > 0)
                .collect();
            for (cidr, free) in candidates {
                if got.len() as u32 >= wanted {
                    break;
                }
                let planned = free.min(wanted - got.len() as u32);
                self.assign_from_block(context, &cidr, planned, Owner::Borrow, &mut got)?;
            }
        }

        if (got.len() as u32) < wanted {
            self.roll_back(&args.handle_id, &got);
            for pool in &eligible {
                let refusal = if block_limit {
                    PoolRefusal::BlockLimit { owned, max }
                } else if !context.config.auto_allocate_blocks {
                    PoolRefusal::AutoAllocateDisabled
                } else if context.config.strict_affinity {
                    PoolRefusal::FullStrictAffinity
                } else {
                    PoolRefusal::Full
                };
                refused.push(PoolAttempt {
                    pool: pool.name.clone(),
                    cidr: pool.cidr,
                    refusal,
                });
            }
            refused.sort_by(|a, b| a.pool.cmp(&b.pool));
            return Err(IpamError::NoAddressAvailable {
                family,
                node: node.to_string(),
                wanted,
                found: got.len() as u32,
                pools: refused,
            });
        }
        Ok(got)
    }

    /// Takes up to `planned` addresses from one block (as many as the caller saw free) and
    /// appends them to `got`. The handle is counted first and the block written second, so
    /// a crash in between leaves a handle that over-counts (which release by handle and GC
    /// clean up), never an address nobody can find. If the block turns out to have less,
    /// the handle is corrected.
    fn assign_from_block(
        &self,
        context: &Context<'_>,
        cidr: &IpNet,
        planned: u32,
        owner: Owner<'_>,
        got: &mut Vec<Allocation>,
    ) -> Result<(), IpamError> {
        if planned == 0 {
            return Ok(());
        }
        let reserved = |address: IpAddr| context.reserved.contains(address);
        let usable = |block: &IPAMBlock| match owner {
            Owner::Node(node) => block.affinity_node() == Some(node),
            Owner::Borrow => !block.strict_affinity,
        };
        let handle_id = context.args.handle_id.as_str();
        let name = BlockName::new(cidr);
        let name = name.as_str();
        self.adjust_handle_at(
            handle_id,
            name,
            i64::from(planned),
            Some(NewHandle {
                name: &context.handle,
                now: context.now,
            }),
        )?;
        let before = got.len();
        let taken = self.modify::<IPAMBlock, u32>("assigning from a block", name, |current| {
            // A retried step starts again from what the store shows now.
            got.truncate(before);
            let Some(current) = current else {
                return Ok(Change::Keep(0));
            };
            if !usable(current) {
                return Ok(Change::Keep(0));
            }
            // In place: `assign_each` changes nothing when it takes nothing.
            let taken = current.assign_each(
                planned,
                &context.attribute,
                &reserved,
                |address, sequence| {
                    got.push(Allocation {
                        address,
                        block: *cidr,
                        sequence,
                    })
                },
            );
            if taken == 0 {
                Ok(Change::Keep(0))
            } else {
                Ok(Change::Updated(taken))
            }
        });
        let taken = match taken {
            Ok(taken) => taken,
            Err(error) => {
                got.truncate(before);
                // Best effort: the handle over-counts until GC if this fails too.
                let _ = self.adjust_handle(handle_id, name, -i64::from(planned));
                return Err(error);
            }
        };
        let shortfall = planned - taken;
        if shortfall > 0 {
            self.adjust_handle(handle_id, name, -i64::from(shortfall))?;
        }
        Ok(())
    }

    /// Adds `delta` to a handle's count for a block; creates the handle on first use and
    /// deletes it when it counts nothing.
    pub(crate) fn adjust_handle(
        &self,
        handle_id: &str,
        block: &str,
        delta: i64,
    ) -> Result<(), IpamError> {
        self.adjust_handle_at(handle_id, block, delta, None)
    }

    /// [`Ipam::adjust_handle`], making a handle that does not exist yet as `new` says.
    fn adjust_handle_at(
        &self,
        handle_id: &str,
        block: &str,
        delta: i64,
        new: Option<NewHandle<'_>>,
    ) -> Result<(), IpamError> {
        self.modify::<IPAMHandle, ()>("counting a handle's addresses", handle_id, |current| {
            let count = |handle: &IPAMHandle| {
                let count = handle.block.get(block).copied().unwrap_or(0);
                (i64::from(count) + delta).clamp(0, i64::from(u32::MAX)) as u32
            };
            let set = |handle: &mut IPAMHandle, new: u32| {
                if new == 0 {
                    handle.block.remove(block);
                } else if let Some(slot) = handle.block.get_mut(block) {
                    *slot = new;
                } else {
                    handle.block.insert(block, new);
                }
            };
            match current {
                None if delta <= 0 => Ok(Change::Keep(())),
                None => {
                    let mut handle = IPAMHandle {
                        handle_id: match new {
                            Some(new) => new.name.clone(),
                            None => Name::new(handle_id),
                        },
                        block: HandleBlocks::new(),
                        deleted: false,
                        timestamp: new.map_or_else(unix_now, |new| new.now),
                    };
                    // A new handle counts nothing yet: one entry, no search.
                    handle
                        .block
                        .insert(block, delta.clamp(0, i64::from(u32::MAX)) as u32);
                    Ok(Change::Put(handle, ()))
                }
                Some(handle) => {
                    let new = count(handle);
                    set(handle, new);
                    if handle.block.is_empty() {
                        Ok(Change::Delete(()))
                    } else {
                        Ok(Change::Updated(()))
                    }
                }
            }
        })
    }

    /// Finds an unclaimed block of `pool` and claims it for `node`. The search starts at a
    /// position given by the hash of the node's name and probes candidate blocks (a point
    /// read each), so a claim costs a read or two, not a listing of every block, and a node
    /// always tries the same blocks in the same order. Returns `None` when every block is
    /// taken.
    pub(crate) fn claim_free_block(
        &self,
        pool: &IPPool,
        node: &str,
        config: &IPAMConfig,
        reserved: &Reserved,
    ) -> Result<Option<IpNet>, IpamError> {
        // The block count is a power of two, so any odd stride visits every block once per
        // cycle. A per-node stride (double hashing) keeps nodes that start near each other
        // from walking the same run of taken blocks: the expected number of probes stays
        // about 1/(1 - fraction taken) instead of growing with the square of it.
        let count = pool.block_count();
        let hash = node_hash(node);
        let stride = (u128::from(hash.rotate_left(32)) | 1) % count;
        let mut index = u128::from(hash) % count;
        let mut probed: u128 = 0;
        while probed < count {
            let cidr = pool.block_at(index);
            index = index.wrapping_add(stride) % count;
            probed += 1;
            if reserved.covers(&cidr)
                || self
                    .store
                    .get(Kind::IPAMBlock, &block_name(&cidr))?
                    .is_some()
            {
                continue;
            }
            if self.claim_block(&cidr, node, config)? {
                return Ok(Some(cidr));
            }
        }
        Ok(None)
    }

    /// Claims one block for a node, in three writes: affinity `pending`, then the block,
    /// then affinity `confirmed`. Returns false if another node got the block first.
    pub(crate) fn claim_block(
        &self,
        cidr: &IpNet,
        node: &str,
        config: &IPAMConfig,
    ) -> Result<bool, IpamError> {
        let affinity = BlockAffinity {
            node: node.to_string(),
            cidr: *cidr,
            state: AffinityState::Pending,
            timestamp: unix_now(),
        };
        let affinity_name = affinity.name();
        match self.store.create(affinity.into()) {
            Ok(_) => {}
            Err(StoreError::AlreadyExists { .. }) => {
                // Our own earlier claim (a crash, or a concurrent call for the same node):
                // carry on with it, unless the node is giving the block up.
                let giving_up = self
                    .get_typed::<BlockAffinity>(&affinity_name)?
                    .is_some_and(|(existing, _)| existing.state == AffinityState::PendingDeletion);
                if giving_up {
                    return Ok(false);
                }
            }
            Err(error) => return Err(error.into()),
        }
        let block = IPAMBlock::new(*cidr, Some(node), config.strict_affinity);
        match self.store.create(block.into()) {
            Ok(_) => {}
            Err(StoreError::AlreadyExists { .. }) => {
                let owner = self
                    .block(cidr)?
                    .and_then(|b| b.affinity_node().map(str::to_string));
                if owner.as_deref() != Some(node) {
                    self.modify::<BlockAffinity, ()>(
                        "withdrawing a lost claim",
                        &affinity_name,
                        |current| {
                            Ok(match current {
                                Some(current) if current.state == AffinityState::Pending => {
                                    Change::Delete(())
                                }
                                _ => Change::Keep(()),
                            })
                        },
                    )?;
                    return Ok(false);
                }
            }
            Err(error) => return Err(error.into()),
        }
        self.confirm_affinity(node, cidr)?;
        tracing::info!(node, block = %cidr, "claimed block");
        Ok(true)
    }

    pub(crate) fn confirm_affinity(&self, node: &str, cidr: &IpNet) -> Result<(), IpamError> {
        let name = BlockAffinity::name_for(node, cidr);
        self.modify::<BlockAffinity, ()>("confirming a block claim", &name, |current| {
            Ok(match current {
                Some(current) if current.state != AffinityState::Pending => Change::Keep(()),
                _ => Change::Put(
                    BlockAffinity {
                        node: node.to_string(),
                        cidr: *cidr,
                        state: AffinityState::Confirmed,
                        timestamp: unix_now(),
                    },
                    (),
                ),
            })
        })
    }

    /// Releases what a failed call took, by address and sequence number so that nothing
    /// reallocated meanwhile is touched. Best effort: a failure here is left to GC.
    fn roll_back(&self, handle_id: &str, allocations: &[Allocation]) {
        for allocation in allocations {
            if let Err(error) = self.release_address(
                allocation.address,
                Some(handle_id),
                Some(allocation.sequence),
            ) {
                tracing::warn!(address = %allocation.address, %error, "could not roll back a partial assignment");
            }
        }
    }

    /// Assigns one named address to a handle. If its block does not exist yet, the node
    /// claims it. Fails, changing nothing, if the address is taken or in no pool.
    pub fn assign_ip(&self, args: &AssignIpArgs) -> Result<Allocation, IpamError> {
        validate_handle(&args.handle_id)?;
        validate_node(&args.node)?;
        let address = args.address;
        let pool = self
            .pools()?
            .into_iter()
            .find(|pool| pool.cidr.contains(&address))
            .ok_or(IpamError::NotInAnyPool { address })?;
        let config = self.config()?;
        let cidr = pool.block_for(address);
        let name = block_name(&cidr);
        if self.block(&cidr)?.is_none() {
            // Another node may win the race; then the block is borrowed from below.
            self.claim_block(&cidr, &args.node, &config)?;
        }
        let block = self
            .block(&cidr)?
            .ok_or_else(|| IpamError::InvalidArgument {
                what: format!("block {cidr} for {address} vanished while being claimed; try again"),
            })?;
        let owner = block.affinity_node().map(str::to_string);
        if owner.as_deref() != Some(args.node.as_str())
            && (config.strict_affinity || block.strict_affinity)
        {
            return Err(IpamError::BorrowRefused {
                address,
                block: cidr,
                owner: owner.unwrap_or_else(|| "(none)".to_string()),
                node: args.node.clone(),
            });
        }
        if let Some(index) = block
            .ordinal(address)
            .and_then(|o| block.allocations[o as usize])
        {
            let holder = block
                .attributes
                .get(index as usize)
                .and_then(|a| a.handle_id.as_deref().map(str::to_string));
            return Err(IpamError::AddressInUse { address, holder });
        }
        let mut secondary = Secondary::from_map(&args.attributes);
        secondary.set_node(&args.node);
        secondary.set_timestamp(unix_now());
        let attribute = Arc::new(AllocationAttribute {
            handle_id: Some(Name::new(&args.handle_id)),
            secondary,
        });
        self.adjust_handle(&args.handle_id, &name, 1)?;
        let result = self.modify::<IPAMBlock, Result<u64, Option<String>>>(
            "assigning an address",
            &name,
            |current| {
                let Some(current) = current else {
                    return Ok(Change::Keep(Err(None)));
                };
                // In place: `assign_address` changes nothing when it refuses.
                match current.assign_address(address, &attribute) {
                    Ok(sequence) => Ok(Change::Updated(Ok(sequence))),
                    Err(holder) => Ok(Change::Keep(Err(holder.flatten()))),
                }
            },
        );
        match result {
            Ok(Ok(sequence)) => Ok(Allocation {
                address,
                block: cidr,
                sequence,
            }),
            Ok(Err(holder)) => {
                self.adjust_handle(&args.handle_id, &name, -1)?;
                Err(IpamError::AddressInUse { address, holder })
            }
            Err(error) => {
                let _ = self.adjust_handle(&args.handle_id, &name, -1);
                Err(error)
            }
        }
    }

    /// The node's tunnel address of this type: the one it already has, or a new one from an
    /// IPv4 pool that uses the encapsulation and allows tunnels. Idempotent.
    pub fn assign_tunnel_address(
        &self,
        node: &str,
        node_labels: &BTreeMap<String, String>,
        tunnel: TunnelType,
    ) -> Result<IpAddr, IpamError> {
        let handle_id = tunnel.handle_id(node);
        if let Some(address) = self
            .addresses_of(&handle_id)?
            .into_iter()
            .find(|a| a.is_ipv4())
        {
            return Ok(address);
        }
        let args = AutoAssignArgs {
            node_labels: node_labels.clone(),
            intended_use: AllowedUse::Tunnel,
            tunnel: Some(tunnel),
            ..AutoAssignArgs::new(handle_id, node)
        };
        let assigned = self.auto_assign(&args)?;
        assigned
            .ipv4
            .first()
            .map(|a| a.address)
            .ok_or_else(|| IpamError::InvalidArgument {
                what: "tunnel address assignment returned nothing".to_string(),
            })
    }

    /// Every address a handle holds (visiting only the blocks its handle object names).
    pub fn addresses_of(&self, handle_id: &str) -> Result<Vec<IpAddr>, IpamError> {
        let Some(handle) = self.handle(handle_id)? else {
            return Ok(Vec::new());
        };
        let mut addresses = Vec::new();
        for name in handle.block.keys() {
            if let Some((block, _)) = self.get_typed::<IPAMBlock>(name)? {
                addresses.extend(
                    block
                        .allocations_iter()
                        .filter(|v| v.handle_id() == Some(handle_id))
                        .map(|v| v.address),
                );
            }
        }
        Ok(addresses)
    }
}

/// Splits the pools of a family into those this request may use and those it may not (with
/// the reason).
fn classify_pools<'c>(
    context: &'c Context<'_>,
    family: Family,
) -> Result<(Pools<'c>, Vec<PoolAttempt>), IpamError> {
    let args = context.args;
    let mut eligible = Pools::new();
    let mut refused = Vec::new();
    for pool in context.pools() {
        if pool.family() != family || (!args.pools.is_empty() && !args.pools.contains(&pool.name)) {
            continue;
        }
        let selector =
            Selector::parse(&pool.node_selector).map_err(|error| IpamError::InvalidPool {
                pool: pool.name.clone(),
                field: "nodeSelector",
                problem: error.to_string(),
            })?;
        let refusal = if pool.disabled {
            Some(PoolRefusal::Disabled)
        } else if !pool.allows(args.intended_use) {
            Some(PoolRefusal::NotAllowed {
                intended: args.intended_use,
            })
        } else if args.tunnel.is_some_and(|tunnel| !tunnel.uses(pool)) {
            Some(PoolRefusal::Encapsulation {
                field: args.tunnel.map(TunnelType::field).unwrap_or_default(),
            })
        } else if !selector.matches(&args.node_labels) {
            Some(PoolRefusal::NodeSelector {
                selector: pool.node_selector.clone(),
            })
        } else {
            None
        };
        match refusal {
            None => eligible.push(pool),
            Some(refusal) => refused.push(PoolAttempt {
                pool: pool.name.clone(),
                cidr: pool.cidr,
                refusal,
            }),
        }
    }
    for name in &args.pools {
        if !context.pools().any(|pool| &pool.name == name) {
            return Err(IpamError::PoolNotFound { pool: name.clone() });
        }
    }
    Ok((eligible, refused))
}

pub(crate) fn validate_handle(handle_id: &str) -> Result<(), IpamError> {
    // Printable ASCII (every name in practice) in one pass over the bytes; anything else
    // is decided char by char.
    let control = !handle_id.bytes().all(|b| (0x20..0x7f).contains(&b))
        && handle_id.chars().any(char::is_control);
    if handle_id.is_empty() || control {
        return Err(IpamError::InvalidArgument {
            what: format!("handle {handle_id:?}: must be non-empty, without control characters"),
        });
    }
    Ok(())
}

pub(crate) fn validate_node(node: &str) -> Result<(), IpamError> {
    let bad = !node.bytes().all(|b| (0x21..0x7f).contains(&b))
        && node.chars().any(|c| c.is_control() || c.is_whitespace());
    if node.is_empty() || bad {
        return Err(IpamError::InvalidArgument {
            what: format!("node {node:?}: must be non-empty, without spaces or control characters"),
        });
    }
    Ok(())
}
