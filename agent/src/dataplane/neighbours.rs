//! The VXLAN neighbour and FDB entries: for every other node's VTEP, a permanent neighbour
//! (its tunnel address → its `vxlan.tortie` MAC), so routes via the tunnel address need no
//! ARP, and an FDB entry (that MAC → its node address), so the vxlan driver knows where to
//! send the encapsulated frame (learning is off). Entries for VTEPs no longer wanted go.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use futures::future::{BoxFuture, FutureExt, join_all};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::Handle;

use super::links::errno;
use super::{DataplaneError, Report, VXLAN_DEVICE, VxlanPeer};

type Mac = [u8; 6];

/// Makes the neighbour table and FDB of `vxlan.tortie` (link `index`) hold exactly
/// `peers`' entries. The requests of each phase (deletions, then additions) are all sent
/// at once and answered together, rather than one round trip each.
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
    let wanted_fdb: BTreeSet<(Mac, Ipv4Addr)> = peers
        .iter()
        .map(|peer| (peer.mac, peer.node_address))
        .collect();

    // Stale entries go first, so a MAC that moved to another node address is re-added
    // with its new one rather than gaining a second remote.
    let mut deletions = Batch::default();
    for address in neighbours.keys() {
        if wanted_neighbours.contains_key(address) {
            // Kept, or replaced below.
            continue;
        }
        let mut message = neighbour_message(index, AddressFamily::Inet);
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                *address,
            )));
        deletions.push(
            format!("neighbour {address} on {VXLAN_DEVICE}"),
            Counted::Removed,
            handle.neighbours().del(message).execute().boxed(),
        );
    }
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
        deletions.push(
            format!("fdb {} dst {destination} on {VXLAN_DEVICE}", show_mac(mac)),
            Counted::Removed,
            handle.neighbours().del(message).execute().boxed(),
        );
    }
    deletions.run(&mut report).await;

    let mut additions = Batch::default();
    for (address, mac) in &wanted_neighbours {
        let existing = neighbours.get(address);
        if existing == Some(&(*mac, NeighbourState::Permanent)) {
            report.unchanged += 1;
            continue;
        }
        additions.push(
            format!(
                "neighbour {address} lladdr {} on {VXLAN_DEVICE}",
                show_mac(mac)
            ),
            if existing.is_some() {
                Counted::Replaced
            } else {
                Counted::Added
            },
            handle
                .neighbours()
                .add(index, IpAddr::V4(*address))
                .link_layer_address(mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .boxed(),
        );
    }
    for (mac, destination) in &wanted_fdb {
        if fdb.contains(&(*mac, *destination)) {
            report.unchanged += 1;
            continue;
        }
        // `bridge fdb append <mac> dev vxlan.tortie dst <node> self permanent`: NTF_SELF
        // puts it in the vxlan device's own FDB, not a bridge's.
        additions.push(
            format!("fdb {} dst {destination} on {VXLAN_DEVICE}", show_mac(mac)),
            Counted::Added,
            handle
                .neighbours()
                .add_bridge(index, mac)
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .destination(IpAddr::V4(*destination))
                .replace()
                .execute()
                .boxed(),
        );
    }
    additions.run(&mut report).await;
    Ok(report)
}

/// How a change counts in the report when it succeeds.
#[derive(Clone, Copy)]
enum Counted {
    Added,
    Replaced,
    Removed,
}

/// Requests sent together: rtnetlink queues each on its connection as soon as it is
/// polled, so awaiting them all at once pipelines them.
#[derive(Default)]
struct Batch {
    labels: Vec<(String, Counted)>,
    requests: Vec<BoxFuture<'static, Result<(), rtnetlink::Error>>>,
}

impl Batch {
    fn push(
        &mut self,
        what: String,
        counted: Counted,
        request: BoxFuture<'static, Result<(), rtnetlink::Error>>,
    ) {
        self.labels.push((what, counted));
        self.requests.push(request);
    }

    async fn run(self, report: &mut Report) {
        let outcomes = join_all(self.requests).await;
        for ((what, counted), outcome) in self.labels.into_iter().zip(outcomes) {
            match (counted, outcome) {
                (Counted::Added, Ok(())) => report.added += 1,
                (Counted::Replaced, Ok(())) => report.replaced += 1,
                (Counted::Removed, Ok(())) => report.removed += 1,
                // Gone meanwhile: what was wanted.
                (Counted::Removed, Err(error)) if errno(&error) == Some(libc::ENOENT) => {}
                (Counted::Removed, Err(error)) => {
                    report.fail(what, format!("deleting it failed: {error}"))
                }
                (_, Err(error)) => report.fail(what, format!("adding it failed: {error}")),
            }
        }
    }
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
