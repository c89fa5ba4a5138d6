//! The VXLAN neighbour and FDB entries: for every other node's VTEP, a permanent neighbour
//! (its tunnel address → its `vxlan.tortie` MAC), so routes via the tunnel address need no
//! ARP, and an FDB entry (that MAC → its node address), so the vxlan driver knows where to
//! send the encapsulated frame (learning is off). Entries for VTEPs no longer wanted go.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::Handle;

use super::links::errno;
use super::{DataplaneError, Report, VXLAN_DEVICE, VxlanPeer};

type Mac = [u8; 6];

/// Makes the neighbour table and FDB of `vxlan.tortie` (link `index`) hold exactly
/// `peers`' entries.
pub(crate) async fn reconcile(
    handle: &Handle,
    index: u32,
    peers: &[VxlanPeer],
) -> Result<Report, DataplaneError> {
    let mut report = Report::default();
    let (neighbours, fdb) = read(handle, index).await?;

    let wanted_neighbours: BTreeMap<Ipv4Addr, Mac> = peers
        .iter()
        .map(|peer| (peer.tunnel_address, peer.mac))
        .collect();
    for (address, (mac, state)) in &neighbours {
        if wanted_neighbours.get(address) == Some(mac) && *state == NeighbourState::Permanent {
            continue;
        }
        if wanted_neighbours.contains_key(address) {
            // Replaced below.
            continue;
        }
        let mut message = neighbour_message(index, AddressFamily::Inet);
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                *address,
            )));
        match handle.neighbours().del(message).execute().await {
            Ok(()) => report.removed += 1,
            Err(error) if errno(&error) == Some(libc::ENOENT) => {}
            Err(error) => report.fail(
                format!("neighbour {address} on {VXLAN_DEVICE}"),
                format!("deleting it failed: {error}"),
            ),
        }
    }
    for (address, mac) in &wanted_neighbours {
        let existing = neighbours.get(address);
        if existing == Some(&(*mac, NeighbourState::Permanent)) {
            report.unchanged += 1;
            continue;
        }
        let added = handle
            .neighbours()
            .add(index, IpAddr::V4(*address))
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await;
        match added {
            Ok(()) if existing.is_some() => report.replaced += 1,
            Ok(()) => report.added += 1,
            Err(error) => report.fail(
                format!(
                    "neighbour {address} lladdr {} on {VXLAN_DEVICE}",
                    show_mac(mac)
                ),
                format!("adding it failed: {error}"),
            ),
        }
    }

    let wanted_fdb: BTreeSet<(Mac, Ipv4Addr)> = peers
        .iter()
        .map(|peer| (peer.mac, peer.node_address))
        .collect();
    // Stale entries go first, so a MAC that moved to another node address is re-added
    // with its new one rather than gaining a second remote.
    for (mac, destination) in fdb.difference(&wanted_fdb) {
        let mut message = neighbour_message(index, AddressFamily::Bridge);
        message.header.flags = NeighbourFlags::Own;
        message
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                *destination,
            )));
        match handle.neighbours().del(message).execute().await {
            Ok(()) => report.removed += 1,
            Err(error) if errno(&error) == Some(libc::ENOENT) => {}
            Err(error) => report.fail(
                format!("fdb {} dst {destination} on {VXLAN_DEVICE}", show_mac(mac)),
                format!("deleting it failed: {error}"),
            ),
        }
    }
    for (mac, destination) in &wanted_fdb {
        if fdb.contains(&(*mac, *destination)) {
            report.unchanged += 1;
            continue;
        }
        // `bridge fdb append <mac> dev vxlan.tortie dst <node> self permanent`: NTF_SELF
        // puts it in the vxlan device's own FDB, not a bridge's.
        let added = handle
            .neighbours()
            .add_bridge(index, mac)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .destination(IpAddr::V4(*destination))
            .replace()
            .execute()
            .await;
        match added {
            Ok(()) => report.added += 1,
            Err(error) => report.fail(
                format!("fdb {} dst {destination} on {VXLAN_DEVICE}", show_mac(mac)),
                format!("adding it failed: {error}"),
            ),
        }
    }
    Ok(report)
}

type Neighbours = BTreeMap<Ipv4Addr, (Mac, NeighbourState)>;
type Fdb = BTreeSet<(Mac, Ipv4Addr)>;

/// The IPv4 neighbours and the FDB entries (with a remote address) of link `index`.
async fn read(handle: &Handle, index: u32) -> Result<(Neighbours, Fdb), DataplaneError> {
    let mut neighbours = Neighbours::new();
    let messages: Vec<NeighbourMessage> = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute()
        .try_collect()
        .await
        .map_err(|e| DataplaneError::netlink(format!("listing neighbours of {VXLAN_DEVICE}"), e))?;
    for message in messages {
        if message.header.ifindex != index {
            continue;
        }
        let (Some(IpAddr::V4(address)), mac) = (destination_of(&message), mac_of(&message)) else {
            continue;
        };
        // An entry without a MAC (FAILED, INCOMPLETE) compares unequal to any wanted one.
        neighbours.insert(address, (mac.unwrap_or_default(), message.header.state));
    }
    let mut fdb = Fdb::new();
    let messages: Vec<NeighbourMessage> = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute()
        .try_collect()
        .await
        .map_err(|e| DataplaneError::netlink(format!("listing the FDB of {VXLAN_DEVICE}"), e))?;
    for message in messages {
        if message.header.ifindex != index {
            continue;
        }
        if let (Some(mac), Some(IpAddr::V4(destination))) =
            (mac_of(&message), destination_of(&message))
        {
            fdb.insert((mac, destination));
        }
    }
    Ok((neighbours, fdb))
}

fn neighbour_message(index: u32, family: AddressFamily) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = family;
    message.header.ifindex = index;
    message
}

fn destination_of(message: &NeighbourMessage) -> Option<IpAddr> {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
            // FDB entries (AF_BRIDGE) carry the remote's address without saying its
            // family: the length does.
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => match bytes.len() {
                4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(bytes.as_slice())
                    .ok()
                    .map(IpAddr::from),
                _ => None,
            },
            _ => None,
        })
}

fn mac_of(message: &NeighbourMessage) -> Option<Mac> {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            NeighbourAttribute::LinkLayerAddress(bytes) => bytes.as_slice().try_into().ok(),
            _ => None,
        })
}

pub(crate) fn show_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
