//! The tunnel devices and their addresses: tunl0 (adopted from the ipip module), and
//! `vxlan.tortie` (created, and recreated when a setting the kernel cannot change in place
//! differs), plus the link facts the rest needs (indexes, MTUs, whether IPIP exists).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkIpIp, LinkUnspec, LinkVxlan};
use sha1::{Digest, Sha1};

use super::{DataplaneError, IpipSupport, Report, Tunl0Spec, VxlanSpec};

/// The ipip module's fallback device, which it creates in every network namespace.
pub const TUNL0: &str = "tunl0";
/// tortie's VXLAN device.
pub const VXLAN_DEVICE: &str = "vxlan.tortie";

/// What to do when the kernel lacks IPIP, said wherever that is reported.
const IPIP_FIX: &str = "load the module on the host with `modprobe ipip` (a container cannot \
                        load modules), or use a VXLAN pool (vxlanMode Always or CrossSubnet, \
                        TORTIE_IPV4POOL_VXLAN) instead of IPIP";

/// The MAC of a node's `vxlan.tortie`: `0x66` and the first 5 bytes of sha1(node name), as
/// Calico derives it. 0x66 has the locally-administered bit set and the multicast bit
/// clear, so it never collides with a vendor's address; every node computes every other
/// node's MAC from its name alone.
pub fn vxlan_mac(node_name: &str) -> [u8; 6] {
    let digest = Sha1::digest(node_name.as_bytes());
    let mut mac = [0x66, 0, 0, 0, 0, 0];
    mac[1..].copy_from_slice(&digest[..5]);
    mac
}

/// Whether the kernel of the calling thread's network namespace can make IPIP tunnels,
/// over a netlink connection of its own. See [`probe_ipip`] for how.
pub async fn ipip_support() -> Result<IpipSupport, DataplaneError> {
    let (handle, connection) = open("the IPIP probe")?;
    let support = probe_ipip(&handle).await;
    connection.abort();
    support
}

/// The MTU of `interface` in the calling thread's network namespace (for tunnel MTUs:
/// host − 20 for IPIP, − 50 for VXLAN; see [`super::plan::tunnel_mtu`]).
pub async fn host_mtu(interface: &str) -> Result<u32, DataplaneError> {
    let (handle, connection) = open("reading an MTU")?;
    let mtu = link_mtu(&handle, interface).await;
    connection.abort();
    mtu
}

fn open(purpose: &'static str) -> Result<(Handle, tokio::task::JoinHandle<()>), DataplaneError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|source| DataplaneError::Socket { purpose, source })?;
    Ok((handle, tokio::spawn(connection)))
}

pub(crate) async fn link_mtu(handle: &Handle, interface: &str) -> Result<u32, DataplaneError> {
    let link =
        get_link(handle, interface)
            .await?
            .ok_or_else(|| DataplaneError::NoSuchInterface {
                interface: interface.to_string(),
            })?;
    mtu_of(&link).ok_or_else(|| DataplaneError::NoMtu {
        interface: interface.to_string(),
    })
}

/// Tries tunl0 first: if it exists as an ipip device, IPIP is there. Otherwise asks the
/// kernel to create an ipip device: that loads the module on demand where it can
/// (`rtnl_newlink` calls `request_module("rtnl-link-ipip")`), which brings tunl0 with it,
/// so the request then fails with EEXIST (an ipip device without endpoints is the fallback
/// device's twin, `ip_tunnel_newlink`), or creates the probe, which is deleted at once.
/// EOPNOTSUPP ("Unknown device type") means the kernel has no ipip at all.
pub(crate) async fn probe_ipip(handle: &Handle) -> Result<IpipSupport, DataplaneError> {
    if let Some(link) = get_link(handle, TUNL0).await?
        && kind_of(&link) == Some(InfoKind::IpIp)
    {
        return Ok(IpipSupport::Available);
    }
    const PROBE: &str = "tortie-ipipprb";
    match handle
        .link()
        .add(LinkIpIp::new(PROBE).build())
        .execute()
        .await
    {
        Ok(()) => {
            if let Some(link) = get_link(handle, PROBE).await? {
                let _ = handle.link().del(link.header.index).execute().await;
            }
            Ok(IpipSupport::Available)
        }
        Err(error) if errno(&error) == Some(libc::EEXIST) => Ok(IpipSupport::Available),
        Err(error) => Ok(IpipSupport::Missing {
            reason: format!(
                "the kernel has no IPIP support (creating an ipip device failed: {error}); \
                 {IPIP_FIX}"
            ),
        }),
    }
}

