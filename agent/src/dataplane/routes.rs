//! Kernel routes to and from [`RouteTarget`]s: reading tortie's routes (`proto tortie`, main
//! table), the diff against what is wanted, and applying it through the pipelined sender.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::batch::{Refusal, Sender};
use super::links::LinkIndex;
use super::{DataplaneError, Device, ROUTE_PROTOCOL, Report, RouteTarget};

/// The metric the kernel gives an IPv6 route added without one (IP6_RT_PRIO_USER); IPv4
/// keeps 0.
const IPV6_DEFAULT_METRIC: u32 = 1024;

/// One `proto tortie` route in the kernel.
#[derive(Debug, Clone)]
pub(crate) struct KernelRoute {
    /// Its target, when it has a shape tortie installs (one next hop, no encapsulation).
    pub target: Option<RouteTarget>,
    /// Whether it has the metric and TOS tortie's routes have (none): only such a route is
    /// what a replace of the prefix replaces.
    pub default_slot: bool,
    /// Its identity (header, destination, metric, table) for deleting exactly it.
    identity: RouteMessage,
}

impl KernelRoute {
    pub(crate) fn is(&self, target: &RouteTarget) -> bool {
        self.default_slot && self.target.as_ref() == Some(target)
    }
}

/// Reads every `proto tortie` route of the main table, IPv4 and IPv6, except pods' routes
/// ([`RouteTarget::is_pod_route`]): those belong to the CNI plugin, not to the reconciler.
pub(crate) async fn dump(
    handle: &Handle,
    links: &LinkIndex,
) -> Result<BTreeMap<IpNet, Vec<KernelRoute>>, DataplaneError> {
    let mut routes: BTreeMap<IpNet, Vec<KernelRoute>> = BTreeMap::new();
    let requests = [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ];
    for request in requests {
        let family = request.header.address_family;
        let mut stream = handle.route().get(request).execute();
        while let Some(message) = stream
            .try_next()
            .await
            .map_err(|e| DataplaneError::netlink(format!("listing {family:?} routes"), e))?
        {
            if let Some((prefix, route)) = parse(message, links) {
                if route.target.as_ref().is_some_and(RouteTarget::is_pod_route) {
                    continue;
                }
                routes.entry(prefix).or_default().push(route);
            }
        }
    }
    Ok(routes)
}

/// The routes of `in_kernel` that a replace of their prefix would replace, with their
/// targets: what [`super::Dataplane`] believes installed.
pub(crate) fn installed(
    in_kernel: &BTreeMap<IpNet, Vec<KernelRoute>>,
) -> HashMap<IpNet, RouteTarget> {
    in_kernel
        .iter()
        .filter_map(|(prefix, routes)| {
            routes
                .iter()
                .find(|route| route.default_slot)
                .and_then(|route| route.target.clone())
                .map(|target| (*prefix, target))
        })
        .collect()
}

/// A `proto tortie` route of the main table as a prefix and [`KernelRoute`]; `None` for
/// any other route.
fn parse(message: RouteMessage, links: &LinkIndex) -> Option<(IpNet, KernelRoute)> {
    let header = &message.header;
    if header.protocol != RouteProtocol::from(ROUTE_PROTOCOL) {
        return None;
    }
    let mut table = u32::from(header.table);
    let mut destination = None;
    let mut gateway = None;
    let mut output = None;
    let mut metric = 0;
    let mut single_hop = true;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(id) => table = *id,
            RouteAttribute::Destination(address) => destination = ip_of(address),
            RouteAttribute::Gateway(address) => gateway = ip_of(address),
            RouteAttribute::Via(RouteVia::Inet6(address)) => gateway = Some(IpAddr::V6(*address)),
            RouteAttribute::Via(RouteVia::Inet(address)) => gateway = Some(IpAddr::V4(*address)),
            RouteAttribute::Oif(index) => output = Some(*index),
            RouteAttribute::Priority(value) => metric = *value,
            RouteAttribute::MultiPath(_) | RouteAttribute::Encap(_) | RouteAttribute::NhId(_) => {
                single_hop = false
            }
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let unspecified = match header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let prefix = IpNet::new(
        destination.unwrap_or(unspecified),
        header.destination_prefix_length,
    )
    .ok()?;
    let default_metric = match prefix {
        IpNet::V4(_) => metric == 0,
        IpNet::V6(_) => metric == 0 || metric == IPV6_DEFAULT_METRIC,
    };
    let device = |index: u32| {
        Device::from_name(
            links
                .name(index)
                .map_or_else(|| format!("if{index}"), str::to_string)
                .as_str(),
        )
    };
    let target = match (header.kind, gateway, output) {
        _ if !single_hop => None,
        (RouteType::BlackHole, _, _) => Some(RouteTarget::Blackhole),
        (RouteType::Unicast, Some(gateway), Some(index)) => Some(RouteTarget::Via {
            gateway,
            device: device(index),
            onlink: header.flags.contains(RouteFlags::Onlink),
        }),
        // IPv6 routes have no scope (the kernel reports every one as universe): a direct
        // IPv6 route is what `scope link` is for IPv4.
        (RouteType::Unicast, None, Some(index))
            if header.scope == RouteScope::Link || matches!(prefix, IpNet::V6(_)) =>
        {
            Some(RouteTarget::Link {
                device: device(index),
            })
        }
        _ => None,
    };
    let mut identity = RouteMessage::default();
    identity.header = message.header.clone();
    identity.header.flags = RouteFlags::empty();
    identity.attributes = message
        .attributes
        .iter()
        .filter(|attribute| {
            matches!(
                attribute,
                RouteAttribute::Destination(_)
                    | RouteAttribute::Priority(_)
                    | RouteAttribute::Table(_)
            )
        })
        .cloned()
        .collect();
    Some((
        prefix,
        KernelRoute {
            target,
            default_slot: default_metric && header.tos == 0,
            identity,
        },
    ))
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A route to delete.
#[derive(Debug, Clone)]
pub(crate) enum Removal {
    /// The `proto tortie` route of this prefix, whatever it is (a BGP withdrawal).
    ByPrefix(IpNet),
    /// Exactly this kernel route (a stale one, or an extra one beside a wanted route).
    Exact(IpNet, RouteMessage),
}

/// What to change, in the order it is applied: removals, replacements, additions.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub remove: Vec<Removal>,
    pub replace: Vec<(IpNet, RouteTarget)>,
    pub add: Vec<(IpNet, RouteTarget)>,
    /// Already as wanted.
    pub unchanged: usize,
    pub keep: Vec<(IpNet, RouteTarget)>,
}

