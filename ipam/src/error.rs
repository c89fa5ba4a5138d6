//! IPAM's errors. Each names what was wrong and where, and, where it helps, what to do.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{AllowedUse, Family};
use crate::store::StoreError;

/// Why one pool could not supply an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolRefusal {
    Disabled,
    /// The node's labels do not match the pool's `nodeSelector`.
    NodeSelector {
        selector: String,
    },
    /// The pool's `allowedUses` does not include what the address is for.
    NotAllowed {
        intended: AllowedUse,
    },
    /// A tunnel address was asked for, and the pool does not use that encapsulation.
    Encapsulation {
        field: &'static str,
    },
    /// No unclaimed block left, and no free address in any existing block.
    Full,
    /// No unclaimed block left, and `strictAffinity` forbids borrowing.
    FullStrictAffinity,
    /// The node already owns `owned` blocks; `maxBlocksPerHost` is `max`.
    BlockLimit {
        owned: u32,
        max: u32,
    },
    /// `autoAllocateBlocks` is false and no existing block had a free address.
    AutoAllocateDisabled,
}

impl fmt::Display for PoolRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolRefusal::Disabled => f.write_str("disabled"),
            PoolRefusal::NodeSelector { selector } => {
                write!(f, "nodeSelector \"{selector}\" does not match this node")
            }
            PoolRefusal::NotAllowed { intended } => {
                write!(f, "allowedUses does not include {intended}")
            }
            PoolRefusal::Encapsulation { field } => write!(f, "{field} is Never"),
            PoolRefusal::Full => {
                f.write_str("full (no unclaimed block, no free address in any block)")
            }
            PoolRefusal::FullStrictAffinity => f.write_str(
                "full for this node (no unclaimed block; strictAffinity forbids borrowing)",
            ),
            PoolRefusal::BlockLimit { owned, max } => write!(
                f,
                "block limit (node owns {owned} blocks, maxBlocksPerHost is {max}) and no other block has a free address"
            ),
            PoolRefusal::AutoAllocateDisabled => {
                f.write_str("autoAllocateBlocks is false and no existing block has a free address")
            }
        }
    }
}

/// One pool that was tried, and why it gave nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolAttempt {
    pub pool: String,
    pub cidr: IpNet,
    pub refusal: PoolRefusal,
}

fn attempts(pools: &[PoolAttempt], family: &Family) -> String {
    if pools.is_empty() {
        return format!("no {family} pool exists (create one with `tortiectl pool create`)");
    }
    pools
        .iter()
        .map(|attempt| {
            format!(
                "pool {} ({}): {}",
                attempt.pool, attempt.cidr, attempt.refusal
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(
        "no {family} address available for node {node} (wanted {wanted}, found {found}): {}",
        attempts(pools, family)
    )]
    NoAddressAvailable {
        family: Family,
        node: String,
        wanted: u32,
        found: u32,
        pools: Vec<PoolAttempt>,
    },

    #[error(
        "{operation}: gave up after {attempts} attempts, each overtaken by a concurrent writer"
    )]
    TooManyConflicts { operation: String, attempts: u32 },

    #[error("pool {pool}: {field}: {problem}")]
    InvalidPool {
        pool: String,
        field: &'static str,
        problem: String,
    },

    #[error("pool {pool} ({cidr}) overlaps pool {other} ({other_cidr})")]
    PoolOverlap {
        pool: String,
        cidr: IpNet,
        other: String,
        other_cidr: IpNet,
    },

    #[error("pool {pool} already exists")]
    PoolExists { pool: String },

    #[error("pool {pool} does not exist")]
    PoolNotFound { pool: String },

    #[error(
        "pool {pool} still has {in_use} addresses in use; release them (tortiectl ipam release) or disable the pool first"
    )]
    PoolInUse { pool: String, in_use: u64 },

    #[error("{address} is in no pool")]
    NotInAnyPool { address: IpAddr },

    #[error("{address} is already in use by handle {}", holder.as_deref().unwrap_or("(none)"))]
    AddressInUse {
        address: IpAddr,
        holder: Option<String>,
    },

    #[error("{address} is not allocated ({why})")]
    NotAllocated { address: IpAddr, why: String },

    #[error(
        "{address} was reallocated since it was read (sequence number {actual}, release named {expected}); not released"
    )]
    StaleRelease {
        address: IpAddr,
        expected: u64,
        actual: u64,
    },

    #[error("{address} is held by handle {}, not {expected}; not released", actual.as_deref().unwrap_or("(none)"))]
    HandleMismatch {
        address: IpAddr,
        expected: String,
        actual: Option<String>,
    },

    #[error(
        "{address}: block {block} belongs to node {owner} and strictAffinity forbids node {node} to use it"
    )]
    BorrowRefused {
        address: IpAddr,
        block: IpNet,
        owner: String,
        node: String,
    },

    #[error("{what}")]
    InvalidArgument { what: String },

    #[error("datastore holds {kind} {name} with a body of another kind")]
    WrongKind {
        kind: crate::model::Kind,
        name: String,
    },
}
