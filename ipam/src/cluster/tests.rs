//! Node registration, the address rule, peers, the effective BGP configuration and the
//! change signal, on the in-memory store.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::*;
use crate::assign::{AutoAssignArgs, TunnelType};
use crate::model::{EncapsulationMode, IPPool};
use crate::{Ipam, MemoryStore};

fn ipam() -> Ipam<MemoryStore> {
    Ipam::new(MemoryStore::new())
}

fn with_v4(address: &str) -> impl FnMut(&mut Node) {
    let net = parse_address_with_prefix_v4(address).unwrap();
    move |node: &mut Node| {
        node.bgp
            .get_or_insert_with(NodeBGPSpec::default)
            .ipv4_address = Some(net);
    }
}

fn peer(name: &str, peer_ip: &str, as_number: u32) -> BGPPeer {
    BGPPeer {
        name: name.to_string(),
        peer_ip: Some(peer_ip.to_string()),
        as_number: Some(as_number),
        ..BGPPeer::default()
    }
}

fn field_of(error: ClusterError) -> String {
    match error {
        ClusterError::Invalid { field, .. } => field,
        other => panic!("expected an invalid field, got {other}"),
    }
}

#[test]
fn register_creates_then_updates_and_keeps_what_others_set() {
    let ipam = ipam();
    let first = ipam
        .register_node("node-a", with_v4("198.51.100.10/24"))
        .unwrap();
    assert_eq!(first.applied, Applied::Created);
    assert_eq!(
        first
            .node
            .bgp
            .as_ref()
            .unwrap()
            .ipv4_address
            .unwrap()
            .to_string(),
        "198.51.100.10/24",
        "the prefix and the host bits are kept"
    );
    // An operator labels it a route reflector.
    let mut labelled = first.node.clone();
    labelled
        .labels
        .insert("route-reflector".to_string(), "true".to_string());
    labelled.bgp.as_mut().unwrap().route_reflector_cluster_id = Some("224.0.0.1".parse().unwrap());
    assert_eq!(ipam.put_node(labelled).unwrap(), Applied::Configured);
    // Registering again with the same address changes nothing and keeps the label.
    let again = ipam
        .register_node("node-a", with_v4("198.51.100.10/24"))
        .unwrap();
    assert_eq!(again.applied, Applied::Unchanged);
    assert_eq!(again.node.labels["route-reflector"], "true");
    assert!(again.node.is_route_reflector());
    // A new address is an update.
    let moved = ipam
        .register_node("node-a", with_v4("198.51.100.11/24"))
        .unwrap();
    assert_eq!(moved.applied, Applied::Configured);
    assert_eq!(ipam.nodes().unwrap().len(), 1);
    assert_eq!(ipam.node("node-a").unwrap().unwrap(), moved.node);
    assert!(ipam.node("node-b").unwrap().is_none());
}

#[test]
fn another_node_holding_the_address_is_refused_by_name() {
    let ipam = ipam();
    ipam.register_node("node-a", with_v4("198.51.100.10/24"))
        .unwrap();
    let before = ipam.generation().unwrap();
    // Same address, another prefix: still the same address.
    let error = ipam
        .register_node("node-b", with_v4("198.51.100.10/25"))
        .unwrap_err();
    match &error {
        ClusterError::AddressInUse {
            node,
            address,
            other,
        } => {
            assert_eq!(node, "node-b");
            assert_eq!(*address, "198.51.100.10".parse::<IpAddr>().unwrap());
            assert_eq!(other, "node-a");
        }
        other => panic!("{other}"),
    }
    let text = error.to_string();
    assert!(
        text.contains("198.51.100.10")
            && text.contains("node-a")
            && text.contains("tortiectl delete node node-a"),
        "{text}"
    );
    assert!(ipam.node("node-b").unwrap().is_none(), "nothing written");
    assert_eq!(ipam.generation().unwrap(), before);

    // IPv6 too, and through put_node.
    let v6 = |node: &mut Node| {
        node.bgp
            .get_or_insert_with(NodeBGPSpec::default)
            .ipv6_address = Some("2001:db8::10/64".parse().unwrap());
    };
    ipam.register_node("node-a", v6).unwrap();
    let mut other = Node::new("node-c");
    other.bgp = Some(NodeBGPSpec {
        ipv6_address: Some("2001:db8::10/128".parse().unwrap()),
        ..NodeBGPSpec::default()
    });
    assert!(matches!(
        ipam.put_node(other),
        Err(ClusterError::AddressInUse { .. })
    ));
    // A node re-registering its own address is not a conflict with itself.
    ipam.register_node("node-a", with_v4("198.51.100.10/24"))
        .unwrap();
}

