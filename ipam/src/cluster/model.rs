//! Node, BGPConfiguration and BGPPeer, with Calico's v3 field names. As stored, each is one
//! flat object: its name (and a Node's labels, which selectors read) beside the fields of
//! Calico's `spec`; [`crate::document`] turns them into Calico's `metadata` + `spec` shape.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize};

use super::duration::optional_duration;
use crate::selector::Selector;

/// The cluster-wide BGPConfiguration's name.
pub const DEFAULT_BGP_CONFIGURATION: &str = "default";
/// Calico's default AS for every node that sets none (NOTES.md).
pub const DEFAULT_AS_NUMBER: u32 = 64512;
/// BGP's port (RFC 4271 section 8.2.1 leaves it to the transport; IANA assigned 179).
pub const DEFAULT_BGP_PORT: u16 = 179;
/// How long mesh peers keep a restarting node's routes (Calico's and BIRD's 120 s).
pub const DEFAULT_NODE_MESH_MAX_RESTART_TIME: Duration = Duration::from_secs(120);

/// One node of the cluster, as its agent registers it and every other agent reads it to
/// peer with it and route to its blocks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    /// Read by pools' `nodeSelector` and peers' `nodeSelector` / `peerSelector`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBGPSpec>,
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<Ipv4Addr>,
    /// `aa:bb:cc:dd:ee:ff`, lowercase (NOTES.md: `66` + five bytes of sha1 of the node name).
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<String>,
    #[serde(
        default,
        rename = "ipv6VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_vxlan_tunnel_addr: Option<Ipv6Addr>,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddrV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr_v6: Option<String>,
}

/// A node's BGP identity: Calico's `spec.bgp`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeBGPSpec {
    /// The node's address with the prefix of its subnet (`198.51.100.10/24`, host bits
    /// kept): the address peers dial, and the subnet CrossSubnet compares against.
    #[serde(
        default,
        rename = "ipv4Address",
        deserialize_with = "address_with_prefix_v4",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<Ipv4Net>,
    #[serde(
        default,
        rename = "ipv6Address",
        deserialize_with = "address_with_prefix_v6",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address: Option<Ipv6Net>,
    /// This node's AS; the BGPConfiguration's `asNumber` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// Set on route reflectors (RFC 4456 section 7, CLUSTER_ID); nodes sharing one form
    /// one reflector cluster.
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_ipip_tunnel_addr: Option<Ipv4Addr>,
}

impl Node {
    /// A node with nothing known about it but its name.
    pub fn new(name: impl Into<String>) -> Node {
        Node {
            name: name.into(),
            ..Node::default()
        }
    }

    /// The node's BGP addresses (without their prefixes), IPv4 first.
    pub fn bgp_addresses(&self) -> Vec<IpAddr> {
        let Some(bgp) = &self.bgp else {
            return Vec::new();
        };
        let mut addresses = Vec::with_capacity(2);
        if let Some(net) = bgp.ipv4_address {
            addresses.push(IpAddr::V4(net.addr()));
        }
        if let Some(net) = bgp.ipv6_address {
            addresses.push(IpAddr::V6(net.addr()));
        }
        addresses
    }

    /// The node's AS: its own, else `cluster_default` (the BGPConfiguration's).
    pub fn as_number_or(&self, cluster_default: u32) -> u32 {
        self.bgp
            .as_ref()
            .and_then(|bgp| bgp.as_number)
            .unwrap_or(cluster_default)
    }

    /// Whether the node is a route reflector (has a `routeReflectorClusterID`).
    pub fn is_route_reflector(&self) -> bool {
        self.bgp
            .as_ref()
            .is_some_and(|bgp| bgp.route_reflector_cluster_id.is_some())
    }
}

/// Reads `198.51.100.10/24`, or a bare `198.51.100.10` as a /32, as Calico does.
fn address_with_prefix_v4<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Ipv4Net>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| parse_address_with_prefix_v4(&text).map_err(serde::de::Error::custom))
        .transpose()
}

fn address_with_prefix_v6<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Ipv6Net>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| parse_address_with_prefix_v6(&text).map_err(serde::de::Error::custom))
        .transpose()
}

/// `198.51.100.10/24` (host bits kept) or `198.51.100.10` (a /32).
pub fn parse_address_with_prefix_v4(text: &str) -> Result<Ipv4Net, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<Ipv4Net>() {
        return Ok(net);
    }
    text.parse::<Ipv4Addr>()
        .map(Ipv4Net::from)
        .map_err(|_| {
            format!(
                "\"{text}\" is not an IPv4 address with its prefix; valid forms: 198.51.100.10/24, 198.51.100.10"
            )
        })
}

/// `2001:db8::10/64` (host bits kept) or `2001:db8::10` (a /128).
pub fn parse_address_with_prefix_v6(text: &str) -> Result<Ipv6Net, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<Ipv6Net>() {
        return Ok(net);
    }
    text.parse::<Ipv6Addr>()
        .map(Ipv6Net::from)
        .map_err(|_| {
            format!(
                "\"{text}\" is not an IPv6 address with its prefix; valid forms: 2001:db8::10/64, 2001:db8::10"
            )
        })
}

/// Cluster-wide BGP settings (`default`), or one node's (`node.<name>`), as in Calico.
/// Every field is optional so that what an operator wrote is what is stored and shown;
/// the accessors give the effective values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BGPConfiguration {
    pub name: String,
    /// Whether every node peers with every other (full-mesh iBGP). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// The AS of nodes that set none of their own. Default 64512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// The port the speaker listens on and dials mesh peers at. Default 179.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// How long mesh peers keep a restarting node's routes (graceful restart, RFC 4724
    /// "Restart Time"). Default 120 s.
    #[serde(
        default,
        with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_mesh_max_restart_time: Option<Duration>,
    /// Calico's log level names: Debug, Info, Warning, Error, Fatal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
}

