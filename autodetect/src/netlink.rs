//! Reads a [`Snapshot`] of the host's interfaces and addresses from the kernel (rtnetlink).
//!
//! The snapshot is read in the network namespace of the calling thread, as netlink sockets
//! belong to the namespace they were opened in.

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use netlink_packet_route::link::{LinkAttribute, LinkFlags};

use crate::DetectError;
use crate::snapshot::{Interface, InterfaceAddress, Snapshot};

/// Dumps every link and every address. Needs a tokio runtime (rtnetlink's connection task
/// is spawned on it).
pub async fn read_snapshot() -> Result<Snapshot, DetectError> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        DetectError::Netlink(format!("{what}: {error}"))
    };
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| failed("opening a netlink socket", &e))?;
    let connection = tokio::spawn(connection);

    let links: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| failed("listing links", &e))?;
    let mut interfaces: Vec<Interface> = links
        .into_iter()
        .map(|link| Interface {
            index: link.header.index,
            name: link
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| format!("if{}", link.header.index)),
            admin_up: link.header.flags.contains(LinkFlags::Up),
            carrier: link.header.flags.contains(LinkFlags::LowerUp),
            addresses: Vec::new(),
        })
        .collect();

    let addresses: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| failed("listing addresses", &e))?;
    for message in addresses {
        // For IPv4, IFA_LOCAL is this host's address and IFA_ADDRESS the far end on a
        // point-to-point link; IPv6 sends only IFA_ADDRESS, which is then the local one.
        let mut local = None;
        let mut address = None;
        let mut flags = None;
        for attribute in &message.attributes {
            match attribute {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Flags(f) => flags = Some(*f),
                _ => {}
            }
        }
        let Some(ip) = local.or(address) else {
            continue;
        };
        let Ok(network) = IpNet::new(ip, message.header.prefix_len) else {
            continue;
        };
        // The 32-bit IFA_FLAGS attribute supersedes the 8-bit header field when present.
        let dad_failed = match flags {
            Some(flags) => flags.contains(AddressFlags::Dadfailed),
            None => message.header.flags.contains(AddressHeaderFlags::Dadfailed),
        };
        if let Some(interface) = interfaces
            .iter_mut()
            .find(|i| i.index == message.header.index)
        {
            interface.addresses.push(InterfaceAddress {
                address: network,
                dad_failed,
            });
        }
    }
    connection.abort();
    Ok(Snapshot { interfaces })
}
