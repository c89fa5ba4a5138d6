//! The demo's network: which namespaces, links and addresses it has (a pure plan, tested
//! without root), the encapsulation that decides the pool's mode, and the netlink work that
//! makes the plan real. Nodes hang off a bridge in a switch namespace; with `crosssubnet`
//! there are two switches, one per subnet, and a router namespace between them.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, anyhow};
use clap::ValueEnum;
use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteProtocol, RouteType,
};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::netns;
use crate::dataplane::{IpipSupport, ROUTE_PROTOCOL};

/// The subnets the nodes live in, and the router's address in each.
pub const SUBNETS: [(Ipv4Addr, Ipv4Addr); 2] = [
    (
        Ipv4Addr::new(198, 51, 100, 0),
        Ipv4Addr::new(198, 51, 100, 1),
    ),
    (Ipv4Addr::new(203, 0, 113, 0), Ipv4Addr::new(203, 0, 113, 1)),
];
pub const SUBNET_LEN: u8 = 24;
/// The pod pool.
pub const POOL_CIDR: &str = "198.18.0.0/16";
/// Node addresses are `.10 + index`, so at most this many nodes.
pub const MAX_NODES: usize = 200;
const BRIDGE: &str = "br0";

/// How traffic between nodes is carried (`--encap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Encap {
    /// IPIP when the kernel has it, else VXLAN.
    Auto,
    Ipip,
    Vxlan,
    /// Two subnets joined by a router; encapsulated only between them.
    Crosssubnet,
    /// Plain routing (the nodes share one L2 segment).
    Never,
}

impl Encap {
    pub fn label(self) -> &'static str {
        match self {
            Encap::Auto => "auto",
            Encap::Ipip => "ipip",
            Encap::Vxlan => "vxlan",
            Encap::Crosssubnet => "crosssubnet",
            Encap::Never => "never",
        }
    }
}

/// What an encapsulation became on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMode {
    /// e.g. `vxlan`, or `crosssubnet (vxlan)`.
    pub label: String,
    /// TORTIE_IPV4POOL_* for every agent.
    pub env: Vec<(String, String)>,
    /// One line for the user when the choice was not what they might expect.
    pub notice: Option<String>,
}

/// The pool's settings for `encap`, given whether the kernel can make IPIP tunnels.
/// `--encap ipip` without IPIP is an error naming the fix.
pub fn pool_mode(encap: Encap, ipip: &IpipSupport) -> Result<PoolMode, String> {
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (format!("TORTIE_IPV4POOL_{k}"), v.to_string()))
            .collect()
    };
    let missing = match ipip {
        IpipSupport::Available => None,
        IpipSupport::Missing { reason } => Some(reason.as_str()),
    };
    let mode = |label: &str, pairs: &[(&str, &str)], notice: Option<String>| PoolMode {
        label: label.to_string(),
        env: env(pairs),
        notice,
    };
    Ok(match (encap, missing) {
        (Encap::Ipip, None) | (Encap::Auto, None) => {
            mode("ipip", &[("IPIP", "Always"), ("VXLAN", "Never")], None)
        }
        (Encap::Ipip, Some(reason)) => {
            return Err(format!(
                "--encap ipip needs IPIP tunnels, and this kernel cannot make them ({reason}); \
                 load the module with `modprobe ipip`, or use --encap vxlan"
            ));
        }
        (Encap::Auto, Some(reason)) => mode(
            "vxlan",
            &[("IPIP", "Never"), ("VXLAN", "Always")],
            Some(format!(
                "notice: using VXLAN: {}; `modprobe ipip` would allow IPIP",
                why_not(reason)
            )),
        ),
        (Encap::Vxlan, _) => mode("vxlan", &[("IPIP", "Never"), ("VXLAN", "Always")], None),
        (Encap::Never, _) => mode("never", &[("IPIP", "Never"), ("VXLAN", "Never")], None),
        (Encap::Crosssubnet, None) => mode(
            "crosssubnet (ipip)",
            &[("IPIP", "CrossSubnet"), ("VXLAN", "Never")],
            None,
        ),
        (Encap::Crosssubnet, Some(reason)) => mode(
            "crosssubnet (vxlan)",
            &[("IPIP", "Never"), ("VXLAN", "CrossSubnet")],
            Some(format!(
                "notice: crossing subnets through VXLAN: {}; `modprobe ipip` would allow IPIP",
                why_not(reason)
            )),
        ),
    })
}