impl BGPConfiguration {
    /// The cluster-wide configuration with every default: what applies when none is stored.
    pub fn cluster_default() -> BGPConfiguration {
        BGPConfiguration {
            name: DEFAULT_BGP_CONFIGURATION.to_string(),
            ..BGPConfiguration::default()
        }
    }

    pub fn node_to_node_mesh_enabled(&self) -> bool {
        self.node_to_node_mesh_enabled.unwrap_or(true)
    }

    pub fn as_number(&self) -> u32 {
        self.as_number.unwrap_or(DEFAULT_AS_NUMBER)
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port.unwrap_or(DEFAULT_BGP_PORT)
    }

    pub fn node_mesh_max_restart_time(&self) -> Duration {
        self.node_mesh_max_restart_time
            .unwrap_or(DEFAULT_NODE_MESH_MAX_RESTART_TIME)
    }
}

/// Which address a node's speaker uses as the source of its session with a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SourceAddress {
    /// The node's BGP address (Calico's default).
    #[default]
    UseNodeIP,
    /// Whatever the kernel picks for the route to the peer.
    None,
}

impl fmt::Display for SourceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceAddress::UseNodeIP => "UseNodeIP",
            SourceAddress::None => "None",
        })
    }
}

/// A BGP peering beyond (or instead of) the node-to-node mesh: an external router at
/// `peerIP`, or the tortie nodes matching `peerSelector` (route reflectors, typically
/// `peerSelector: route-reflector == 'true'`); from every node, from the one named by
/// `node`, or from those matching `nodeSelector`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeer {
    pub name: String,
    /// Only this node peers (Calico's "node specific" peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Only nodes matching this selector peer; neither `node` nor this: every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// The peer's address, with an optional port: `192.0.2.1`, `192.0.2.1:1790`,
    /// `2001:db8::1`, `[2001:db8::1]:1790`. See [`BGPPeer::peer_address`].
    #[serde(default, rename = "peerIP", skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<String>,
    /// Peer with the tortie nodes matching this selector, at their BGP addresses and AS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<String>,
    /// The peer's AS; required with `peerIP`, absent with `peerSelector` (the selected
    /// nodes' own AS applies), as Calico validates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// The TCP MD5 password (RFC 2385), as a plain value. Calico takes a `secretKeyRef`
    /// to a Kubernetes Secret instead; tortie's datastores have no secrets yet, so the value
    /// is stored here, readable by anyone who can read the datastore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// GTSM (RFC 5082): accept the peer's packets only if it is at most this many hops
    /// away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    /// How long to keep this peer's routes while it restarts (graceful restart, RFC 4724).
    #[serde(
        default,
        with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_restart_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddress>,
    /// Forward routes learned from this peer with their next hop unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_original_next_hop: bool,
}

impl BGPPeer {
    /// `peerIP` as an address and an optional port; `None` when the peer is a
    /// `peerSelector`. An unparsable `peerIP` (never stored: validation refuses it) reads as
    /// an error text naming the valid forms.
    pub fn peer_address(&self) -> Option<Result<(IpAddr, Option<u16>), String>> {
        self.peer_ip.as_deref().map(parse_peer_ip)
    }

    /// `peerIP` as the socket address to dial (the port defaults to 179).
    pub fn peer_socket_address(&self) -> Option<SocketAddr> {
        match self.peer_address()? {
            Ok((address, port)) => Some(SocketAddr::new(address, port.unwrap_or(DEFAULT_BGP_PORT))),
            Err(_) => None,
        }
    }

    /// Whether the peering is from every node (neither `node` nor `nodeSelector`).
    pub fn is_global(&self) -> bool {
        self.node.is_none()
            && self
                .node_selector
                .as_deref()
                .is_none_or(|s| s.trim().is_empty())
    }
}

impl BGPPeer {
    /// Whether `node` takes part in this peering: it is the peer's `node`, or matches its
    /// `nodeSelector`, or the peering is global.
    pub fn applies_to(&self, node: &Node) -> bool {
        if let Some(name) = &self.node {
            return *name == node.name;
        }
        match self.node_selector.as_deref() {
            None => true,
            Some(text) => {
                Selector::parse(text).is_ok_and(|selector| selector.matches(&node.labels))
            }
        }
    }

    /// The nodes a `peerSelector` peering reaches (none for a `peerIP` peer). The caller
    /// leaves itself out: a node does not peer with itself.
    pub fn selected_nodes<'a>(&self, nodes: &'a [Node]) -> Vec<&'a Node> {
        let Some(text) = self.peer_selector.as_deref() else {
            return Vec::new();
        };
        let Ok(selector) = Selector::parse(text) else {
            return Vec::new();
        };
        nodes
            .iter()
            .filter(|node| selector.matches(&node.labels))
            .collect()
    }
}

/// `192.0.2.1`, `192.0.2.1:1790`, `2001:db8::1` or `[2001:db8::1]:1790`.
pub fn parse_peer_ip(text: &str) -> Result<(IpAddr, Option<u16>), String> {
    let text = text.trim();
    let invalid = || {
        format!(
            "\"{text}\" is not an IP address or IP:port; valid forms: 192.0.2.1, 192.0.2.1:1790, 2001:db8::1, [2001:db8::1]:1790"
        )
    };
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok((address, None));
    }
    let socket: SocketAddr = text.parse().map_err(|_| invalid())?;
    if socket.port() == 0 {
        return Err(format!(
            "\"{text}\": port 0 is not a port; use 1–65535 or leave the port out (179)"
        ));
    }
    Ok((socket.ip(), Some(socket.port())))
}