#[test]
fn invalid_nodes_name_their_field() {
    let ipam = ipam();
    let cases: Vec<(Node, &str)> = vec![
        (Node::new("Node_A"), "metadata.name"),
        (
            Node {
                bgp: Some(NodeBGPSpec {
                    as_number: Some(0),
                    ..NodeBGPSpec::default()
                }),
                ..Node::new("n")
            },
            "spec.bgp.asNumber",
        ),
        (
            Node {
                vxlan_tunnel_mac_addr: Some("66:0a:1b".to_string()),
                ..Node::new("n")
            },
            "spec.vxlanTunnelMACAddr",
        ),
        (
            Node {
                bgp: Some(NodeBGPSpec {
                    ipv4_address: Some("0.0.0.0/0".parse().unwrap()),
                    ..NodeBGPSpec::default()
                }),
                ..Node::new("n")
            },
            "spec.bgp.ipv4Address",
        ),
    ];
    for (node, field) in cases {
        assert_eq!(field_of(ipam.put_node(node).unwrap_err()), field);
    }
    assert!(ipam.nodes().unwrap().is_empty());
}

#[test]
fn the_effective_bgp_configuration_has_calicos_defaults() {
    let ipam = ipam();
    let config = ipam.bgp_configuration().unwrap();
    assert_eq!(config.name, "default");
    assert!(config.node_to_node_mesh_enabled());
    assert_eq!(config.as_number(), 64512);
    assert_eq!(config.listen_port(), 179);
    assert_eq!(
        config.node_mesh_max_restart_time(),
        Duration::from_secs(120)
    );

    let stored = BGPConfiguration {
        node_to_node_mesh_enabled: Some(false),
        as_number: Some(65001),
        node_mesh_max_restart_time: Some(Duration::from_secs(300)),
        ..BGPConfiguration::cluster_default()
    };
    assert_eq!(
        ipam.put_bgp_configuration(stored.clone()).unwrap(),
        Applied::Created
    );
    let config = ipam.bgp_configuration().unwrap();
    assert_eq!(config, stored);
    assert!(!config.node_to_node_mesh_enabled());
    assert_eq!(config.as_number(), 65001);
    assert_eq!(config.listen_port(), 179);
    assert_eq!(
        config.node_mesh_max_restart_time(),
        Duration::from_secs(300)
    );

    // Per-node configurations may not set the cluster-only fields; other names are refused.
    let per_node = BGPConfiguration {
        name: "node.node-a".to_string(),
        as_number: Some(65002),
        ..BGPConfiguration::default()
    };
    assert_eq!(
        field_of(ipam.put_bgp_configuration(per_node).unwrap_err()),
        "spec.asNumber"
    );
    let stray = BGPConfiguration {
        name: "mine".to_string(),
        ..BGPConfiguration::default()
    };
    assert_eq!(
        field_of(ipam.put_bgp_configuration(stray).unwrap_err()),
        "metadata.name"
    );
    let port = BGPConfiguration {
        listen_port: Some(0),
        ..BGPConfiguration::cluster_default()
    };
    assert_eq!(
        field_of(ipam.put_bgp_configuration(port).unwrap_err()),
        "spec.listenPort"
    );
    let level = BGPConfiguration {
        log_severity_screen: Some("Loud".to_string()),
        ..BGPConfiguration::cluster_default()
    };
    assert_eq!(
        field_of(ipam.put_bgp_configuration(level).unwrap_err()),
        "spec.logSeverityScreen"
    );
    assert_eq!(ipam.bgp_configurations().unwrap().len(), 1);
}

