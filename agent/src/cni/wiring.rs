//! The pod's veth pair, its addresses and routes, over rtnetlink: made (ADD), removed (DEL)
//! and inspected (CHECK).
//!
//! The host side is `cali` + 11 hex digits, MAC `ee:ee:ee:ee:ee:ee`, proxy ARP on, and
//! carries one `scope link proto tortie` route per pod address. The pod side is created
//! directly inside the pod's netns (the netns fd rides on the peer's link message): moving
//! a link between namespaces afterwards takes `rtnl_lock` and an `rcu_barrier`, which is
//! what made other plugins slow under bursts of pod starts (NOTES.md). The pod sees its
//! /32 (/128), `169.254.1.1 dev eth0 scope link` and a default route through it, which the
//! host side answers by proxy ARP, and for which the pod also gets a permanent neighbour
//! entry to `ee:ee:ee:ee:ee:ee` (IPv6: through the host side's link-local address, which
//! its fixed MAC makes `fe80::ecee:eeff:feee:eeee`).
//!
//! A netlink socket belongs to the network namespace of the thread that opened it, so work
//! inside the pod's netns runs on a thread of its own that enters the netns first and ends
//! with it; the process's other threads stay in the host's.

use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use sha1::{Digest, Sha1};

use super::spec::{CniError, ErrorCode};
use crate::dataplane::{POD_LINK_PREFIX, ROUTE_PROTOCOL};

/// The host side's MAC: every pod sees the same gateway MAC (Calico's).
pub const HOST_MAC: [u8; 6] = [0xee; 6];
/// The pod's IPv4 gateway: link-local, answered by proxy ARP on the host side.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pod's IPv6 gateway: the host side's link-local address (EUI-64 of [`HOST_MAC`]).
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// The host side's name: `cali` and the first 11 hex digits of sha1("<namespace>.<pod>"),
/// or of the container ID when the runtime names no pod (Calico's rule, so the name is
/// stable across a pod's sandboxes and fits IFNAMSIZ).
pub fn host_link_name(pod: Option<(&str, &str)>, container_id: &str) -> String {
    let seed = match pod {
        Some((namespace, name)) => format!("{namespace}.{name}"),
        None => container_id.to_string(),
    };
    let digest = Sha1::digest(seed.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{POD_LINK_PREFIX}{}", &hex[..11])
}

/// One pod's attachment.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    pub host_link: &'a str,
    pub ifname: &'a str,
    pub netns: &'a Path,
    pub addresses: &'a [IpAddr],
    pub mtu: u32,
}

/// What ADD made: the pod side's MAC, for the result.
#[derive(Debug, Clone)]
pub struct Wired {
    pub pod_mac: String,
}

fn io_error(what: impl Into<String>, error: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::Io, what, error.to_string())
}

/// The pod's netns, opened (a missing one is the spec's "container unknown").
pub fn open_netns(path: &Path) -> Result<File, CniError> {
    File::open(path).map_err(|e| {
        CniError::new(
            ErrorCode::ContainerUnknown,
            format!("cannot open the pod's network namespace {}", path.display()),
            e.to_string(),
        )
    })
}

/// Runs `work` with a netlink handle of the calling thread's namespace, on a runtime of its
/// own (the plugin is a short-lived process; one thread is all it needs).
fn with_netlink<T, F, Fut>(work: F) -> Result<T, CniError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, CniError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_error("cannot start the netlink runtime", e))?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| io_error("cannot open a netlink socket", e))?;
        let connection = tokio::spawn(connection);
        let result = work(handle).await;
        connection.abort();
        result
    })
}

/// Runs `work` on a thread that entered `netns` first (see the module docs).
fn in_netns<T: Send, F>(netns: &File, work: F) -> Result<T, CniError>
where
    F: FnOnce() -> Result<T, CniError> + Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on a valid fd changes this thread's netns only; the thread
                // ends when the work does.
                let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                if entered != 0 {
                    return Err(io_error(
                        "cannot enter the pod's network namespace",
                        std::io::Error::last_os_error(),
                    ));
                }
                work()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(CniError::new(
                    ErrorCode::Io,
                    "the pod network namespace's worker panicked",
                    "",
                ))
            })
    })
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, CniError> {
    match handle
        .link()
        .get()
        .match_name(name)
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(io_error(format!("cannot look up link {name}"), e)),
    }
}