/// Link names and indexes of the namespace, read at once.
#[derive(Debug, Default, Clone)]
pub(crate) struct LinkIndex {
    by_name: HashMap<String, u32>,
    by_index: HashMap<u32, String>,
}

impl LinkIndex {
    pub(crate) async fn read(handle: &Handle) -> Result<LinkIndex, DataplaneError> {
        let links: Vec<LinkMessage> = handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| DataplaneError::netlink("listing links", e))?;
        let mut index = LinkIndex::default();
        for link in links {
            if let Some(name) = name_of(&link) {
                index.by_name.insert(name.clone(), link.header.index);
                index.by_index.insert(link.header.index, name);
            }
        }
        Ok(index)
    }

    pub(crate) fn index(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn name(&self, index: u32) -> Option<&str> {
        self.by_index.get(&index).map(String::as_str)
    }
}

/// Adopts tunl0 and makes it as `spec` says: its only IPv4 address the tunnel /32, its
/// MTU, up. A kernel without ipip is a failure whose reason names the fix, and sets
/// `report.ipip`, so the agent's log, status and readiness can all say it.
pub(crate) async fn ensure_tunl0(
    handle: &Handle,
    links: &LinkIndex,
    spec: &Tunl0Spec,
) -> Result<Report, DataplaneError> {
    let mut report = Report::default();
    if links.index(TUNL0).is_none() {
        // With the module loaded tunl0 exists in every namespace; asking for it loads the
        // module where the kernel can. EEXIST: the module came and brought tunl0.
        match handle
            .link()
            .add(LinkIpIp::new(TUNL0).build())
            .execute()
            .await
        {
            Ok(()) => report.added += 1,
            Err(error) if errno(&error) == Some(libc::EEXIST) => {}
            Err(error) => {
                let reason = match errno(&error) {
                    Some(libc::EOPNOTSUPP) => format!(
                        "the kernel has no IPIP support, so tunl0 cannot exist (creating it \
                         failed: {error}); {IPIP_FIX}"
                    ),
                    _ => format!("creating tunl0 failed: {error}"),
                };
                report.ipip = Some(IpipSupport::Missing {
                    reason: reason.clone(),
                });
                report.fail(TUNL0, reason);
                return Ok(report);
            }
        }
    }
    let Some(link) = get_link(handle, TUNL0).await? else {
        report.fail(
            TUNL0,
            "tunl0 vanished right after it was created or adopted",
        );
        return Ok(report);
    };
    if kind_of(&link) != Some(InfoKind::IpIp) {
        report.fail(
            TUNL0,
            format!(
                "a device named tunl0 exists but is of kind {}, not the ipip module's \
                 fallback device; delete it (`ip link del tunl0`) so IPIP can work",
                kind_of(&link).map_or_else(|| "unknown".to_string(), |kind| kind.to_string())
            ),
        );
        return Ok(report);
    }
    report.ipip = Some(IpipSupport::Available);
    report.merge(set_mtu_and_up(handle, &link, TUNL0, spec.mtu).await);
    report.merge(only_address(handle, link.header.index, TUNL0, spec.address).await?);
    Ok(report)
}