#[test]
fn peers_are_validated_field_by_field() {
    let good = [
        peer("tor-1", "192.0.2.1", 64513),
        peer("tor-2", "192.0.2.2:1790", 64513),
        peer("tor-3", "[2001:db8::1]:1790", 4_200_000_000),
        BGPPeer {
            name: "rr".to_string(),
            peer_selector: Some("route-reflector == 'true'".to_string()),
            node_selector: Some("!has(route-reflector)".to_string()),
            ..BGPPeer::default()
        },
        BGPPeer {
            node: Some("node-a".to_string()),
            password: Some("s3cret".to_string()),
            ttl_security: Some(1),
            max_restart_time: Some(Duration::from_secs(90)),
            source_address: Some(SourceAddress::None),
            keep_original_next_hop: true,
            ..peer("tor-4", "2001:db8::2", 64513)
        },
    ];
    for peer in &good {
        validate_bgp_peer(peer).unwrap_or_else(|e| panic!("{}: {e}", peer.name));
    }
    let bad: Vec<(BGPPeer, &str)> = vec![
        (peer("p", "192.0.2.300", 64513), "spec.peerIP"),
        (peer("p", "192.0.2.1:0", 64513), "spec.peerIP"),
        (peer("p", "192.0.2.1:70000", 64513), "spec.peerIP"),
        (peer("p", "2001:db8::1:1790x", 64513), "spec.peerIP"),
        (peer("p", "224.0.0.5", 64513), "spec.peerIP"),
        (peer("p", "192.0.2.1", 0), "spec.asNumber"),
        (
            BGPPeer {
                as_number: None,
                ..peer("p", "192.0.2.1", 1)
            },
            "spec.asNumber",
        ),
        (
            BGPPeer {
                name: "p".to_string(),
                ..BGPPeer::default()
            },
            "spec.peerIP",
        ),
        (
            BGPPeer {
                peer_selector: Some("all()".to_string()),
                ..peer("p", "192.0.2.1", 1)
            },
            "spec.peerIP",
        ),
        (
            BGPPeer {
                name: "p".to_string(),
                peer_selector: Some("rr == ".to_string()),
                ..BGPPeer::default()
            },
            "spec.peerSelector",
        ),
        (
            BGPPeer {
                name: "p".to_string(),
                peer_selector: Some("all()".to_string()),
                as_number: Some(64512),
                ..BGPPeer::default()
            },
            "spec.asNumber",
        ),
        (
            BGPPeer {
                node: Some("a".to_string()),
                node_selector: Some("all()".to_string()),
                ..peer("p", "192.0.2.1", 1)
            },
            "spec.nodeSelector",
        ),
        (
            BGPPeer {
                node_selector: Some("a in {".to_string()),
                ..peer("p", "192.0.2.1", 1)
            },
            "spec.nodeSelector",
        ),
        (
            BGPPeer {
                ttl_security: Some(0),
                ..peer("p", "192.0.2.1", 1)
            },
            "spec.ttlSecurity",
        ),
        (
            BGPPeer {
                password: Some(String::new()),
                ..peer("p", "192.0.2.1", 1)
            },
            "spec.password",
        ),
        (peer("P!", "192.0.2.1", 1), "metadata.name"),
    ];
    for (peer, field) in bad {
        let error = validate_bgp_peer(&peer).unwrap_err();
        let text = error.to_string();
        assert_eq!(field_of(error), field, "{peer:?}: {text}");
    }
    let error = validate_bgp_peer(&peer("p", "192.0.2.300", 1))
        .unwrap_err()
        .to_string();
    assert!(error.contains("valid forms"), "{error}");
}

#[test]
fn peers_apply_to_nodes_and_select_nodes() {
    let mut reflector = Node::new("rr-1");
    reflector
        .labels
        .insert("route-reflector".to_string(), "true".to_string());
    let plain = Node::new("node-a");
    let nodes = vec![plain.clone(), reflector.clone()];

    let global = peer("tor", "192.0.2.1", 64513);
    assert!(global.is_global());
    assert!(global.applies_to(&plain) && global.applies_to(&reflector));
    assert!(global.selected_nodes(&nodes).is_empty());
    assert_eq!(
        global.peer_socket_address().unwrap().to_string(),
        "192.0.2.1:179"
    );
    assert_eq!(
        peer("tor", "[2001:db8::1]:1790", 1)
            .peer_socket_address()
            .unwrap()
            .to_string(),
        "[2001:db8::1]:1790"
    );

    let specific = BGPPeer {
        node: Some("node-a".to_string()),
        ..global.clone()
    };
    assert!(!specific.is_global());
    assert!(specific.applies_to(&plain) && !specific.applies_to(&reflector));

    let to_reflectors = BGPPeer {
        name: "to-rr".to_string(),
        node_selector: Some("!has(route-reflector)".to_string()),
        peer_selector: Some("route-reflector == 'true'".to_string()),
        ..BGPPeer::default()
    };
    assert!(to_reflectors.applies_to(&plain) && !to_reflectors.applies_to(&reflector));
    let selected: Vec<&str> = to_reflectors
        .selected_nodes(&nodes)
        .iter()
        .map(|node| node.name.as_str())
        .collect();
    assert_eq!(selected, ["rr-1"]);

    let ipam = ipam();
    assert_eq!(ipam.put_bgp_peer(global.clone()).unwrap(), Applied::Created);
    assert_eq!(
        ipam.put_bgp_peer(global.clone()).unwrap(),
        Applied::Unchanged
    );
    assert_eq!(ipam.put_bgp_peer(to_reflectors).unwrap(), Applied::Created);
    let names: Vec<String> = ipam
        .bgp_peers()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["to-rr", "tor"]);
    assert_eq!(ipam.bgp_peer("tor").unwrap().unwrap(), global);
}

