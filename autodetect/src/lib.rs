//! Which address is this node's?
//!
//! Every node must tell its peers one address to route pod traffic to. This crate decides
//! which, with Calico's `IP`, `IP6`, `IP_AUTODETECTION_METHOD` and
//! `IP6_AUTODETECTION_METHOD` syntax and meaning, and does better where Calico's users get
//! hurt: a /32 (/128) address, typically a keepalived VIP, is never chosen while another
//! candidate exists, and a failure names every interface that was looked at and why it was
//! passed over.
//!
//! The crate is split the way the agent uses it:
//!
//! - [`method`] and [`setting`] parse the configuration (pure);
//! - [`snapshot`] is plain data: the host's interfaces and addresses;
//! - [`select`] is the decision: configuration + snapshot in, a [`Detection`] out, with a
//!   verdict for every interface considered (pure, tested without root);
//! - [`netlink`] reads a snapshot from the kernel with rtnetlink, and [`probe`] asks the
//!   kernel which source address it would use toward a destination (a UDP `connect`, which
//!   sends no packet). These two are the only I/O.
//!
//! # Order
//!
//! Interfaces are walked from the highest interface index down (as Calico walks them), so
//! the most recently created interface comes first; addresses on one interface are taken in
//! the kernel's order (primary before secondary). Ties never depend on anything else, so the
//! same host state always gives the same answer.

pub mod error;
pub mod method;
pub mod netlink;
pub mod probe;
pub mod select;
pub mod setting;
pub mod snapshot;

pub use error::{DetectError, MethodError, SettingError};
pub use method::Method;
pub use netlink::read_snapshot;
pub use probe::SystemEnvironment;
pub use select::{Consideration, Detection, Environment, Verdict, decide, detect};
pub use setting::AddressSetting;
pub use snapshot::{Interface, InterfaceAddress, Snapshot};

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// An address family, and the environment variables that configure it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The variable that holds this family's address: `IP` or `IP6`.
    pub fn address_variable(self) -> &'static str {
        match self {
            Family::V4 => "IP",
            Family::V6 => "IP6",
        }
    }

    /// The variable that holds this family's detection method.
    pub fn method_variable(self) -> &'static str {
        match self {
            Family::V4 => "IP_AUTODETECTION_METHOD",
            Family::V6 => "IP6_AUTODETECTION_METHOD",
        }
    }

    /// The longest prefix: an address with it is a host route (a /32 or /128).
    pub fn max_prefix_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}