/// Creates or corrects `vxlan.tortie`: VNI, port, local address and parent fixed at
/// creation (a device that differs in any of them is deleted and made again, which also
/// drops its routes and FDB, put back by the same reconcile), MAC, MTU and up changed in
/// place, and its only IPv4 address the tunnel /32. Learning is off: the FDB holds exactly
/// the entries the agent writes (Calico does the same).
pub(crate) async fn ensure_vxlan(
    handle: &Handle,
    links: &LinkIndex,
    spec: &VxlanSpec,
) -> Result<Report, DataplaneError> {
    let mut report = Report::default();
    let Some(parent) = links.index(&spec.parent) else {
        report.fail(
            VXLAN_DEVICE,
            format!(
                "its parent interface {} does not exist in this network namespace",
                spec.parent
            ),
        );
        return Ok(report);
    };
    let mut existing = get_link(handle, VXLAN_DEVICE).await?;
    if let Some(link) = &existing
        && !vxlan_matches(link, spec, parent)
    {
        tracing::info!(
            device = VXLAN_DEVICE,
            "VNI, port, local address or parent differ from what is wanted: recreating it"
        );
        handle
            .link()
            .del(link.header.index)
            .execute()
            .await
            .map_err(|e| DataplaneError::netlink(format!("deleting {VXLAN_DEVICE}"), e))?;
        report.removed += 1;
        existing = None;
    }
    let link = match existing {
        Some(link) => link,
        None => {
            let created = handle
                .link()
                .add(
                    LinkVxlan::new(VXLAN_DEVICE, spec.vni)
                        .dev(parent)
                        .port(spec.port)
                        .local(spec.local)
                        .learning(false)
                        .mtu(spec.mtu)
                        .address(spec.mac.to_vec())
                        .build(),
                )
                .execute()
                .await;
            if let Err(error) = created {
                report.fail(VXLAN_DEVICE, format!("creating it failed: {error}"));
                return Ok(report);
            }
            report.added += 1;
            match get_link(handle, VXLAN_DEVICE).await? {
                Some(link) => link,
                None => {
                    report.fail(VXLAN_DEVICE, "it vanished right after it was created");
                    return Ok(report);
                }
            }
        }
    };
    if mac_of(&link) == Some(&spec.mac[..]) {
        report.unchanged += 1;
    } else {
        match handle
            .link()
            .set(
                LinkUnspec::new_with_index(link.header.index)
                    .address(spec.mac.to_vec())
                    .build(),
            )
            .execute()
            .await
        {
            Ok(()) => report.replaced += 1,
            Err(error) => report.fail(
                format!("{VXLAN_DEVICE} MAC"),
                format!("setting it failed: {error}"),
            ),
        }
    }
    report.merge(set_mtu_and_up(handle, &link, VXLAN_DEVICE, spec.mtu).await);
    report.merge(only_address(handle, link.header.index, VXLAN_DEVICE, spec.address).await?);
    Ok(report)
}

/// Deletes `vxlan.tortie` when no pool uses VXLAN any more.
pub(crate) async fn remove_vxlan(
    handle: &Handle,
    links: &LinkIndex,
) -> Result<Report, DataplaneError> {
    let mut report = Report::default();
    if let Some(index) = links.index(VXLAN_DEVICE) {
        match handle.link().del(index).execute().await {
            Ok(()) => report.removed += 1,
            // Gone meanwhile: what was wanted.
            Err(error) if errno(&error) == Some(libc::ENODEV) => {}
            Err(error) => report.fail(VXLAN_DEVICE, format!("deleting it failed: {error}")),
        }
    }
    Ok(report)
}

fn vxlan_matches(link: &LinkMessage, spec: &VxlanSpec, parent: u32) -> bool {
    if kind_of(link) != Some(InfoKind::Vxlan) {
        return false;
    }
    let data = vxlan_data(link);
    let has = |wanted: &InfoVxlan| data.iter().any(|attribute| attribute == wanted);
    has(&InfoVxlan::Id(spec.vni))
        && has(&InfoVxlan::Port(spec.port))
        && has(&InfoVxlan::Local(spec.local))
        && has(&InfoVxlan::Link(parent))
        && has(&InfoVxlan::Learning(false))
}

