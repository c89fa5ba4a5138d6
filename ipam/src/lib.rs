//! Pod addresses, Calico's way: pools cut into blocks, blocks owned by nodes.
//!
//! Read this first. The rest of the crate is the detail.
//!
//! # What is stored, and who owns it
//!
//! | kind | one per | written by |
//! |---|---|---|
//! | [`IPPool`] | range of pod addresses | the operator (`tortiectl pool create`) |
//! | [`IPAMConfig`] | cluster (`default`) | the operator |
//! | [`IPReservation`] | set of addresses never handed out automatically | the operator |
//! | [`BlockAffinity`] | (node, block) | the node that claims the block |
//! | [`IPAMBlock`] | block (/26 by default) | any node; in practice the owner, plus borrowers |
//! | [`IPAMHandle`] | pod interface or tunnel | whoever assigns or releases for it |
//! | [`Node`] | node | its agent (`register_node`); the operator adds labels |
//! | [`BGPPeer`], [`BGPConfiguration`] | peering; cluster (`default`) or node | the operator (`tortiectl apply`) |
//!
//! The last three are not IPAM's, but live in its store so that one datastore holds the
//! cluster: see [`cluster`].
//!
//! A block's allocations are the only record of who holds an address: an address is held
//! exactly when its slot in its block says so, and a block is one object, so "never one
//! address for two pods" is the store's compare-and-swap on that one object. Everything else
//! (handles, affinities) is an index that lets release and lookup avoid scanning, and may lag
//! behind after a crash; [`Ipam::check`] reports the lag and [`Ipam::gc`] removes it.
//!
//! # How an assignment works
//!
//! 1. The node's own blocks: its affinities and its blocks, two indexed reads.
//! 2. If they are full, a new block: the search starts at a position seeded by a hash of the
//!    node's name and probes candidate blocks with point reads, so a claim costs about one
//!    read per block already taken near that position, never a listing of all blocks (the
//!    scan Calico does on every claim). The claim is three writes: affinity `pending`,
//!    block created, affinity `confirmed`. Two nodes racing for one block: the block create
//!    succeeds for one; the other withdraws its pending affinity and probes on.
//! 3. If no block can be claimed (pool full, `maxBlocksPerHost`, `autoAllocateBlocks`
//!    false) and `strictAffinity` is off, borrow a free address from another node's block.
//!    Only this fallback lists blocks.
//!
//! Within a block, the handle is counted first and the block written second: a crash in
//! between leaves a handle that over-counts, which release-by-handle and GC clean, never an
//! address held without a trace. A failed multi-address request releases what it took (by
//! address and sequence number), so a request gets all it asked for or nothing.
//!
//! # Why the store is shaped as it is
//!
//! [`Store`] is five calls: get, list (optionally by node, through an index), create,
//! update and delete, the last two with the [`Revision`] that was read. That is the common
//! ground of etcd (transactions comparing `mod_revision`, key prefixes) and the Kubernetes
//! API (`resourceVersion`, label selectors), so both can back it later with no change here.
//! Three more have defaults built from those, which a backend may override for speed:
//! [`Store::apply`] (read one object, let a step decide, write the decision; default: get
//! and compare-and-swap), which [`MemoryStore`] runs under its lock on the stored object
//! itself and [`SqliteStore`] (WAL, busy timeout, many processes on one file) inside one
//! write transaction; [`Store::visit`] (a borrowed read: show each object a list would
//! return, collect nothing; default: list), which the memory store runs in place; and
//! [`Store::visit_each`] (several visits in one call; default: one after another), which
//! the memory store makes under one lock and SQLite in one read transaction. There are no multi-object transactions: the
//! Kubernetes API has none (etcd has, but then IPAM would differ per backend); instead
//! every operation is a sequence of single-object writes ordered so that each prefix of it
//! is a state check and GC understand. A write overtaken by another writer is re-read and
//! re-decided inside IPAM, a bounded number of times ([`DEFAULT_MAX_ATTEMPTS`]) with
//! randomised backoff, so callers never see a conflict unless the store is pathologically
//! contended ([`IpamError::TooManyConflicts`]).
//! One more call, [`Store::generation`], is a number that moves on every write: the cheap
//! change signal a node agent polls instead of listing everything.
//!
//! # What an assignment costs, and why
//!
//! The common case (one address for a new handle, from a block the node owns) is three
//! store calls: one [`Store::visit_each`] for the five reads (the config, the pools, the
//! reservations, the node's affinities and its blocks), then the handle and the block
//! (applies, in that order, as above). On the memory store that is about 4.8k
//! instructions (callgrind), and four heap allocations, each for something that outlives
//! the call or is returned: the handle's [`Name`] (one copy, shared by the allocation's
//! attribute, the handle object and the store's key), the attribute, the handle object,
//! and the result. (The attribute's node name is shared with the previous allocation's
//! for the same node, and its timestamp text is converted once a second.) Each
//! allocation is glibc's slow path (about 200 instructions): in a run of assignments the
//! heap only grows, so its per-thread cache is empty. The rest is one lock per store call,
//! the hash lookups, and the block's own work. (Measured as `valgrind --tool=callgrind
//! --toggle-collect='*Ipam*auto_assign*' tortie-ipam-load bench --memory-ops 20000
//! --sqlite-ops 50 --workers 1`, release build: the count over the 120,000 assignments
//! of its six memory runs. A release by handle is about 5.6k the same way.)
//!
//! It was more than twice that (13.5k), then 6.3k. What went: names written through
//! `Display` ([`model::BlockName`] builds a block's name inline), the default selector
//! `all()` parsed on every call, attributes and a handle's per-block counts held as B-tree
//! maps of strings (a [`Secondary`] holds `node` and `timestamp` as fields;
//! [`HandleBlocks`] holds one entry inline), lists copied into vectors to be read once,
//! keys hashed a byte at a time; then five reads under five locks (now one call), a
//! node's objects found by name one at a time (the memory store's node index now points
//! at their slots), every name hashed twice on a create and again whenever the table grew
//! (it now keeps each name's hash, which is why the crate uses `hashbrown`'s `HashTable`
//! directly: std's `HashMap` offers no way to look up and then insert with one hash), a
//! block's holders scanned for an attribute no block could hold yet, and a block name
//! checked for UTF-8 on every use and written digit by digit (now a table of the 256
//! octets). Every one of these is a representation, not a rule: the JSON a backend stores,
//! and the order and content of every write, are what they were, so SQLite (whose cost is
//! its transactions) is unaffected.
//!
//! # Failing well
//!
//! "No address available" names every pool considered and why each gave nothing (disabled,
//! selector, allowed uses, full, block limit, strict affinity). Invalid pools, overlapping
//! pools, releases of free addresses and stale releases are refused with the address, pool
//! or field at fault, and change nothing.

