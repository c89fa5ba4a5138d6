//! The rules a Node, BGPConfiguration or BGPPeer must keep before it is stored. Each
//! refusal names the field (as Calico spells it, under `spec.` or `metadata.`) and the
//! valid forms.

use super::ClusterError;
use super::model::{BGPConfiguration, BGPPeer, DEFAULT_BGP_CONFIGURATION, Node, parse_peer_ip};
use crate::model::Kind;
use crate::selector::Selector;

fn invalid(kind: Kind, name: &str, field: &str, problem: impl Into<String>) -> ClusterError {
    ClusterError::Invalid {
        kind,
        name: name.to_string(),
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// A Kubernetes object name (RFC 1123 subdomain): what every datastore accepts as a name.
pub fn validate_name(kind: Kind, name: &str) -> Result<(), ClusterError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(invalid(
            kind,
            name,
            "metadata.name",
            format!(
                "\"{name}\" must be 1–253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
            ),
        ))
    }
}

fn validate_as_number(
    kind: Kind,
    name: &str,
    field: &str,
    as_number: u32,
) -> Result<(), ClusterError> {
    // RFC 7607: AS 0 is reserved and never used in a session.
    if as_number == 0 {
        return Err(invalid(
            kind,
            name,
            field,
            "0 is reserved (RFC 7607); use 1–4294967295, e.g. 64512",
        ));
    }
    Ok(())
}

fn validate_selector(kind: Kind, name: &str, field: &str, text: &str) -> Result<(), ClusterError> {
    Selector::parse(text).map(|_| ()).map_err(|error| {
        invalid(
            kind,
            name,
            field,
            format!("{error}; valid forms: all(), has(k), k == 'v', k != 'v', k in {{'a', 'b'}}, joined with && and ||"),
        )
    })
}

/// `aa:bb:cc:dd:ee:ff`: six bytes of hexadecimal, separated by colons.
pub fn is_mac_address(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|part| part.len() == 2 && part.chars().all(|c| c.is_ascii_hexdigit()))
}

pub fn validate_node(node: &Node) -> Result<(), ClusterError> {
    let name = node.name.as_str();
    validate_name(Kind::Node, name)?;
    for key in node.labels.keys() {
        if key.trim().is_empty() {
            return Err(invalid(
                Kind::Node,
                name,
                "metadata.labels",
                "a label key is empty",
            ));
        }
    }
    if let Some(bgp) = &node.bgp {
        if let Some(as_number) = bgp.as_number {
            validate_as_number(Kind::Node, name, "spec.bgp.asNumber", as_number)?;
        }
        if let Some(net) = bgp.ipv4_address
            && (net.addr().is_unspecified() || net.addr().is_multicast())
        {
            return Err(invalid(
                Kind::Node,
                name,
                "spec.bgp.ipv4Address",
                format!(
                    "{net} is not a unicast address; give the node's own address with its prefix, e.g. 198.51.100.10/24"
                ),
            ));
        }
        if let Some(net) = bgp.ipv6_address
            && (net.addr().is_unspecified() || net.addr().is_multicast())
        {
            return Err(invalid(
                Kind::Node,
                name,
                "spec.bgp.ipv6Address",
                format!(
                    "{net} is not a unicast address; give the node's own address with its prefix, e.g. 2001:db8::10/64"
                ),
            ));
        }
    }
    for (field, mac) in [
        ("spec.vxlanTunnelMACAddr", &node.vxlan_tunnel_mac_addr),
        ("spec.vxlanTunnelMACAddrV6", &node.vxlan_tunnel_mac_addr_v6),
    ] {
        if let Some(mac) = mac
            && !is_mac_address(mac)
        {
            return Err(invalid(
                Kind::Node,
                name,
                field,
                format!("\"{mac}\" is not a MAC address; valid form: 66:0a:1b:2c:3d:4e"),
            ));
        }
    }
    Ok(())
}

/// Calico's log level names, as `logSeverityScreen` takes them.
pub const LOG_SEVERITIES: [&str; 5] = ["Debug", "Info", "Warning", "Error", "Fatal"];