/// What must change so that the kernel's `proto tortie` routes are exactly `desired`:
/// a wanted route already there as wanted is kept as it is (the same kernel object, so no
/// packet sees a gap); one there in another form is replaced in place; the rest are added;
/// every other `proto tortie` route is deleted.
pub(crate) fn diff(
    in_kernel: &BTreeMap<IpNet, Vec<KernelRoute>>,
    desired: &BTreeMap<IpNet, RouteTarget>,
) -> Changes {
    let mut changes = Changes::default();
    // The kernel keys a route by its network (it refuses host bits), so a wanted prefix
    // written with host bits (198.18.0.5/26) is the same route as its network's.
    let desired: BTreeMap<IpNet, RouteTarget> = desired
        .iter()
        .map(|(prefix, target)| (prefix.trunc(), target.canonical()))
        .collect();
    for (prefix, target) in &desired {
        let target = target.clone();
        let present = in_kernel.get(prefix).map(Vec::as_slice).unwrap_or(&[]);
        let keeper = present.iter().position(|route| route.is(&target));
        let replaceable = present.iter().position(|route| route.default_slot);
        for (position, route) in present.iter().enumerate() {
            if Some(position) != keeper.or(replaceable) {
                changes
                    .remove
                    .push(Removal::Exact(*prefix, route.identity.clone()));
            }
        }
        if keeper.is_some() {
            changes.unchanged += 1;
            changes.keep.push((*prefix, target));
        } else if replaceable.is_some() {
            changes.replace.push((*prefix, target));
        } else {
            changes.add.push((*prefix, target));
        }
    }
    for (prefix, routes) in in_kernel {
        if !desired.contains_key(prefix) {
            for route in routes {
                changes
                    .remove
                    .push(Removal::Exact(*prefix, route.identity.clone()));
            }
        }
    }
    changes
}

/// The result of [`apply`]: the report, and the additions the kernel refused because the
/// prefix was taken (EEXIST), for the caller to look into.
pub(crate) struct Applied {
    pub report: Report,
    pub conflicts: Vec<(IpNet, RouteTarget)>,
    /// Additions and replacements the kernel refused with ENODEV: the device's index
    /// changed since it was read (a device deleted and made again), for the caller to
    /// retry with fresh indexes.
    pub stale_device: Vec<(IpNet, RouteTarget, bool)>,
}

enum Item {
    Remove { prefix: IpNet, by_prefix: bool },
    Replace(IpNet, RouteTarget),
    Add(IpNet, RouteTarget),
}

