//! The cluster's other resources: [`Node`], [`BGPConfiguration`] and [`BGPPeer`], with
//! Calico's v3 kind and field names.
//!
//! They live in the IPAM crate because the [`Store`](crate::Store) does: one datastore holds pools,
//! blocks, nodes and peers, read and written with the same compare-and-swap, so a node
//! agent and `tortiectl` open one thing and an etcd or Kubernetes backend later serves all
//! of it. Nothing here depends on the BGP speaker; the agent turns these values into its
//! configuration.
//!
//! # What the node agent calls
//!
//! - [`Ipam::register_node`](crate::Ipam::register_node): create or update its own Node (with retries on contention),
//!   refused with [`ClusterError::AddressInUse`] when another Node holds its BGP address.
//! - [`Ipam::nodes`](crate::Ipam::nodes), [`Ipam::bgp_peers`](crate::Ipam::bgp_peers), [`Ipam::bgp_configuration`](crate::Ipam::bgp_configuration) (the effective
//!   cluster-wide one, defaults when none is stored): the inputs of its BGP configuration;
//!   [`BGPPeer::applies_to`] and [`BGPPeer::selected_nodes`] decide who peers with whom.
//! - [`Store::generation`](crate::Store::generation) (also [`Ipam::generation`](crate::Ipam::generation)): one cheap read that changes on
//!   every write, so the agent polls it every few hundred milliseconds and re-reads only
//!   when it moved; [`ChangeWatch`] keeps the last number seen.
//! - [`Ipam::bgp_configuration_for`](crate::Ipam::bgp_configuration_for): the same, with
//!   the node's own `node.<name>` BGPConfiguration laid over it.
//!
//! `tortiectl apply`, `get` and `delete` use [`Ipam::apply_resource`](crate::Ipam::apply_resource) and
//! [`Ipam::delete_resource`](crate::Ipam::delete_resource), which validate every kind the same way.

mod duration;
mod model;
mod ops;
mod validate;
mod watch;

pub use duration::{format_duration, parse_duration};
pub use model::{
    BGPConfiguration, BGPPeer, DEFAULT_AS_NUMBER, DEFAULT_BGP_CONFIGURATION, DEFAULT_BGP_PORT,
    DEFAULT_NODE_MESH_MAX_RESTART_TIME, Node, NodeBGPSpec, SourceAddress,
    parse_address_with_prefix_v4, parse_address_with_prefix_v6, parse_peer_ip,
};
pub use ops::{Applied, DeletedNode, Registered};
pub use validate::{
    LOG_SEVERITIES, is_mac_address, validate_bgp_configuration, validate_bgp_peer, validate_name,
    validate_node,
};
pub use watch::ChangeWatch;

use std::net::IpAddr;

use crate::error::IpamError;
use crate::model::Kind;
use crate::store::StoreError;

/// What can go wrong with a cluster resource. Each says what, where and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Store(#[from] StoreError),

    #[error(transparent)]
    Ipam(#[from] IpamError),

    /// A field that breaks a rule; `field` is spelled as in the YAML (`spec.peerIP`).
    #[error("{kind} {name}: {field}: {problem}")]
    Invalid {
        kind: Kind,
        name: String,
        field: String,
        problem: String,
    },

    /// Two nodes cannot share a BGP address: peers would not know which one they talk to.
    #[error(
        "node {node}: BGP address {address} is already registered by node {other}; if {other} is gone, remove it (tortiectl delete node {other}), otherwise give {node} its own address (IP / IP6, or IP_AUTODETECTION_METHOD)"
    )]
    AddressInUse {
        node: String,
        address: IpAddr,
        other: String,
    },

    #[error("{kind} {name} does not exist")]
    NotFound { kind: Kind, name: String },

    #[error(
        "{kind} objects are tortie's own bookkeeping and are not applied or deleted by hand (see `tortiectl ipam`); apply and delete take IPPool, IPReservation, Node, BGPPeer and BGPConfiguration"
    )]
    ReadOnly { kind: Kind },

    #[error(
        "{operation}: gave up after {attempts} attempts, each overtaken by a concurrent writer"
    )]
    TooManyConflicts { operation: String, attempts: u32 },
}

#[cfg(test)]
mod tests;
