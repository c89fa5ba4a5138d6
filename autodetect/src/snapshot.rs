//! The host's interfaces and their addresses, as plain data.

use ipnet::IpNet;
use serde::Serialize;

use crate::Family;

/// Every interface of the host (or network namespace) at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub interfaces: Vec<Interface>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// The kernel's interface index.
    pub index: u32,
    pub name: String,
    /// `IFF_UP`: the administrator set the link up.
    pub admin_up: bool,
    /// `IFF_LOWER_UP`: the link has carrier (for a veth, its peer is up too).
    pub carrier: bool,
    /// Addresses in the kernel's order, which puts an IPv4 primary before its secondaries.
    pub addresses: Vec<InterfaceAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceAddress {
    /// The local address with the interface's prefix length, e.g. `203.0.113.71/24`.
    pub address: IpNet,
    /// IPv6 duplicate address detection failed: the kernel will not use the address.
    pub dad_failed: bool,
}

impl InterfaceAddress {
    pub fn new(address: IpNet) -> Self {
        Self {
            address,
            dad_failed: false,
        }
    }
}

impl Interface {
    /// This interface's addresses of one family, in the kernel's order.
    pub fn addresses_of(&self, family: Family) -> impl Iterator<Item = &InterfaceAddress> {
        self.addresses
            .iter()
            .filter(move |a| Family::of(a.address.addr()) == family)
    }
}

impl Snapshot {
    /// The interface holding `address`, and that address with its prefix length.
    pub fn holder_of(&self, address: std::net::IpAddr) -> Option<(&Interface, IpNet)> {
        self.interfaces.iter().find_map(|interface| {
            interface
                .addresses
                .iter()
                .find(|a| a.address.addr() == address)
                .map(|a| (interface, a.address))
        })
    }
}