/// Sends `changes` through the pipelined sender and keeps `installed` up to date.
pub(crate) async fn apply(
    sender: &mut Sender,
    links: &LinkIndex,
    changes: Changes,
    installed: &mut HashMap<IpNet, RouteTarget>,
) -> Result<Applied, DataplaneError> {
    let mut report = Report {
        unchanged: changes.unchanged,
        ..Report::default()
    };
    installed.extend(changes.keep);
    let mut items = Vec::new();
    let mut messages = Vec::new();
    for removal in changes.remove {
        let (prefix, message, by_prefix) = match removal {
            Removal::ByPrefix(prefix) => (prefix, removal_by_prefix(prefix), true),
            Removal::Exact(prefix, message) => (prefix, message, false),
        };
        messages.push(request(RouteNetlinkMessage::DelRoute(message), 0));
        items.push(Item::Remove { prefix, by_prefix });
    }
    let upserts = changes
        .replace
        .into_iter()
        .map(|(prefix, target)| (true, prefix, target))
        .chain(
            changes
                .add
                .into_iter()
                .map(|(prefix, target)| (false, prefix, target)),
        );
    for (replace, prefix, target) in upserts {
        match route_message(prefix, &target, links) {
            Ok(message) => {
                // Replace only a route known to be ours; add anything else exclusively,
                // so a route of another protocol holding the prefix is refused (EEXIST)
                // rather than overwritten: NLM_F_REPLACE matches by prefix, TOS and
                // metric, whatever the protocol (fib_table_insert).
                let flags = if replace {
                    NLM_F_CREATE | NLM_F_REPLACE
                } else {
                    NLM_F_CREATE | NLM_F_EXCL
                };
                messages.push(request(RouteNetlinkMessage::NewRoute(message), flags));
                items.push(if replace {
                    Item::Replace(prefix, target)
                } else {
                    Item::Add(prefix, target)
                });
            }
            Err(why) => {
                installed.remove(&prefix);
                report.fail(format!("route {prefix} {target}"), why);
            }
        }
    }
    if messages.is_empty() {
        return Ok(Applied {
            report,
            conflicts: Vec::new(),
            stale_device: Vec::new(),
        });
    }
    let outcomes = sender.send_all(messages, "changing routes").await?;
    let mut conflicts = Vec::new();
    let mut stale_device = Vec::new();
    for (item, outcome) in items.into_iter().zip(outcomes) {
        match (item, outcome) {
            (Item::Remove { prefix, by_prefix }, Ok(())) => {
                report.removed += 1;
                if by_prefix {
                    installed.remove(&prefix);
                }
                tracing::debug!(%prefix, "route removed");
            }
            (Item::Remove { prefix, by_prefix }, Err(Refusal { errno, .. }))
                if errno == libc::ESRCH =>
            {
                // Already gone: what was wanted.
                report.unchanged += 1;
                if by_prefix {
                    installed.remove(&prefix);
                }
            }
            (Item::Remove { prefix, .. }, Err(refusal)) => {
                report.fail(
                    format!("route {prefix}"),
                    format!("deleting it failed: {refusal}"),
                );
            }
            (Item::Replace(prefix, target), Ok(())) => {
                report.replaced += 1;
                tracing::debug!(%prefix, %target, "route replaced");
                installed.insert(prefix, target);
            }
            (Item::Add(prefix, target), Ok(())) => {
                report.added += 1;
                tracing::debug!(%prefix, %target, "route added");
                installed.insert(prefix, target);
            }
            (Item::Add(prefix, target), Err(Refusal { errno, .. })) if errno == libc::EEXIST => {
                conflicts.push((prefix, target));
            }
            (Item::Replace(prefix, target), Err(Refusal { errno, .. }))
                if errno == libc::ENODEV =>
            {
                stale_device.push((prefix, target, true));
            }
            (Item::Add(prefix, target), Err(Refusal { errno, .. })) if errno == libc::ENODEV => {
                stale_device.push((prefix, target, false));
            }
            (Item::Replace(prefix, target) | Item::Add(prefix, target), Err(refusal)) => {
                installed.remove(&prefix);
                report.fail(format!("route {prefix} {target}"), refusal);
            }
        }
    }
    Ok(Applied {
        report,
        conflicts,
        stale_device,
    })
}

fn request(message: RouteNetlinkMessage, flags: u16) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut request = NetlinkMessage::from(message);
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    request
}

/// Deletes the `proto tortie` route of `prefix` in the main table, whatever its target:
/// the kernel matches a delete on the fields set (`fib_table_delete`, `ip6_route_del`), so
/// protocol 75 keeps it off other protocols' routes, and scope "nowhere" means any scope.
fn removal_by_prefix(prefix: IpNet) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = match prefix {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    message.header.destination_prefix_length = prefix.prefix_len();
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    message.header.scope = RouteScope::NoWhere;
    message.header.kind = RouteType::Unspec;
    message
        .attributes
        .push(RouteAttribute::Destination(prefix.network().into()));
    message
}