pub fn validate_bgp_configuration(config: &BGPConfiguration) -> Result<(), ClusterError> {
    let name = config.name.as_str();
    validate_name(Kind::BGPConfiguration, name)?;
    let per_node = name.strip_prefix("node.");
    if name != DEFAULT_BGP_CONFIGURATION && per_node.is_none_or(str::is_empty) {
        return Err(invalid(
            Kind::BGPConfiguration,
            name,
            "metadata.name",
            format!(
                "\"{name}\": valid names are default (the cluster's) and node.<node name> (one node's)"
            ),
        ));
    }
    if per_node.is_some() {
        // Calico: these two only make sense cluster-wide.
        if config.node_to_node_mesh_enabled.is_some() {
            return Err(invalid(
                Kind::BGPConfiguration,
                name,
                "spec.nodeToNodeMeshEnabled",
                "can only be set in the default BGPConfiguration",
            ));
        }
        if config.as_number.is_some() {
            return Err(invalid(
                Kind::BGPConfiguration,
                name,
                "spec.asNumber",
                "can only be set in the default BGPConfiguration; set a node's own AS in its Node (spec.bgp.asNumber)",
            ));
        }
    }
    if let Some(as_number) = config.as_number {
        validate_as_number(Kind::BGPConfiguration, name, "spec.asNumber", as_number)?;
    }
    if config.listen_port == Some(0) {
        return Err(invalid(
            Kind::BGPConfiguration,
            name,
            "spec.listenPort",
            "0 is not a port; use 1–65535 (default 179)",
        ));
    }
    if let Some(level) = &config.log_severity_screen
        && !LOG_SEVERITIES.contains(&level.as_str())
    {
        return Err(invalid(
            Kind::BGPConfiguration,
            name,
            "spec.logSeverityScreen",
            format!("\"{level}\"; valid: {}", LOG_SEVERITIES.join(", ")),
        ));
    }
    Ok(())
}

pub fn validate_bgp_peer(peer: &BGPPeer) -> Result<(), ClusterError> {
    let name = peer.name.as_str();
    let kind = Kind::BGPPeer;
    validate_name(kind, name)?;
    match (&peer.peer_ip, &peer.peer_selector) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                kind,
                name,
                "spec.peerIP",
                "set together with spec.peerSelector; set exactly one: peerIP for a router, peerSelector for other tortie nodes",
            ));
        }
        (None, None) => {
            return Err(invalid(
                kind,
                name,
                "spec.peerIP",
                "missing; set exactly one of spec.peerIP (e.g. 192.0.2.1 or 192.0.2.1:1790) and spec.peerSelector (e.g. route-reflector == 'true')",
            ));
        }
        (Some(peer_ip), None) => {
            let (address, _) = parse_peer_ip(peer_ip)
                .map_err(|problem| invalid(kind, name, "spec.peerIP", problem))?;
            if address.is_unspecified() || address.is_multicast() {
                return Err(invalid(
                    kind,
                    name,
                    "spec.peerIP",
                    format!("{address} is not a unicast address"),
                ));
            }
            match peer.as_number {
                None => {
                    return Err(invalid(
                        kind,
                        name,
                        "spec.asNumber",
                        "missing; a peerIP peer needs its AS, 1–4294967295 (e.g. 64513)",
                    ));
                }
                Some(as_number) => validate_as_number(kind, name, "spec.asNumber", as_number)?,
            }
        }
        (None, Some(selector)) => {
            validate_selector(kind, name, "spec.peerSelector", selector)?;
            if peer.as_number.is_some() {
                return Err(invalid(
                    kind,
                    name,
                    "spec.asNumber",
                    "must be empty with spec.peerSelector: the selected nodes' own AS applies",
                ));
            }
        }
    }
    if peer.node.is_some() && peer.node_selector.is_some() {
        return Err(invalid(
            kind,
            name,
            "spec.nodeSelector",
            "set together with spec.node; set at most one (neither: every node peers)",
        ));
    }
    if let Some(node) = &peer.node {
        validate_name(Kind::Node, node).map_err(|_| {
            invalid(
                kind,
                name,
                "spec.node",
                format!("\"{node}\" is not a node name (lowercase letters, digits, '-' and '.')"),
            )
        })?;
    }
    if let Some(selector) = &peer.node_selector {
        validate_selector(kind, name, "spec.nodeSelector", selector)?;
    }
    if peer.ttl_security == Some(0) {
        return Err(invalid(
            kind,
            name,
            "spec.ttlSecurity",
            "0 hops; use 1–255 (1: the peer is directly connected), or leave it out",
        ));
    }
    if peer.password.as_deref() == Some("") {
        return Err(invalid(
            kind,
            name,
            "spec.password",
            "is empty; give the TCP MD5 password or leave the field out",
        ));
    }
    Ok(())
}
