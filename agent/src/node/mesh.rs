//! Which BGP sessions this node wants: the node-to-node mesh, BGPPeer resources with a
//! peer address, and BGPPeer resources that select other nodes (route reflectors). Pure:
//! datastore objects in, the wanted peers out, so every rule is a unit test.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tortie_ipam::Selector;

/// Peer types, as `calicoctl node status` names them.
pub const MESH: &str = "node-to-node mesh";
pub const GLOBAL: &str = "global";
pub const NODE_SPECIFIC: &str = "node specific";

/// A node as the mesh sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshNode {
    pub name: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub asn: Option<u32>,
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
    pub labels: BTreeMap<String, String>,
}

/// Whom a BGPPeer resource peers with.
#[derive(Debug, Clone)]
pub enum PeerTarget {
    /// A router outside the cluster (or any address), with an optional port.
    Address { address: IpAddr, port: Option<u16> },
    /// Every tortie node its selector matches (route reflector topologies).
    Nodes(Selector),
}

/// Which nodes a BGPPeer resource applies to.
#[derive(Debug, Clone)]
pub enum PeerScope {
    /// Every node.
    Global,
    Node(String),
    Selector(Selector),
}

/// A BGPPeer resource, parsed.
#[derive(Debug, Clone)]
pub struct ExplicitPeer {
    pub name: String,
    pub scope: PeerScope,
    pub target: PeerTarget,
    /// For address targets; node targets use the selected node's AS.
    pub asn: u32,
    pub password: Option<String>,
    pub ttl_security: Option<u8>,
    pub max_restart_time: Option<Duration>,
}

/// The cluster-wide settings (BGPConfiguration "default").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshSettings {
    pub mesh_enabled: bool,
    pub default_asn: u32,
    pub port: u16,
}

/// One session this node wants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WantedPeer {
    pub address: IpAddr,
    pub port: u16,
    pub asn: u32,
    pub local_address: IpAddr,
    pub label: &'static str,
    /// Wait for the other side to connect (the mesh dials from one side only).
    pub passive: bool,
    pub route_reflector_client: bool,
    pub password: Option<String>,
    pub ttl_security: Option<u8>,
    pub max_restart_time: Option<Duration>,
    /// The tortie node behind the address, if it is one.
    pub node: Option<String>,
    /// Tell the peer only this node's own prefixes (blocks, borrowed addresses), not what
    /// it learned from other nodes: for routers outside the cluster, whose route to a block
    /// must point at the node that owns it.
    pub originated_only: bool,
}

impl MeshNode {
    fn address(&self, v4: bool) -> Option<IpAddr> {
        if v4 {
            self.ipv4.map(IpAddr::V4)
        } else {
            self.ipv6.map(IpAddr::V6)
        }
    }

    fn is_reflector(&self) -> bool {
        self.route_reflector_cluster_id.is_some()
    }
}

fn applies_to(scope: &PeerScope, me: &MeshNode) -> bool {
    match scope {
        PeerScope::Global => true,
        PeerScope::Node(name) => *name == me.name,
        PeerScope::Selector(selector) => selector.matches(&me.labels),
    }
}

fn label_of(scope: &PeerScope) -> &'static str {
    match scope {
        PeerScope::Global => GLOBAL,
        PeerScope::Node(_) | PeerScope::Selector(_) => NODE_SPECIFIC,
    }
}

/// Of two nodes, the one with the higher address dials and the other listens, so a mesh
/// of N nodes opens N·(N−1)/2 connections, not twice that, and no collision has to be
/// resolved (RFC 4271 §6.8). (Calico compares the addresses as strings; we compare them
/// as numbers, which is the same rule for every pair, just not the same order.)
fn passive_towards(mine: IpAddr, theirs: IpAddr) -> bool {
    mine < theirs
}