#[test]
fn generation_moves_on_every_write_and_only_then() {
    let ipam = ipam();
    let start = ipam.generation().unwrap();
    assert_eq!(ipam.generation().unwrap(), start, "a read is not a write");
    ipam.put_bgp_peer(peer("tor", "192.0.2.1", 64513)).unwrap();
    let created = ipam.generation().unwrap();
    assert!(created > start);
    ipam.put_bgp_peer(peer("tor", "192.0.2.1", 64513)).unwrap();
    assert_eq!(
        ipam.generation().unwrap(),
        created,
        "unchanged writes nothing"
    );
    ipam.put_bgp_peer(peer("tor", "192.0.2.2", 64513)).unwrap();
    let updated = ipam.generation().unwrap();
    assert!(updated > created);
    ipam.delete_resource(crate::Kind::BGPPeer, "tor").unwrap();
    let deleted = ipam.generation().unwrap();
    assert!(deleted > updated, "a delete is a change");
    // A refused write changes nothing.
    assert!(ipam.delete_resource(crate::Kind::BGPPeer, "tor").is_err());
    assert!(ipam.put_bgp_peer(peer("bad", "nowhere", 1)).is_err());
    assert_eq!(ipam.generation().unwrap(), deleted);
    // IPAM's own writes count too.
    ipam.create_pool(IPPool::new("pods", "198.18.0.0/24".parse().unwrap()))
        .unwrap();
    assert!(ipam.generation().unwrap() > deleted);
}