fn mac_of(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Address(bytes) => Some(format_mac(bytes)),
            _ => None,
        })
        .unwrap_or_default()
}

fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn host_len(address: IpAddr) -> u8 {
    if address.is_ipv4() { 32 } else { 128 }
}

fn host_route(address: IpAddr, index: u32) -> Result<RouteMessage, CniError> {
    Ok(RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(address, host_len(address))
        .map_err(|e| io_error(format!("route to {address}"), e))?
        .output_interface(index)
        .scope(RouteScope::Link)
        .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
        .build())
}

/// Writes the host side's sysctls (in the plugin's own netns, the host's).
fn host_sysctls(host_link: &str, addresses: &[IpAddr]) -> Result<(), CniError> {
    let mut settings = vec![
        (format!("ipv4/conf/{host_link}/proxy_arp"), "1"),
        (format!("ipv4/conf/{host_link}/forwarding"), "1"),
        (format!("ipv4/conf/{host_link}/route_localnet"), "1"),
        (format!("ipv4/neigh/{host_link}/proxy_delay"), "0"),
    ];
    if addresses.iter().any(IpAddr::is_ipv6) {
        settings.push((format!("ipv6/conf/{host_link}/proxy_ndp"), "1"));
        settings.push((format!("ipv6/conf/{host_link}/forwarding"), "1"));
    }
    for (key, value) in settings {
        let path = format!("/proc/sys/net/{key}");
        std::fs::write(&path, value).map_err(|e| io_error(format!("cannot set {path}"), e))?;
    }
    Ok(())
}

/// Makes the pod's veth, addresses and routes. On failure the caller calls [`unwire`].
pub fn wire(attachment: &Attachment, netns: &File) -> Result<Wired, CniError> {
    let host_link = attachment.host_link;
    with_netlink(|handle| async move {
        // A host side of the same name is a leftover of this pod's earlier sandbox (the
        // name is derived from the pod): it goes, with its routes.
        if let Some(stale) = link_by_name(&handle, host_link).await? {
            handle
                .link()
                .del(stale.header.index)
                .execute()
                .await
                .map_err(|e| io_error(format!("cannot delete the stale {host_link}"), e))?;
        }
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(attachment.ifname.to_string())
            .mtu(attachment.mtu)
            .setns_by_fd(netns.as_raw_fd())
            // Not up here: asking for IFF_UP on a peer made in another netns fails with
            // ENOTCONN (seen on 6.x kernels, `ip link add … peer … up netns …` too); the
            // pod side is brought up from inside the netns below.
            .build();
        let veth = LinkVeth::new(host_link, attachment.ifname)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .mtu(attachment.mtu)
            .address(HOST_MAC.to_vec())
            .up()
            .build();
        handle.link().add(veth).execute().await.map_err(|e| {
            io_error(
                format!(
                    "cannot create the veth pair {host_link} / {} (in {})",
                    attachment.ifname,
                    attachment.netns.display()
                ),
                e,
            )
        })?;
        host_sysctls(host_link, attachment.addresses)?;
        let index = link_by_name(&handle, host_link)
            .await?
            .ok_or_else(|| io_error(format!("{host_link} vanished after it was made"), ""))?
            .header
            .index;
        for address in attachment.addresses {
            handle
                .route()
                .add(host_route(*address, index)?)
                .replace()
                .execute()
                .await
                .map_err(|e| {
                    io_error(format!("cannot add the route {address} dev {host_link}"), e)
                })?;
        }
        Ok(())
    })?;
    in_netns(netns, || {
        with_netlink(|handle| async move { wire_pod_side(&handle, attachment).await })
    })
}