/// The agent's reason for missing IPIP without its advice (which names agent settings): the
/// notice gives the demo's own.
fn why_not(reason: &str) -> &str {
    reason.split_once("; ").map_or(reason, |(why, _)| why)
}

/// Whether this kernel can make IPIP tunnels, asked in a throwaway namespace (the agent's
/// own probe: create an ipip device and see what the kernel says).
pub fn ipip_support() -> Result<IpipSupport> {
    netns::in_throwaway(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a netlink runtime")?;
        runtime
            .block_on(crate::dataplane::ipip_support())
            .map_err(|e| anyhow!("cannot probe for IPIP: {e}"))
    })
}

/// One node of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub index: usize,
    /// NODENAME: `node-<i>`.
    pub name: String,
    pub netns: String,
    pub address: Ipv4Addr,
    /// Which switch (and subnet) it is plugged into.
    pub switch: usize,
    /// Its default route, when other subnets are behind a router.
    pub gateway: Option<Ipv4Addr>,
    /// Its port's name in the switch namespace.
    pub port: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub switches: Vec<String>,
    pub router: Option<String>,
    pub nodes: Vec<NodePlan>,
}

/// The namespaces and addresses of a demo called `name`.
pub fn plan(name: &str, nodes: usize, encap: Encap) -> Plan {
    let routed = encap == Encap::Crosssubnet;
    let subnets = if routed { 2 } else { 1 };
    let switches = (0..subnets)
        .map(|s| {
            if s == 0 {
                format!("{name}-sw")
            } else {
                format!("{name}-sw{}", s + 1)
            }
        })
        .collect();
    let nodes = (0..nodes)
        .map(|index| {
            let switch = index % subnets;
            let [a, b, c, _] = SUBNETS[switch].0.octets();
            NodePlan {
                index,
                name: format!("node-{index}"),
                netns: format!("{name}-node{index}"),
                address: Ipv4Addr::new(a, b, c, 10 + index as u8),
                switch,
                gateway: routed.then_some(SUBNETS[switch].1),
                port: format!("n{index}"),
            }
        })
        .collect();
    Plan {
        switches,
        router: routed.then(|| format!("{name}-rtr")),
        nodes,
    }
}

async fn index_of(handle: &Handle, name: &str) -> Result<u32> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    let link = links
        .try_next()
        .await
        .with_context(|| format!("cannot find link {name}"))?
        .ok_or_else(|| anyhow!("link {name} does not exist"))?;
    Ok(link.header.index)
}

async fn up(handle: &Handle, name: &str) -> Result<u32> {
    let index = index_of(handle, name).await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("cannot bring {name} up"))?;
    Ok(index)
}

async fn add_address(handle: &Handle, link: &str, address: Ipv4Addr, len: u8) -> Result<()> {
    let index = up(handle, link).await?;
    handle
        .address()
        .add(index, address.into(), len)
        .execute()
        .await
        .with_context(|| format!("cannot add {address}/{len} to {link}"))
}

/// A veth pair: `port` in the calling handle's namespace, attached to the bridge, and `peer`
/// created directly inside namespace `peer_netns` (brought up from inside it later).
async fn plug(handle: &Handle, port: &str, peer: &str, peer_netns: &str) -> Result<()> {
    let target = netns::open(peer_netns)?;
    let peer_link = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_string())
        .setns_by_fd(std::os::fd::AsRawFd::as_raw_fd(&target))
        .build();
    let veth = LinkVeth::new(port, peer)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_link)))
        .build();
    handle
        .link()
        .add(veth)
        .execute()
        .await
        .with_context(|| format!("cannot create the veth {port} / {peer} (in {peer_netns})"))?;
    let bridge = index_of(handle, BRIDGE).await?;
    let index = index_of(handle, port).await?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(bridge)
                .up()
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("cannot attach {port} to {BRIDGE}"))
}