#[test]
fn deleting_a_node_releases_its_tunnel_address_and_empty_blocks() {
    let ipam = ipam();
    let mut pool = IPPool::new("pods", "198.18.0.0/24".parse().unwrap());
    pool.ipip_mode = EncapsulationMode::Always;
    ipam.create_pool(pool).unwrap();
    ipam.register_node("node-a", with_v4("198.51.100.10/24"))
        .unwrap();
    let tunnel = ipam
        .assign_tunnel_address("node-a", &BTreeMap::new(), TunnelType::Ipip)
        .unwrap();
    // A pod in a second block keeps that block.
    let pod = ipam
        .auto_assign(&AutoAssignArgs::new("net.pod", "node-a"))
        .unwrap()
        .ipv4[0]
        .address;
    let tunnel_block: IpNet = "198.18.0.0/24".parse::<IpNet>().unwrap();
    assert!(tunnel_block.contains(&tunnel));
    let deleted = ipam.delete_node("node-a").unwrap();
    assert_eq!(deleted.node.as_ref().unwrap().name, "node-a");
    assert_eq!(deleted.released_tunnel_addresses, vec![tunnel]);
    // The tunnel and the pod share the node's one block: it still holds the pod.
    assert!(deleted.released_blocks.is_empty());
    assert_eq!(deleted.kept_blocks.len(), 1);
    assert!(deleted.kept_blocks[0].contains(&pod));
    assert!(ipam.node("node-a").unwrap().is_none());

    ipam.release_handle("net.pod").unwrap();
    // No Node left, but the node still owns a block: deleting again finishes the job.
    let again = ipam.delete_node("node-a").unwrap();
    assert!(again.node.is_none());
    assert_eq!(again.released_blocks.len(), 1);
    assert!(again.kept_blocks.is_empty());
    assert!(ipam.affinities(Some("node-a")).unwrap().is_empty());
    assert!(ipam.check().unwrap().is_clean());
    match ipam.delete_node("node-a").unwrap_err() {
        ClusterError::NotFound { kind, name } => {
            assert_eq!(kind, crate::Kind::Node);
            assert_eq!(name, "node-a");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn apply_resource_guards_pools_and_refuses_ipam_internals() {
    let ipam = ipam();
    let pool = IPPool::new("pods", "198.18.0.0/24".parse().unwrap());
    assert_eq!(
        ipam.apply_resource(pool.clone().into()).unwrap(),
        Applied::Created
    );
    assert_eq!(
        ipam.apply_resource(pool.clone().into()).unwrap(),
        Applied::Unchanged
    );
    let nat = IPPool {
        nat_outgoing: true,
        ..pool.clone()
    };
    assert_eq!(
        ipam.apply_resource(nat.into()).unwrap(),
        Applied::Configured
    );
    let moved = IPPool::new("pods", "198.19.0.0/24".parse().unwrap());
    assert_eq!(
        field_of(ipam.apply_resource(moved.into()).unwrap_err()),
        "spec.cidr"
    );
    let overlapping = IPPool::new("other", "198.18.0.128/25".parse().unwrap());
    assert!(
        ipam.apply_resource(overlapping.into())
            .unwrap_err()
            .to_string()
            .contains("overlaps pool pods")
    );
    let config = crate::IPAMConfig::default();
    assert!(matches!(
        ipam.apply_resource(crate::Resource::IPAMConfig(config)),
        Err(ClusterError::ReadOnly { .. })
    ));
    ipam.delete_resource(crate::Kind::IPPool, "pods").unwrap();
    match ipam
        .delete_resource(crate::Kind::IPPool, "pods")
        .unwrap_err()
    {
        ClusterError::NotFound { kind, name } => {
            assert_eq!((kind, name.as_str()), (crate::Kind::IPPool, "pods"));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn stored_form_round_trips_through_json() {
    let node = Node {
        labels: BTreeMap::from([("rack".to_string(), "r1".to_string())]),
        bgp: Some(NodeBGPSpec {
            ipv4_address: Some("198.51.100.10/24".parse().unwrap()),
            ipv6_address: Some("2001:db8::10/64".parse().unwrap()),
            as_number: Some(65001),
            route_reflector_cluster_id: Some("224.0.0.1".parse().unwrap()),
            ipv4_ipip_tunnel_addr: Some("198.18.0.1".parse().unwrap()),
        }),
        ipv4_vxlan_tunnel_addr: Some("198.18.1.1".parse().unwrap()),
        vxlan_tunnel_mac_addr: Some("66:0a:1b:2c:3d:4e".to_string()),
        ..Node::new("node-a")
    };
    let text = crate::Resource::Node(node.clone()).to_json().unwrap();
    for field in [
        "\"ipv4Address\":\"198.51.100.10/24\"",
        "\"asNumber\":65001",
        "\"routeReflectorClusterID\":\"224.0.0.1\"",
        "\"ipv4IPIPTunnelAddr\"",
        "\"ipv4VXLANTunnelAddr\"",
        "\"vxlanTunnelMACAddr\"",
    ] {
        assert!(text.contains(field), "{field} in {text}");
    }
    assert_eq!(
        crate::Resource::from_json(crate::Kind::Node, &text).unwrap(),
        crate::Resource::Node(node)
    );
    let peer = BGPPeer {
        max_restart_time: Some(Duration::from_secs(90)),
        ttl_security: Some(2),
        ..peer("tor", "192.0.2.1:1790", 64513)
    };
    let text = crate::Resource::BGPPeer(peer.clone()).to_json().unwrap();
    assert!(text.contains("\"peerIP\":\"192.0.2.1:1790\""), "{text}");
    assert!(text.contains("\"maxRestartTime\":\"90s\""), "{text}");
    assert!(text.contains("\"ttlSecurity\":2"), "{text}");
    assert_eq!(
        crate::Resource::from_json(crate::Kind::BGPPeer, &text).unwrap(),
        crate::Resource::BGPPeer(peer)
    );
    // Calico's bare address reads as a /32.
    let bare: Node =
        serde_json::from_str(r#"{"name":"n","bgp":{"ipv4Address":"198.51.100.10"}}"#).unwrap();
    assert_eq!(
        bare.bgp.unwrap().ipv4_address.unwrap().to_string(),
        "198.51.100.10/32"
    );
}

#[test]
fn a_batch_is_checked_against_the_store_and_itself_before_writing() {
    let ipam = ipam();
    ipam.register_node("node-a", with_v4("198.51.100.10/24"))
        .unwrap();
    ipam.create_pool(IPPool::new("pods", "198.18.0.0/24".parse().unwrap()))
        .unwrap();
    let node = |name: &str, address: &str| {
        let mut node = Node::new(name);
        with_v4(address)(&mut node);
        crate::Resource::Node(node)
    };
    let pool =
        |name: &str, cidr: &str| crate::Resource::IPPool(IPPool::new(name, cidr.parse().unwrap()));
    let fine = [
        node("node-b", "198.51.100.11/24"),
        node("node-a", "198.51.100.12/24"),
        node("node-c", "198.51.100.10/24"),
        pool("more", "198.18.1.0/24"),
        pool("pods", "198.18.0.0/24"),
    ];
    ipam.check_resources(&fine).unwrap();
    let clashes = [
        node("node-b", "198.51.100.11/24"),
        node("node-c", "198.51.100.11/24"),
    ];
    let (index, error) = ipam.check_resources(&clashes).unwrap_err();
    assert_eq!(index, 1);
    assert!(matches!(error, ClusterError::AddressInUse { ref other, .. } if other == "node-b"));
    let (index, _) = ipam
        .check_resources(&[node("node-b", "198.51.100.10/24")])
        .unwrap_err();
    assert_eq!(index, 0);
    let (index, error) = ipam
        .check_resources(&[
            pool("more", "198.18.1.0/24"),
            pool("again", "198.18.1.128/25"),
        ])
        .unwrap_err();
    assert_eq!(index, 1);
    assert!(error.to_string().contains("overlaps pool more"), "{error}");
    let (_, error) = ipam
        .check_resources(&[pool("pods", "198.18.0.0/23")])
        .unwrap_err();
    assert_eq!(field_of(error), "spec.cidr");
    assert_eq!(ipam.nodes().unwrap().len(), 1, "checking writes nothing");
}

#[test]
fn a_nodes_own_bgp_configuration_is_laid_over_the_clusters() {
    let ipam = ipam();
    ipam.put_bgp_configuration(BGPConfiguration {
        as_number: Some(65001),
        log_severity_screen: Some("Warning".to_string()),
        ..BGPConfiguration::cluster_default()
    })
    .unwrap();
    ipam.put_bgp_configuration(BGPConfiguration {
        name: "node.node-a".to_string(),
        listen_port: Some(1790),
        ..BGPConfiguration::default()
    })
    .unwrap();
    let own = ipam.bgp_configuration_for("node-a").unwrap();
    assert_eq!(own.name, "default");
    assert_eq!(own.listen_port(), 1790);
    assert_eq!(own.as_number(), 65001);
    assert_eq!(own.log_severity_screen.as_deref(), Some("Warning"));
    let other = ipam.bgp_configuration_for("node-b").unwrap();
    assert_eq!(other.listen_port(), 179);
    assert_eq!(other, ipam.bgp_configuration().unwrap());
}

#[test]
fn concurrent_registrations_on_one_sqlite_file_lose_no_update() {
    let dir = std::env::temp_dir().join(format!("tortie-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tortie.db");
    crate::SqliteStore::open(&path).unwrap();
    // Eight writers, each with its own handle (as separate processes have), each adding
    // its own label to one node a few times: every label must survive.
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let path = path.clone();
            std::thread::spawn(move || {
                let ipam = Ipam::new(crate::SqliteStore::open(&path).unwrap());
                for round in 0..5 {
                    ipam.register_node("node-a", |node| {
                        node.labels
                            .insert(format!("writer-{writer}"), round.to_string());
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let ipam = Ipam::new(crate::SqliteStore::open(&path).unwrap());
    let node = ipam.node("node-a").unwrap().unwrap();
    assert_eq!(node.labels.len(), 8, "{:?}", node.labels);
    assert!(node.labels.values().all(|round| round == "4"));
    let _ = std::fs::remove_dir_all(&dir);
}