async fn wire_pod_side(handle: &Handle, attachment: &Attachment<'_>) -> Result<Wired, CniError> {
    let ifname = attachment.ifname;
    let link = link_by_name(handle, ifname).await?.ok_or_else(|| {
        io_error(
            format!("{ifname} is not in the pod's netns after ADD made it"),
            "",
        )
    })?;
    let index = link.header.index;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| io_error(format!("cannot bring {ifname} up"), e))?;
    for address in attachment.addresses {
        let mut request = handle.address().add(index, *address, host_len(*address));
        if address.is_ipv6() {
            // No duplicate address detection: IPAM made the /128 unique, and DAD would keep
            // it "tentative" (unusable) for a second after ADD returns.
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request
            .execute()
            .await
            .map_err(|e| io_error(format!("cannot add {address} to {ifname}"), e))?;
    }
    if attachment.addresses.iter().any(IpAddr::is_ipv4) {
        // The gateway's MAC, permanent: the pod never has to ARP for 169.254.1.1, so it
        // does not depend on the host's proxy ARP, which answers only when the host has a
        // route to 169.254.1.1 (a default route) out of another interface.
        handle
            .neighbours()
            .add(index, GATEWAY_V4.into())
            .link_layer_address(&HOST_MAC)
            .state(NeighbourState::Permanent)
            .execute()
            .await
            .map_err(|e| {
                io_error(
                    format!("cannot add the neighbour {GATEWAY_V4} on {ifname}"),
                    e,
                )
            })?;
    }
    for route in pod_routes(attachment.addresses, index)? {
        handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(|e| io_error(format!("cannot add the pod's routes on {ifname}"), e))?;
    }
    Ok(Wired {
        pod_mac: mac_of(&link),
    })
}

/// The pod's routes: IPv4's gateway on the link, then the defaults through the gateways.
fn pod_routes(addresses: &[IpAddr], index: u32) -> Result<Vec<RouteMessage>, CniError> {
    let mut routes = Vec::new();
    if addresses.iter().any(IpAddr::is_ipv4) {
        routes.push(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(GATEWAY_V4, 32)
                .output_interface(index)
                .scope(RouteScope::Link)
                .build(),
        );
        routes.push(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(GATEWAY_V4)
                .output_interface(index)
                .build(),
        );
    }
    if addresses.iter().any(IpAddr::is_ipv6) {
        routes.push(
            RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(GATEWAY_V6)
                .output_interface(index)
                .build(),
        );
    }
    Ok(routes)
}

/// Deletes the host side (the kernel deletes its peer and its routes with it); a missing
/// link is fine.
pub fn unwire(host_link: &str) -> Result<(), CniError> {
    with_netlink(|handle| async move {
        let Some(link) = link_by_name(&handle, host_link).await? else {
            return Ok(());
        };
        match handle.link().del(link.header.index).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
            Err(e) => Err(io_error(format!("cannot delete {host_link}"), e)),
        }
    })
}

/// A route as CHECK compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeenRoute {
    destination: Option<IpAddr>,
    prefix_len: u8,
    gateway: Option<IpAddr>,
    output: Option<u32>,
    scope: RouteScope,
    protocol: RouteProtocol,
}

