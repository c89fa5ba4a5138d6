//! The agent's reading of the cluster's resources: its own Node registered, and every Node,
//! BGPPeer, the BGPConfiguration and the pools turned into what the mesh planner and the
//! dataplane take.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use ipnet::{IpNet, Ipv4Net};
use tortie_ipam::cluster::{BGPPeer, Node};
use tortie_ipam::model::IPPool;
use tortie_ipam::{Ipam, Selector, Store};
use tracing::warn;

use crate::dataplane::VxlanPeer;
use crate::node::mesh::{ExplicitPeer, MeshNode, MeshSettings, PeerScope, PeerTarget};

/// What this agent writes into its Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRegistration {
    pub name: String,
    pub ipv4: Option<IpNet>,
    pub ipv6: Option<IpNet>,
    /// `AS` when set; otherwise whatever the Node has (an operator's choice) stays.
    pub asn: Option<u32>,
    pub ipip_tunnel: Option<Ipv4Addr>,
    pub vxlan_tunnel: Option<Ipv4Addr>,
    pub vxlan_mac: Option<[u8; 6]>,
}

impl NodeRegistration {
    /// This node's addresses and AS, with the tunnel addresses and MAC `previous` (the
    /// node as stored) already has: what to write before, or without, allocating tunnels.
    pub fn keeping(
        name: &str,
        ipv4: Option<IpNet>,
        ipv6: Option<IpNet>,
        asn: Option<u32>,
        previous: Option<&ClusterNode>,
    ) -> NodeRegistration {
        NodeRegistration {
            name: name.to_string(),
            ipv4,
            ipv6,
            asn,
            ipip_tunnel: previous.and_then(|n| n.ipip_tunnel),
            vxlan_tunnel: previous.and_then(|n| n.vxlan_tunnel),
            vxlan_mac: previous.and_then(|n| n.vxlan_mac),
        }
    }
}

/// Creates or updates the node's Node resource, keeping what others set on it (labels,
/// route reflector cluster id). Refused when another node has the same address.
pub fn register<S: Store>(ipam: &Ipam<S>, registration: &NodeRegistration) -> Result<()> {
    ipam.register_node(&registration.name, |node| {
        let bgp = node.bgp.get_or_insert_with(Default::default);
        bgp.ipv4_address = match registration.ipv4 {
            Some(IpNet::V4(net)) => Some(net),
            _ => None,
        };
        bgp.ipv6_address = match registration.ipv6 {
            Some(IpNet::V6(net)) => Some(net),
            _ => None,
        };
        if registration.asn.is_some() {
            bgp.as_number = registration.asn;
        }
        bgp.ipv4_ipip_tunnel_addr = registration.ipip_tunnel;
        node.ipv4_vxlan_tunnel_addr = registration.vxlan_tunnel;
        node.vxlan_tunnel_mac_addr = registration.vxlan_mac.map(|mac| format_mac(&mac));
    })
    .with_context(|| format!("registering node {}", registration.name))?;
    Ok(())
}

/// A node as the agent uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub mesh: MeshNode,
    pub ipv4_network: Option<Ipv4Net>,
    pub ipip_tunnel: Option<Ipv4Addr>,
    pub vxlan_tunnel: Option<Ipv4Addr>,
    pub vxlan_mac: Option<[u8; 6]>,
}

/// The cluster-wide BGP settings in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub mesh_enabled: bool,
    pub default_asn: u32,
    pub port: u16,
    /// How long peers keep this node's routes while it restarts (nodeMeshMaxRestartTime).
    pub restart_time: Duration,
}

impl Settings {
    pub fn mesh(&self) -> MeshSettings {
        MeshSettings {
            mesh_enabled: self.mesh_enabled,
            default_asn: self.default_asn,
            port: self.port,
        }
    }
}

/// Everything the agent reads from the datastore, in one consistent-enough snapshot.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub nodes: Vec<ClusterNode>,
    pub peers: Vec<ExplicitPeer>,
    pub settings: Settings,
    pub pools: Vec<IPPool>,
}