async fn set_mtu_and_up(handle: &Handle, link: &LinkMessage, name: &str, mtu: u32) -> Report {
    let mut report = Report::default();
    if mtu_of(link) == Some(mtu) {
        report.unchanged += 1;
    } else {
        match handle
            .link()
            .set(
                LinkUnspec::new_with_index(link.header.index)
                    .mtu(mtu)
                    .build(),
            )
            .execute()
            .await
        {
            Ok(()) => report.replaced += 1,
            Err(error) => report.fail(
                format!("{name} MTU {mtu}"),
                format!("setting it failed: {error}"),
            ),
        }
    }
    if link.header.flags.contains(LinkFlags::Up) {
        report.unchanged += 1;
    } else {
        match handle
            .link()
            .set(LinkUnspec::new_with_index(link.header.index).up().build())
            .execute()
            .await
        {
            Ok(()) => report.replaced += 1,
            Err(error) => report.fail(
                format!("{name} up"),
                format!("setting it up failed: {error}"),
            ),
        }
    }
    report
}

/// Makes `address`/32 the only IPv4 address of the link. IPv6 addresses are left alone:
/// the kernel gives an Ethernet-like device (vxlan) a link-local one of its own.
async fn only_address(
    handle: &Handle,
    index: u32,
    name: &str,
    address: Ipv4Addr,
) -> Result<Report, DataplaneError> {
    let mut report = Report::default();
    let present: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| DataplaneError::netlink(format!("listing the addresses of {name}"), e))?;
    let mut found = false;
    for message in present {
        if message.header.family != AddressFamily::Inet || message.header.index != index {
            continue;
        }
        let local = message
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
        let prefix_len = message.header.prefix_len;
        if local == Some(IpAddr::V4(address)) && prefix_len == 32 && !found {
            found = true;
            report.unchanged += 1;
            continue;
        }
        let shown = local.map_or_else(|| "?".to_string(), |ip| format!("{ip}/{prefix_len}"));
        match handle.address().del(message).execute().await {
            Ok(()) => report.removed += 1,
            Err(error) => report.fail(
                format!("address {shown} on {name}"),
                format!("removing it failed: {error}"),
            ),
        }
    }
    if !found {
        match handle
            .address()
            .add(index, IpAddr::V4(address), 32)
            .execute()
            .await
        {
            Ok(()) => report.added += 1,
            Err(error) => report.fail(
                format!("address {address}/32 on {name}"),
                format!("adding it failed: {error}"),
            ),
        }
    }
    Ok(report)
}

pub(crate) async fn get_link(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, DataplaneError> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(error) if errno(&error) == Some(libc::ENODEV) => Ok(None),
        Err(error) => Err(DataplaneError::netlink(
            format!("looking up link {name}"),
            error,
        )),
    }
}

/// The errno of a kernel NACK, if `error` is one.
pub(crate) fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

fn name_of(link: &LinkMessage) -> Option<String> {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
}

fn mtu_of(link: &LinkMessage) -> Option<u32> {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
}

fn mac_of(link: &LinkMessage) -> Option<&[u8]> {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Address(mac) => Some(mac.as_slice()),
            _ => None,
        })
}

fn link_info(link: &LinkMessage) -> &[LinkInfo] {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::LinkInfo(info) => Some(info.as_slice()),
            _ => None,
        })
        .unwrap_or(&[])
}

fn kind_of(link: &LinkMessage) -> Option<InfoKind> {
    link_info(link).iter().find_map(|info| match info {
        LinkInfo::Kind(kind) => Some(kind.clone()),
        _ => None,
    })
}

fn vxlan_data(link: &LinkMessage) -> &[InfoVxlan] {
    link_info(link)
        .iter()
        .find_map(|info| match info {
            LinkInfo::Data(InfoData::Vxlan(data)) => Some(data.as_slice()),
            _ => None,
        })
        .unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_mac_is_0x66_and_the_first_five_bytes_of_sha1_of_the_node_name() {
        // Computed independently: `printf %s node-1 | sha1sum` prints
        // b36828398e513ae808e0c63582fb5dba635d7d15.
        let mac = vxlan_mac("node-1");
        assert_eq!(mac, [0x66, 0xb3, 0x68, 0x28, 0x39, 0x8e]);
        // Locally administered, unicast.
        assert_eq!(mac[0] & 0b11, 0b10);
        assert_ne!(vxlan_mac("node-2"), mac);
    }
}