async fn dump_routes(handle: &Handle) -> Result<Vec<SeenRoute>, CniError> {
    let mut seen = Vec::new();
    for request in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut stream = handle.route().get(request).execute();
        while let Some(message) = stream
            .try_next()
            .await
            .map_err(|e| io_error("cannot list routes", e))?
        {
            let mut route = SeenRoute {
                destination: None,
                prefix_len: message.header.destination_prefix_length,
                gateway: None,
                output: None,
                scope: message.header.scope,
                protocol: message.header.protocol,
            };
            for attribute in &message.attributes {
                match attribute {
                    RouteAttribute::Destination(address) => route.destination = ip_of(address),
                    RouteAttribute::Gateway(address) => route.gateway = ip_of(address),
                    RouteAttribute::Oif(index) => route.output = Some(*index),
                    _ => {}
                }
            }
            seen.push(route);
        }
    }
    Ok(seen)
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// What is not as ADD left it, one line each; empty when all is well.
pub fn check(attachment: &Attachment, netns: &File) -> Result<Vec<String>, CniError> {
    let host_link = attachment.host_link;
    let mut problems = with_netlink(|handle| async move {
        let mut problems = Vec::new();
        let Some(link) = link_by_name(&handle, host_link).await? else {
            problems.push(format!("the host side {host_link} does not exist"));
            return Ok(problems);
        };
        let mac = mac_of(&link);
        if mac != format_mac(&HOST_MAC) {
            problems.push(format!(
                "{host_link} has MAC {mac}, not {}",
                format_mac(&HOST_MAC)
            ));
        }
        let index = link.header.index;
        let routes = dump_routes(&handle).await?;
        for address in attachment.addresses {
            let present = routes.iter().any(|route| {
                route.destination == Some(*address)
                    && route.prefix_len == host_len(*address)
                    && route.output == Some(index)
                    // IPv6 routes have no scope: the kernel reports universe for all.
                    && (route.scope == RouteScope::Link || address.is_ipv6())
                    && route.protocol == RouteProtocol::from(ROUTE_PROTOCOL)
            });
            if !present {
                let scope = if address.is_ipv4() { " scope link" } else { "" };
                problems.push(format!(
                    "the host route {address}/{} dev {host_link}{scope} proto tortie is missing",
                    host_len(*address)
                ));
            }
        }
        Ok(problems)
    })?;
    problems.extend(in_netns(netns, || {
        with_netlink(|handle| async move { check_pod_side(&handle, attachment).await })
    })?);
    Ok(problems)
}

async fn check_pod_side(
    handle: &Handle,
    attachment: &Attachment<'_>,
) -> Result<Vec<String>, CniError> {
    let ifname = attachment.ifname;
    let mut problems = Vec::new();
    let Some(link) = link_by_name(handle, ifname).await? else {
        problems.push(format!(
            "{ifname} does not exist in {}",
            attachment.netns.display()
        ));
        return Ok(problems);
    };
    let index = link.header.index;
    let mut present = Vec::new();
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(message) = stream
        .try_next()
        .await
        .map_err(|e| io_error(format!("cannot list {ifname}'s addresses"), e))?
    {
        for attribute in &message.attributes {
            if let netlink_packet_route::address::AddressAttribute::Address(address) = attribute {
                present.push((*address, message.header.prefix_len));
            }
        }
    }
    for address in attachment.addresses {
        if !present.contains(&(*address, host_len(*address))) {
            problems.push(format!(
                "{ifname} lacks its address {address}/{}",
                host_len(*address)
            ));
        }
    }
    let routes = dump_routes(handle).await?;
    let has = |destination: Option<IpAddr>, len: u8, gateway: Option<IpAddr>| {
        routes.iter().any(|route| {
            route.output == Some(index)
                && route.prefix_len == len
                && route.gateway == gateway
                && (route.destination == destination || (len == 0 && route.destination.is_none()))
        })
    };
    if attachment.addresses.iter().any(IpAddr::is_ipv4) {
        if !has(Some(GATEWAY_V4.into()), 32, None) {
            problems.push(format!(
                "the route {GATEWAY_V4} dev {ifname} scope link is missing"
            ));
        }
        if !has(None, 0, Some(GATEWAY_V4.into())) {
            problems.push(format!(
                "the default route via {GATEWAY_V4} dev {ifname} is missing"
            ));
        }
    }
    if attachment.addresses.iter().any(IpAddr::is_ipv6) && !has(None, 0, Some(GATEWAY_V6.into())) {
        problems.push(format!(
            "the IPv6 default route via {GATEWAY_V6} dev {ifname} is missing"
        ));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_link_names_follow_calicos_rule() {
        let name = host_link_name(Some(("default", "nginx")), "abc");
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("cali"));
        assert_eq!(name, host_link_name(Some(("default", "nginx")), "other"));
        assert_ne!(name, host_link_name(None, "abc"));
        // The digits are sha1("<namespace>.<pod>")'s, as Calico's.
        let digest = Sha1::digest(b"default.nginx");
        assert_eq!(&name[4..6], format!("{:02x}", digest[0]));
    }

    #[test]
    fn the_ipv6_gateway_is_the_host_macs_link_local() {
        assert_eq!(GATEWAY_V6.to_string(), "fe80::ecee:eeff:feee:eeee");
    }
}