pub mod assign;
pub mod block;
pub mod check;
mod claim;
pub mod cluster;
pub mod document;
pub mod error;
mod ipam;
pub mod model;
pub mod name;
pub mod pools;
pub mod release;
pub mod secondary;
pub mod selector;
pub mod store;

pub use assign::{Allocation, AssignIpArgs, Assigned, AutoAssignArgs, TunnelType};
pub use block::{AllocationAttribute, IPAMBlock, ReleasedAddress};
pub use check::{
    AddressInfo, BlockUsage, BorrowedAddress, CheckReport, GcReport, HeldAddress, PoolUsage,
    Problem, ReportOutcome, Utilization,
};
pub use cluster::{
    Applied, BGPConfiguration, BGPPeer, ChangeWatch, ClusterError, DeletedNode, Node, NodeBGPSpec,
    Registered,
};
pub use error::{IpamError, PoolAttempt, PoolRefusal};
pub use ipam::{DEFAULT_MAX_ATTEMPTS, Ipam};
pub use model::{
    AffinityState, AllowedUse, BlockAffinity, EncapsulationMode, Family, HandleBlocks, IPAMConfig,
    IPAMHandle, IPPool, IPReservation, Kind, Resource,
};
pub use name::Name;
pub use pools::{parse_pool_cidr, validate_pool};
pub use secondary::Secondary;
pub use selector::Selector;
pub use store::{
    MemoryStore, Read, ReadVisitor, Revision, SqliteStore, Store, StoreError, Versioned, Visitor,
};

#[cfg(test)]
mod tests;
