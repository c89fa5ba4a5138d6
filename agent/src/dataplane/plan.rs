//! Which kernel route a remote block gets, by the encapsulation of the pool it belongs to
//! (DESIGN.md, "Routing, by pool encapsulation"). Pure: plain data in, a [`RouteTarget`] out.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use tortie_ipam::model::{EncapsulationMode, IPPool};

use super::{Device, RouteTarget};

/// An IPv4 header: what IPIP adds to every packet.
pub const IPIP_OVERHEAD: u32 = 20;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
pub const VXLAN_V4_OVERHEAD: u32 = 50;
/// The same over IPv6 (an outer header 20 bytes longer).
pub const VXLAN_V6_OVERHEAD: u32 = 70;
/// The host MTU assumed when the host interface's own cannot be read (Calico's choice:
/// 1500 − 40 leaves room for either encapsulation on a standard Ethernet).
pub const FALLBACK_TUNNEL_MTU: u32 = 1460;

/// The MTU of a tunnel device over a host interface of `host_mtu` that adds `overhead`
/// bytes, or [`FALLBACK_TUNNEL_MTU`] when the host MTU is unknown.
pub fn tunnel_mtu(host_mtu: Option<u32>, overhead: u32) -> u32 {
    match host_mtu {
        Some(mtu) if mtu > overhead => mtu - overhead,
        _ => FALLBACK_TUNNEL_MTU,
    }
}

/// What this node knows when it decides how to reach another node's block.
#[derive(Debug, Clone, Default)]
pub struct RoutingContext {
    /// Every pool in the cluster: a block's encapsulation is its pool's.
    pub pools: Vec<IPPool>,
    /// The interface carrying this node's address (`eth0`): plain routes leave through it.
    pub host_interface: String,
    /// This node's IPv4 address with its prefix: CrossSubnet sends plain to next hops
    /// inside it (Calico compares the BGP next hop with the node's own subnet).
    pub host_network: Ipv4Net,
    /// Other nodes' VXLAN tunnel addresses, by node address (from the datastore's nodes).
    pub vxlan_tunnels: HashMap<Ipv4Addr, Ipv4Addr>,
}

/// The encapsulation a pool asks for. Calico forbids enabling both IPIP and VXLAN on one
/// pool; should both be set anyway, VXLAN wins, as it needs no kernel module that may be
/// missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encapsulation {
    Ipip(EncapsulationMode),
    Vxlan(EncapsulationMode),
    None,
}

fn encapsulation(pool: &IPPool) -> Encapsulation {
    if pool.vxlan_mode != EncapsulationMode::Never {
        Encapsulation::Vxlan(pool.vxlan_mode)
    } else if pool.ipip_mode != EncapsulationMode::Never {
        Encapsulation::Ipip(pool.ipip_mode)
    } else {
        Encapsulation::None
    }
}

/// The pool holding `prefix`: the most specific one, should pools overlap.
pub fn pool_for<'a>(pools: &'a [IPPool], prefix: &IpNet) -> Option<&'a IPPool> {
    pools
        .iter()
        .filter(|pool| pool.cidr.contains(prefix))
        .max_by_key(|pool| pool.cidr.prefix_len())
}