/// The sessions `me` wants, at most one per peer address, sorted by address. Explicit
/// BGPPeers win over the mesh for the same address (their password and timers apply).
pub fn wanted_peers(
    me: &MeshNode,
    nodes: &[MeshNode],
    peers: &[ExplicitPeer],
    settings: MeshSettings,
) -> Vec<WantedPeer> {
    let others: Vec<&MeshNode> = nodes.iter().filter(|n| n.name != me.name).collect();
    let mut sessions = NodeSessions {
        me,
        settings,
        wanted: Vec::new(),
        taken: HashSet::new(),
    };

    // Node-targeted BGPPeers first: they define the route reflector topology, and a node
    // that has such a peering leaves the mesh (a reflector client learns everything from
    // its reflectors).
    let mut in_reflection = me.is_reflector();
    for peer in peers.iter().filter(|p| applies_to(&p.scope, me)) {
        let PeerTarget::Nodes(selector) = &peer.target else {
            continue;
        };
        for node in others.iter().filter(|n| selector.matches(&n.labels)) {
            in_reflection = true;
            sessions.add(node, label_of(&peer.scope), Some(peer));
        }
    }
    // A reflector also serves the clients that selected it, whether or not its own
    // BGPPeers select them back.
    if me.is_reflector() {
        for node in &others {
            let selects_me = peers.iter().any(|p| {
                applies_to(&p.scope, node)
                    && matches!(&p.target, PeerTarget::Nodes(s) if s.matches(&me.labels))
            });
            if selects_me {
                sessions.add(node, NODE_SPECIFIC, None);
            }
        }
    }

    // Peers at an address (top-of-rack routers, external reflectors).
    for peer in peers.iter().filter(|p| applies_to(&p.scope, me)) {
        let PeerTarget::Address { address, port } = &peer.target else {
            continue;
        };
        let Some(mine) = me.address(address.is_ipv4()) else {
            continue;
        };
        if Some(*address) == me.address(address.is_ipv4()) || !sessions.taken.insert(*address) {
            continue;
        }
        let node = others
            .iter()
            .find(|n| n.address(address.is_ipv4()) == Some(*address));
        sessions.wanted.push(WantedPeer {
            address: *address,
            port: port.unwrap_or(settings.port),
            asn: peer.asn,
            local_address: mine,
            label: label_of(&peer.scope),
            // Toward another tortie node the mesh's dialling rule applies; a router is
            // dialled.
            passive: node.is_some() && passive_towards(mine, *address),
            route_reflector_client: false,
            password: peer.password.clone(),
            ttl_security: peer.ttl_security,
            max_restart_time: peer.max_restart_time,
            node: node.map(|n| n.name.clone()),
            originated_only: node.is_none(),
        });
    }

    // The full mesh, among the nodes outside any reflection topology.
    let mesh_member = |node: &MeshNode| {
        !node.is_reflector()
            && !peers
                .iter()
                .any(|p| applies_to(&p.scope, node) && matches!(p.target, PeerTarget::Nodes(_)))
    };
    if settings.mesh_enabled && !in_reflection && mesh_member(me) {
        for node in others.iter().filter(|n| mesh_member(n)) {
            sessions.add(node, MESH, None);
        }
    }
    let mut wanted = sessions.wanted;
    wanted.sort_by_key(|peer| peer.address);
    wanted
}

/// The sessions being gathered, at most one per peer address.
struct NodeSessions<'a> {
    me: &'a MeshNode,
    settings: MeshSettings,
    wanted: Vec<WantedPeer>,
    taken: HashSet<IpAddr>,
}