impl ClusterView {
    pub fn node(&self, name: &str) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn mesh_nodes(&self) -> Vec<MeshNode> {
        self.nodes.iter().map(|n| n.mesh.clone()).collect()
    }

    /// Every other node's VXLAN tunnel endpoint that is fully known.
    pub fn vxlan_peers(&self, me: &str) -> Vec<VxlanPeer> {
        self.nodes
            .iter()
            .filter(|n| n.name != me)
            .filter_map(|n| {
                Some(VxlanPeer {
                    tunnel_address: n.vxlan_tunnel?,
                    mac: n.vxlan_mac?,
                    node_address: n.mesh.ipv4?,
                })
            })
            .collect()
    }
}

pub fn load<S: Store>(ipam: &Ipam<S>) -> Result<ClusterView> {
    let config = ipam
        .bgp_configuration()
        .context("reading the BGPConfiguration")?;
    let settings = Settings {
        mesh_enabled: config.node_to_node_mesh_enabled(),
        default_asn: config.as_number(),
        port: config.listen_port(),
        restart_time: config.node_mesh_max_restart_time(),
    };
    let nodes = ipam
        .nodes()
        .context("reading the Nodes")?
        .iter()
        .map(cluster_node)
        .collect();
    let peers = ipam
        .bgp_peers()
        .context("reading the BGPPeers")?
        .iter()
        .filter_map(|peer| match explicit_peer(peer) {
            Ok(peer) => Some(peer),
            Err(problem) => {
                warn!(peer = %peer.name, %problem, "BGPPeer ignored");
                None
            }
        })
        .collect();
    let pools = ipam.pools().context("reading the IP pools")?;
    Ok(ClusterView {
        nodes,
        peers,
        settings,
        pools,
    })
}

fn cluster_node(node: &Node) -> ClusterNode {
    let bgp = node.bgp.clone().unwrap_or_default();
    ClusterNode {
        name: node.name.clone(),
        labels: node.labels.clone(),
        mesh: MeshNode {
            name: node.name.clone(),
            ipv4: bgp.ipv4_address.map(|net| net.addr()),
            ipv6: bgp.ipv6_address.map(|net| net.addr()),
            asn: bgp.as_number,
            route_reflector_cluster_id: bgp.route_reflector_cluster_id,
            labels: node.labels.clone(),
        },
        ipv4_network: bgp.ipv4_address,
        ipip_tunnel: bgp.ipv4_ipip_tunnel_addr,
        vxlan_tunnel: node.ipv4_vxlan_tunnel_addr,
        vxlan_mac: node.vxlan_tunnel_mac_addr.as_deref().and_then(parse_mac),
    }
}

fn explicit_peer(peer: &BGPPeer) -> Result<ExplicitPeer, String> {
    let selector = |text: &str| Selector::parse(text).map_err(|e| e.to_string());
    let scope = match (&peer.node, &peer.node_selector) {
        (Some(node), _) => PeerScope::Node(node.clone()),
        (None, Some(text)) => PeerScope::Selector(selector(text)?),
        (None, None) => PeerScope::Global,
    };
    let target = match (&peer.peer_address(), &peer.peer_selector) {
        (Some(Ok((address, port))), _) => PeerTarget::Address {
            address: *address,
            port: *port,
        },
        (Some(Err(problem)), _) => return Err(problem.clone()),
        (None, Some(text)) => PeerTarget::Nodes(selector(text)?),
        (None, None) => return Err("neither peerIP nor peerSelector".into()),
    };
    Ok(ExplicitPeer {
        name: peer.name.clone(),
        scope,
        target,
        asn: peer.as_number.unwrap_or(0),
        password: peer.password.clone(),
        ttl_security: peer.ttl_security,
        max_restart_time: peer.max_restart_time,
    })
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip() {
        let mac = [0x66, 0x01, 0xab, 0xcd, 0xef, 0x10];
        assert_eq!(format_mac(&mac), "66:01:ab:cd:ef:10");
        assert_eq!(parse_mac("66:01:ab:cd:ef:10"), Some(mac));
        assert_eq!(parse_mac("66:01:ab:cd:ef"), None);
        assert_eq!(parse_mac("66:01:ab:cd:ef:10:11"), None);
    }
}