/// The request for `prefix` → `target`, `proto tortie` in the main table.
pub(crate) fn route_message(
    prefix: IpNet,
    target: &RouteTarget,
    links: &LinkIndex,
) -> Result<RouteMessage, String> {
    let builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(prefix.network(), prefix.prefix_len())
        .map_err(|e| e.to_string())?
        .table_id(u32::from(RouteHeader::RT_TABLE_MAIN))
        .protocol(RouteProtocol::from(ROUTE_PROTOCOL));
    let index = |device: &Device| {
        links.index(device.name()).ok_or_else(|| {
            format!(
                "device {device} does not exist in this network namespace{}",
                match device {
                    Device::Tunl0 => " (is IPIP set up? see tunl0's failure)",
                    Device::Vxlan => " (is VXLAN set up? see vxlan.tortie's failure)",
                    Device::Named(_) => "",
                }
            )
        })
    };
    let builder = match target {
        RouteTarget::Blackhole => builder.kind(RouteType::BlackHole),
        RouteTarget::Via {
            gateway,
            device,
            onlink,
        } => {
            let builder = builder
                .gateway(*gateway)
                .map_err(|e| e.to_string())?
                .output_interface(index(device)?);
            if *onlink { builder.onlink() } else { builder }
        }
        RouteTarget::Link { device } => builder
            .output_interface(index(device)?)
            .scope(RouteScope::Link),
    };
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_route(target: Option<RouteTarget>, metric: u32) -> KernelRoute {
        KernelRoute {
            target,
            default_slot: metric == 0,
            identity: RouteMessage::default(),
        }
    }

    fn via_eth0(gateway: &str) -> RouteTarget {
        RouteTarget::Via {
            gateway: gateway.parse().unwrap(),
            device: Device::Named("eth0".to_string()),
            onlink: false,
        }
    }

    #[test]
    fn keeps_what_is_wanted_replaces_what_differs_adds_the_rest_and_removes_stale() {
        let kept: IpNet = "198.18.1.0/26".parse().unwrap();
        let changed: IpNet = "198.18.2.0/26".parse().unwrap();
        let new: IpNet = "198.18.3.0/26".parse().unwrap();
        let stale: IpNet = "198.18.4.0/26".parse().unwrap();
        let in_kernel = BTreeMap::from([
            (kept, vec![kernel_route(Some(RouteTarget::Blackhole), 0)]),
            (
                changed,
                vec![kernel_route(Some(via_eth0("198.51.100.2")), 0)],
            ),
            (stale, vec![kernel_route(Some(via_eth0("198.51.100.3")), 0)]),
        ]);
        let desired = BTreeMap::from([
            (kept, RouteTarget::Blackhole),
            (changed, via_eth0("198.51.100.9")),
            (new, RouteTarget::Blackhole),
        ]);
        let changes = diff(&in_kernel, &desired);
        assert_eq!(changes.unchanged, 1);
        assert_eq!(changes.replace, vec![(changed, via_eth0("198.51.100.9"))]);
        assert_eq!(changes.add, vec![(new, RouteTarget::Blackhole)]);
        assert!(
            matches!(changes.remove.as_slice(), [Removal::Exact(prefix, _)] if *prefix == stale)
        );
    }

    #[test]
    fn a_wanted_route_at_another_metric_is_removed_and_added_afresh() {
        let prefix: IpNet = "198.18.1.0/26".parse().unwrap();
        let in_kernel = BTreeMap::from([(
            prefix,
            vec![kernel_route(Some(RouteTarget::Blackhole), 100)],
        )]);
        let desired = BTreeMap::from([(prefix, RouteTarget::Blackhole)]);
        let changes = diff(&in_kernel, &desired);
        assert_eq!(changes.unchanged, 0);
        assert_eq!(changes.remove.len(), 1);
        assert_eq!(changes.add, vec![(prefix, RouteTarget::Blackhole)]);
    }

    #[test]
    fn a_wanted_prefix_with_host_bits_is_its_network() {
        let network: IpNet = "198.18.1.0/26".parse().unwrap();
        let in_kernel =
            BTreeMap::from([(network, vec![kernel_route(Some(RouteTarget::Blackhole), 0)])]);
        let desired = BTreeMap::from([("198.18.1.5/26".parse().unwrap(), RouteTarget::Blackhole)]);
        let changes = diff(&in_kernel, &desired);
        assert_eq!(changes.unchanged, 1);
        assert!(changes.remove.is_empty() && changes.add.is_empty());
    }

    #[test]
    fn devices_compare_by_name() {
        let prefix: IpNet = "198.18.1.0/26".parse().unwrap();
        let tunnelled = |device| RouteTarget::Via {
            gateway: "198.51.100.2".parse().unwrap(),
            device,
            onlink: true,
        };
        let in_kernel = BTreeMap::from([(
            prefix,
            vec![kernel_route(Some(tunnelled(Device::Tunl0)), 0)],
        )]);
        let desired = BTreeMap::from([(prefix, tunnelled(Device::Named("tunl0".to_string())))]);
        assert_eq!(diff(&in_kernel, &desired).unchanged, 1);
    }
}