/// Makes a switch: loopback and a bridge, up.
pub fn build_switch(switch: &str) -> Result<()> {
    netns::netlink_in(Some(switch), |handle| async move {
        up(&handle, "lo").await?;
        handle
            .link()
            .add(LinkBridge::new(BRIDGE).up().build())
            .execute()
            .await
            .with_context(|| format!("cannot create the bridge {BRIDGE} in {switch}"))
    })
}

/// Plugs node `node` into its switch and gives it its address (and default route).
pub fn build_node(plan: &Plan, node: &NodePlan) -> Result<()> {
    let switch = &plan.switches[node.switch];
    netns::netlink_in(Some(switch), |handle| async move {
        plug(&handle, &node.port, "eth0", &node.netns).await
    })?;
    netns::netlink_in(Some(&node.netns), |handle| async move {
        up(&handle, "lo").await?;
        add_address(&handle, "eth0", node.address, SUBNET_LEN).await?;
        if let Some(gateway) = node.gateway {
            handle
                .route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .gateway(gateway)
                        .build(),
                )
                .execute()
                .await
                .with_context(|| format!("cannot add the default route via {gateway}"))?;
        }
        Ok(())
    })
}

/// The router: one leg in each switch (`eth<s>`, the subnet's `.1`), forwarding on.
pub fn build_router(plan: &Plan, router: &str) -> Result<()> {
    for (s, switch) in plan.switches.iter().enumerate() {
        let leg = format!("eth{s}");
        netns::netlink_in(Some(switch), |handle| async move {
            plug(&handle, "rtr", &leg, router).await
        })?;
    }
    netns::netlink_in(Some(router), |handle| async move {
        up(&handle, "lo").await?;
        for (s, (_, address)) in SUBNETS.iter().enumerate().take(plan.switches.len()) {
            add_address(&handle, &format!("eth{s}"), *address, SUBNET_LEN).await?;
        }
        Ok(())
    })?;
    // /proc/sys/net is the namespace of the thread that opens it.
    netns::run_in(router, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1\n")
            .with_context(|| format!("cannot turn forwarding on in {router}"))
    })
}

/// Loopback up in a pod's namespace (the plugin does eth0).
pub fn loopback_up(name: &str) -> Result<()> {
    netns::netlink_in(Some(name), |handle| async move {
        up(&handle, "lo").await.map(|_| ())
    })
}

/// One kernel route, as the report prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub destination: String,
    pub gateway: Option<String>,
    pub device: Option<String>,
    pub blackhole: bool,
    pub onlink: bool,
    pub link_scope: bool,
}