impl NodeSessions<'_> {
    /// Adds the sessions between this node and another tortie node, one per family both
    /// have an address of, unless that address already has one. `peer` is the BGPPeer that
    /// asked for it (its password and timers apply); a reflector treats an iBGP node that is
    /// no reflector as its client.
    fn add(&mut self, node: &MeshNode, label: &'static str, peer: Option<&ExplicitPeer>) {
        let asn = node.asn.unwrap_or(self.settings.default_asn);
        let ibgp = asn == self.me.asn.unwrap_or(self.settings.default_asn);
        for v4 in [true, false] {
            let (Some(mine), Some(theirs)) = (self.me.address(v4), node.address(v4)) else {
                continue;
            };
            if !self.taken.insert(theirs) {
                continue;
            }
            self.wanted.push(WantedPeer {
                address: theirs,
                port: self.settings.port,
                asn,
                local_address: mine,
                label,
                passive: passive_towards(mine, theirs),
                route_reflector_client: ibgp && self.me.is_reflector() && !node.is_reflector(),
                password: peer.and_then(|p| p.password.clone()),
                ttl_security: peer.and_then(|p| p.ttl_security),
                max_restart_time: peer.and_then(|p| p.max_restart_time),
                node: Some(node.name.clone()),
                originated_only: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: MeshSettings = MeshSettings {
        mesh_enabled: true,
        default_asn: 64512,
        port: 179,
    };

    fn node(name: &str, last: u8) -> MeshNode {
        MeshNode {
            name: name.into(),
            ipv4: Some(Ipv4Addr::new(198, 51, 100, last)),
            ipv6: None,
            asn: None,
            route_reflector_cluster_id: None,
            labels: BTreeMap::new(),
        }
    }

    fn reflector(name: &str, last: u8) -> MeshNode {
        let mut node = node(name, last);
        node.route_reflector_cluster_id = Some(Ipv4Addr::new(192, 0, 2, 1));
        node.labels.insert("route-reflector".into(), "true".into());
        node
    }

    fn addresses(peers: &[WantedPeer]) -> Vec<String> {
        peers.iter().map(|p| p.address.to_string()).collect()
    }

    #[test]
    fn the_mesh_peers_every_other_node_and_one_side_dials() {
        let nodes = [node("a", 10), node("b", 11), node("c", 12)];
        let a = wanted_peers(&nodes[0], &nodes, &[], SETTINGS);
        assert_eq!(addresses(&a), ["198.51.100.11", "198.51.100.12"]);
        assert!(
            a.iter()
                .all(|p| p.passive && p.label == MESH && p.asn == 64512)
        );
        let c = wanted_peers(&nodes[2], &nodes, &[], SETTINGS);
        assert!(
            c.iter().all(|p| !p.passive),
            "the highest address dials everyone"
        );
        let b = wanted_peers(&nodes[1], &nodes, &[], SETTINGS);
        assert_eq!(
            b.iter().map(|p| p.passive).collect::<Vec<_>>(),
            [false, true]
        );
    }

    #[test]
    fn the_mesh_can_be_turned_off() {
        let nodes = [node("a", 10), node("b", 11)];
        let settings = MeshSettings {
            mesh_enabled: false,
            ..SETTINGS
        };
        assert!(wanted_peers(&nodes[0], &nodes, &[], settings).is_empty());
    }

    #[test]
    fn global_and_node_specific_peers_apply_where_they_should() {
        let nodes = [node("a", 10), node("b", 11)];
        let tor = ExplicitPeer {
            name: "tor".into(),
            scope: PeerScope::Global,
            target: PeerTarget::Address {
                address: "203.0.113.1".parse().unwrap(),
                port: None,
            },
            asn: 65000,
            password: Some("secret".into()),
            ttl_security: Some(1),
            max_restart_time: None,
        };
        let only_b = ExplicitPeer {
            name: "b-only".into(),
            scope: PeerScope::Node("b".into()),
            target: PeerTarget::Address {
                address: "203.0.113.2".parse().unwrap(),
                port: Some(1179),
            },
            ..tor.clone()
        };
        let a = wanted_peers(&nodes[0], &nodes, &[tor.clone(), only_b.clone()], SETTINGS);
        assert_eq!(addresses(&a), ["198.51.100.11", "203.0.113.1"]);
        let router = &a[1];
        assert_eq!(router.label, GLOBAL);
        assert!(!router.passive);
        assert_eq!(router.asn, 65000);
        assert_eq!(router.password.as_deref(), Some("secret"));
        assert!(
            router.originated_only,
            "a router hears only the node's own blocks"
        );
        assert!(!a[0].originated_only, "a node hears everything");
        let b = wanted_peers(&nodes[1], &nodes, &[tor, only_b], SETTINGS);
        assert_eq!(
            addresses(&b),
            ["198.51.100.10", "203.0.113.1", "203.0.113.2"]
        );
        assert_eq!(b[2].label, NODE_SPECIFIC);
        assert_eq!(b[2].port, 1179);
    }

    #[test]
    fn reflectors_and_their_clients_leave_the_mesh() {
        let nodes = [
            reflector("rr1", 10),
            reflector("rr2", 11),
            node("c1", 12),
            node("c2", 13),
        ];
        let to_reflectors = ExplicitPeer {
            name: "to-rr".into(),
            scope: PeerScope::Selector(Selector::parse("all()").unwrap()),
            target: PeerTarget::Nodes(Selector::parse("route-reflector == 'true'").unwrap()),
            asn: 0,
            password: None,
            ttl_security: None,
            max_restart_time: None,
        };
        let peers = [to_reflectors];
        let client = wanted_peers(&nodes[2], &nodes, &peers, SETTINGS);
        assert_eq!(addresses(&client), ["198.51.100.10", "198.51.100.11"]);
        assert!(client.iter().all(|p| !p.route_reflector_client));
        let rr1 = wanted_peers(&nodes[0], &nodes, &peers, SETTINGS);
        assert_eq!(
            addresses(&rr1),
            ["198.51.100.11", "198.51.100.12", "198.51.100.13"]
        );
        let clients: Vec<bool> = rr1.iter().map(|p| p.route_reflector_client).collect();
        assert_eq!(
            clients,
            [false, true, true],
            "the other reflector is no client"
        );
        // Exactly one side of every pair dials.
        for (x, y) in [(0, 2), (1, 3), (0, 1)] {
            let from_x = wanted_peers(&nodes[x], &nodes, &peers, SETTINGS);
            let from_y = wanted_peers(&nodes[y], &nodes, &peers, SETTINGS);
            let x_to_y = from_x
                .iter()
                .find(|p| p.node.as_deref() == Some(&nodes[y].name));
            let y_to_x = from_y
                .iter()
                .find(|p| p.node.as_deref() == Some(&nodes[x].name));
            let (x_to_y, y_to_x) = (x_to_y.unwrap(), y_to_x.unwrap());
            assert_ne!(x_to_y.passive, y_to_x.passive, "{x} and {y}");
        }
    }

    #[test]
    fn ipv6_addresses_get_their_own_sessions() {
        let mut a = node("a", 10);
        let mut b = node("b", 11);
        a.ipv6 = Some("2001:db8:100::10".parse().unwrap());
        b.ipv6 = Some("2001:db8:100::11".parse().unwrap());
        let nodes = [a, b];
        let peers = wanted_peers(&nodes[0], &nodes, &[], SETTINGS);
        assert_eq!(addresses(&peers), ["198.51.100.11", "2001:db8:100::11"]);
        assert_eq!(peers[1].local_address.to_string(), "2001:db8:100::10");
    }
}