/// The route to `prefix`, a block (or any prefix) that BGP says lives behind `next_hop`.
///
/// - IPIP Always: `via <next hop> dev tunl0 onlink`. `onlink` because the next hop is not on
///   any subnet of tunl0 (it has only a /32), and without it the kernel refuses the gateway
///   (`fib_check_nh`: "Nexthop has invalid gateway").
/// - IPIP CrossSubnet: plain `via <next hop> dev <host iface>` when the next hop is in this
///   node's subnet, else as Always.
/// - VXLAN Always: `via <peer's VXLAN tunnel IP> dev vxlan.tortie onlink` (the neighbour and
///   FDB entries for that tunnel IP make it reachable). CrossSubnet: plain when the next hop
///   is in this node's subnet, else VXLAN. When the peer's tunnel address is not known yet
///   (its node object has not arrived), the block is routed plain, as Never would: that
///   works on an L2-adjacent or BGP-aware fabric, and the VXLAN route replaces it on the
///   next reconcile once the address arrives. No route at all would black-hole the block
///   for certain instead.
/// - Never, a prefix in no pool (a ToR router's routes), a next hop of the other family, and
///   IPv6 prefixes: plain `via <next hop> dev <host iface>`.
pub fn remote_route(ctx: &RoutingContext, prefix: IpNet, next_hop: IpAddr) -> RouteTarget {
    let plain = RouteTarget::Via {
        gateway: next_hop,
        device: Device::Named(ctx.host_interface.clone()),
        onlink: false,
    };
    let (IpNet::V4(_), IpAddr::V4(next_hop_v4)) = (prefix, next_hop) else {
        return plain;
    };
    let Some(pool) = pool_for(&ctx.pools, &prefix) else {
        return plain;
    };
    let same_subnet = ctx.host_network.contains(&next_hop_v4);
    let ipip = RouteTarget::Via {
        gateway: next_hop,
        device: Device::Tunl0,
        onlink: true,
    };
    let vxlan = || match ctx.vxlan_tunnels.get(&next_hop_v4) {
        Some(tunnel) => RouteTarget::Via {
            gateway: IpAddr::V4(*tunnel),
            device: Device::Vxlan,
            onlink: true,
        },
        None => plain.clone(),
    };
    match encapsulation(pool) {
        Encapsulation::Ipip(EncapsulationMode::CrossSubnet) if same_subnet => plain,
        Encapsulation::Ipip(_) => ipip,
        Encapsulation::Vxlan(EncapsulationMode::CrossSubnet) if same_subnet => plain,
        Encapsulation::Vxlan(_) => vxlan(),
        Encapsulation::None => plain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, ipip: EncapsulationMode, vxlan: EncapsulationMode) -> IPPool {
        let mut pool = IPPool::new(format!("pool-{cidr}"), cidr.parse().unwrap());
        pool.ipip_mode = ipip;
        pool.vxlan_mode = vxlan;
        pool
    }

    fn context(pools: Vec<IPPool>) -> RoutingContext {
        RoutingContext {
            pools,
            host_interface: "eth0".to_string(),
            host_network: "198.51.100.10/24".parse().unwrap(),
            vxlan_tunnels: HashMap::from([(
                "203.0.113.7".parse().unwrap(),
                "198.18.5.1".parse().unwrap(),
            )]),
        }
    }

    fn via(gateway: &str, device: Device, onlink: bool) -> RouteTarget {
        RouteTarget::Via {
            gateway: gateway.parse().unwrap(),
            device,
            onlink,
        }
    }

    fn eth0() -> Device {
        Device::Named("eth0".to_string())
    }

    const SAME_SUBNET: &str = "198.51.100.20";
    const OTHER_SUBNET: &str = "203.0.113.7";
    const BLOCK: &str = "198.18.3.0/26";

    fn route(ctx: &RoutingContext, next_hop: &str) -> RouteTarget {
        remote_route(ctx, BLOCK.parse().unwrap(), next_hop.parse().unwrap())
    }

    use EncapsulationMode::{Always, CrossSubnet, Never};

    #[test]
    fn ipip_always_goes_through_tunl0_onlink_whatever_the_subnet() {
        let ctx = context(vec![pool("198.18.0.0/16", Always, Never)]);
        assert_eq!(
            route(&ctx, SAME_SUBNET),
            via(SAME_SUBNET, Device::Tunl0, true)
        );
        assert_eq!(
            route(&ctx, OTHER_SUBNET),
            via(OTHER_SUBNET, Device::Tunl0, true)
        );
    }

    #[test]
    fn ipip_cross_subnet_is_plain_inside_the_subnet_and_tunnelled_outside() {
        let ctx = context(vec![pool("198.18.0.0/16", CrossSubnet, Never)]);
        assert_eq!(route(&ctx, SAME_SUBNET), via(SAME_SUBNET, eth0(), false));
        assert_eq!(
            route(&ctx, OTHER_SUBNET),
            via(OTHER_SUBNET, Device::Tunl0, true)
        );
    }

    #[test]
    fn vxlan_always_goes_to_the_peers_tunnel_address_on_vxlan_tortie() {
        let ctx = context(vec![pool("198.18.0.0/16", Never, Always)]);
        assert_eq!(
            route(&ctx, OTHER_SUBNET),
            via("198.18.5.1", Device::Vxlan, true)
        );
    }

    #[test]
    fn vxlan_cross_subnet_is_plain_inside_the_subnet_and_vxlan_outside() {
        let ctx = context(vec![pool("198.18.0.0/16", Never, CrossSubnet)]);
        assert_eq!(route(&ctx, SAME_SUBNET), via(SAME_SUBNET, eth0(), false));
        assert_eq!(
            route(&ctx, OTHER_SUBNET),
            via("198.18.5.1", Device::Vxlan, true)
        );
    }

    #[test]
    fn vxlan_without_the_peers_tunnel_address_falls_back_to_plain() {
        let ctx = context(vec![pool("198.18.0.0/16", Never, Always)]);
        assert_eq!(route(&ctx, "192.0.2.9"), via("192.0.2.9", eth0(), false));
    }

    #[test]
    fn never_and_prefixes_outside_every_pool_are_plain() {
        let ctx = context(vec![pool("198.18.0.0/16", Never, Never)]);
        assert_eq!(route(&ctx, OTHER_SUBNET), via(OTHER_SUBNET, eth0(), false));
        let ctx = context(vec![pool("198.19.0.0/16", Always, Never)]);
        assert_eq!(route(&ctx, OTHER_SUBNET), via(OTHER_SUBNET, eth0(), false));
    }

    #[test]
    fn the_most_specific_pool_decides() {
        let ctx = context(vec![
            pool("198.18.0.0/15", Always, Never),
            pool("198.18.3.0/24", Never, Never),
        ]);
        assert_eq!(route(&ctx, OTHER_SUBNET), via(OTHER_SUBNET, eth0(), false));
    }

    #[test]
    fn vxlan_wins_when_a_pool_asks_for_both() {
        let ctx = context(vec![pool("198.18.0.0/16", Always, Always)]);
        assert_eq!(
            route(&ctx, OTHER_SUBNET),
            via("198.18.5.1", Device::Vxlan, true)
        );
    }

    #[test]
    fn ipv6_prefixes_are_plain_via_the_next_hop() {
        let ctx = context(vec![pool("2001:db8:1::/48", Always, Never)]);
        let target = remote_route(
            &ctx,
            "2001:db8:1:2::/122".parse().unwrap(),
            "2001:db8::7".parse().unwrap(),
        );
        assert_eq!(target, via("2001:db8::7", eth0(), false));
    }

    #[test]
    fn a_next_hop_of_the_other_family_is_plain() {
        let ctx = context(vec![pool("198.18.0.0/16", Always, Never)]);
        assert_eq!(
            route(&ctx, "2001:db8::7"),
            via("2001:db8::7", eth0(), false)
        );
    }

    #[test]
    fn tunnel_mtu_subtracts_the_overhead_or_falls_back() {
        assert_eq!(tunnel_mtu(Some(1500), IPIP_OVERHEAD), 1480);
        assert_eq!(tunnel_mtu(Some(9000), VXLAN_V4_OVERHEAD), 8950);
        assert_eq!(tunnel_mtu(None, VXLAN_V4_OVERHEAD), FALLBACK_TUNNEL_MTU);
        assert_eq!(tunnel_mtu(Some(40), VXLAN_V4_OVERHEAD), FALLBACK_TUNNEL_MTU);
    }
}