/// The routes tortie installed (protocol 75) in namespace `name`, IPv4.
pub fn tortie_routes(name: &str) -> Result<Vec<KernelRoute>> {
    netns::netlink_in(Some(name), |handle| async move {
        let mut names = std::collections::HashMap::new();
        let mut links = handle.link().get().execute();
        while let Some(link) = links.try_next().await.context("cannot list links")? {
            for attribute in &link.attributes {
                if let LinkAttribute::IfName(ifname) = attribute {
                    names.insert(link.header.index, ifname.clone());
                }
            }
        }
        let mut routes = Vec::new();
        let mut stream = handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(message) = stream.try_next().await.context("cannot list routes")? {
            if message.header.protocol != RouteProtocol::from(ROUTE_PROTOCOL) {
                continue;
            }
            let mut route = KernelRoute {
                destination: String::new(),
                gateway: None,
                device: None,
                blackhole: message.header.kind == RouteType::BlackHole,
                onlink: message.header.flags.contains(RouteFlags::Onlink),
                link_scope: message.header.scope == netlink_packet_route::route::RouteScope::Link,
            };
            let mut destination = None;
            for attribute in &message.attributes {
                match attribute {
                    RouteAttribute::Destination(RouteAddress::Inet(address)) => {
                        destination = Some(*address)
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(address)) => {
                        route.gateway = Some(address.to_string())
                    }
                    RouteAttribute::Oif(index) => {
                        route.device = Some(
                            names
                                .get(index)
                                .cloned()
                                .unwrap_or_else(|| format!("if{index}")),
                        )
                    }
                    _ => {}
                }
            }
            route.destination = match destination {
                Some(address) => {
                    format!("{address}/{}", message.header.destination_prefix_length)
                }
                None => "default".to_string(),
            };
            routes.push(route);
        }
        Ok(routes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing() -> IpipSupport {
        IpipSupport::Missing {
            reason: "the kernel has no IPIP support (Operation not supported); load the module"
                .into(),
        }
    }

    fn value<'a>(mode: &'a PoolMode, key: &str) -> &'a str {
        &mode
            .env
            .iter()
            .find(|(k, _)| k == &format!("TORTIE_IPV4POOL_{key}"))
            .unwrap()
            .1
    }

    #[test]
    fn auto_is_ipip_where_the_kernel_has_it_else_vxlan_with_a_notice() {
        let with = pool_mode(Encap::Auto, &IpipSupport::Available).unwrap();
        assert_eq!(value(&with, "IPIP"), "Always");
        assert_eq!(with.notice, None);
        let without = pool_mode(Encap::Auto, &missing()).unwrap();
        assert_eq!(value(&without, "VXLAN"), "Always");
        assert_eq!(value(&without, "IPIP"), "Never");
        let notice = without.notice.unwrap();
        assert_eq!(
            notice,
            "notice: using VXLAN: the kernel has no IPIP support (Operation not supported); \
             `modprobe ipip` would allow IPIP"
        );
    }

    #[test]
    fn ipip_without_the_module_names_both_fixes() {
        let error = pool_mode(Encap::Ipip, &missing()).unwrap_err();
        assert!(error.contains("modprobe ipip") && error.contains("--encap vxlan"));
        assert_eq!(
            value(
                &pool_mode(Encap::Ipip, &IpipSupport::Available).unwrap(),
                "IPIP"
            ),
            "Always"
        );
    }

    #[test]
    fn crosssubnet_falls_back_to_vxlan_and_never_is_plain() {
        let cross = pool_mode(Encap::Crosssubnet, &missing()).unwrap();
        assert_eq!(value(&cross, "VXLAN"), "CrossSubnet");
        assert_eq!(value(&cross, "IPIP"), "Never");
        let cross = pool_mode(Encap::Crosssubnet, &IpipSupport::Available).unwrap();
        assert_eq!(value(&cross, "IPIP"), "CrossSubnet");
        let never = pool_mode(Encap::Never, &missing()).unwrap();
        assert_eq!(
            (value(&never, "IPIP"), value(&never, "VXLAN")),
            ("Never", "Never")
        );
    }

    #[test]
    fn one_subnet_unless_crosssubnet() {
        let flat = plan("d", 3, Encap::Vxlan);
        assert_eq!(flat.switches, ["d-sw"]);
        assert_eq!(flat.router, None);
        let addresses: Vec<String> = flat.nodes.iter().map(|n| n.address.to_string()).collect();
        assert_eq!(
            addresses,
            ["198.51.100.10", "198.51.100.11", "198.51.100.12"]
        );
        assert!(
            flat.nodes
                .iter()
                .all(|n| n.gateway.is_none() && n.switch == 0)
        );
        assert_eq!(flat.nodes[2].netns, "d-node2");
        assert_eq!(flat.nodes[2].name, "node-2");
    }

    #[test]
    fn crosssubnet_alternates_subnets_behind_a_router() {
        let routed = plan("d", 3, Encap::Crosssubnet);
        assert_eq!(routed.switches, ["d-sw", "d-sw2"]);
        assert_eq!(routed.router.as_deref(), Some("d-rtr"));
        let nodes: Vec<(String, Option<String>)> = routed
            .nodes
            .iter()
            .map(|n| (n.address.to_string(), n.gateway.map(|g| g.to_string())))
            .collect();
        assert_eq!(
            nodes,
            [
                ("198.51.100.10".into(), Some("198.51.100.1".into())),
                ("203.0.113.11".into(), Some("203.0.113.1".into())),
                ("198.51.100.12".into(), Some("198.51.100.1".into())),
            ]
        );
    }
}
