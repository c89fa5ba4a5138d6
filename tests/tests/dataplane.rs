//! tortie-node's dataplane reconciler against a real kernel, each test in namespaces of its
//! own: the VXLAN device with its neighbour and FDB entries, `proto tortie` routes of every
//! kind, reconcile-never-flush (stale routes go, other protocols' and still-wanted routes
//! stay the same kernel objects), pod traffic across VXLAN, the pipelined route updates, and
//! a kernel without IPIP saying so. IPIP itself runs in the VM tier (tests/vm.rs).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;
use tortie_agent::dataplane::{
    self, Dataplane, Desired, Device, IpipSupport, Report, RouteTarget, RoutingContext, Tunl0Spec,
    VXLAN_PORT, VXLAN_VNI, VxlanPeer, VxlanSpec, remote_route, vxlan_mac,
};
use tortie_ipam::model::{EncapsulationMode, IPPool};
use tortie_tests::{Exec, Netns, block_on_in, veth, vm, wait_until};

const WITHIN: Duration = Duration::from_secs(30);

/// A node namespace whose `eth0` (198.51.100.<host>/24) leads to a far end in `far`
/// (198.51.100.<far_host>/24), both up with carrier.
fn wire(node: &Netns, host: u8, far: &Netns, far_host: u8) {
    veth(node, "eth0", far, "eth0");
    node.add_address("eth0", &format!("198.51.100.{host}/24"));
    far.add_address("eth0", &format!("198.51.100.{far_host}/24"));
    node.link_up("eth0");
    far.link_up("eth0");
    node.wait_carrier("eth0");
}

fn reconcile(netns: &Netns, desired: &Desired) -> Report {
    let desired = desired.clone();
    block_on_in(netns, move || async move {
        let mut dataplane = Dataplane::connect()
            .await
            .unwrap_or_else(|error| panic!("connect: {error}"));
        dataplane
            .reconcile(&desired)
            .await
            .unwrap_or_else(|error| panic!("reconcile: {error}"))
    })
}

fn kernel_routes(netns: &Netns) -> BTreeMap<IpNet, RouteTarget> {
    block_on_in(netns, || async {
        let mut dataplane = Dataplane::connect()
            .await
            .unwrap_or_else(|error| panic!("connect: {error}"));
        dataplane
            .routes()
            .await
            .unwrap_or_else(|error| panic!("routes: {error}"))
    })
}

/// `ip -4 route`, with protocol 75 spelled as a number whether or not this machine's
/// /etc/iproute2/rt_protos.d names it (`tortie-node` writes the name on a real node).
fn ipv4_routes(netns: &Netns) -> String {
    netns
        .ip(&["-4", "route"])
        .stdout
        .replace("proto tortie", "proto 75")
}

/// `netns`'s IPv4 routes, after asserting that each of `wanted` is among them (the table
/// is shown when one is not).
#[track_caller]
fn routes_with(netns: &Netns, wanted: &[&str]) -> String {
    let routes = ipv4_routes(netns);
    for route in wanted {
        assert!(routes.contains(route), "no `{route}` in:\n{routes}");
    }
    routes
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn via(gateway: &str, device: Device, onlink: bool) -> RouteTarget {
    RouteTarget::Via {
        gateway: ip(gateway),
        device,
        onlink,
    }
}

fn eth0() -> Device {
    Device::Named("eth0".to_string())
}

fn show_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn vxlan_spec(local: &str, address: &str, node_name: &str) -> VxlanSpec {
    VxlanSpec {
        vni: VXLAN_VNI,
        port: VXLAN_PORT,
        mac: vxlan_mac(node_name),
        local: local.parse().unwrap(),
        parent: "eth0".to_string(),
        address: address.parse().unwrap(),
        mtu: 1450,
    }
}

fn peer(tunnel: &str, node_name: &str, node_address: &str) -> VxlanPeer {
    VxlanPeer {
        tunnel_address: tunnel.parse().unwrap(),
        mac: vxlan_mac(node_name),
        node_address: node_address.parse().unwrap(),
    }
}

fn assert_clean(report: &Report, what: &str) {
    assert!(
        report.failures.is_empty(),
        "{what}: {report}: {:#?}",
        report.failures
    );
}

#[test]
fn vxlan_tortie_gets_its_settings_and_one_neighbour_and_fdb_entry_per_peer() {
    let node = Netns::new("dp-vx-node");
    let far = Netns::new("dp-vx-far");
    wire(&node, 1, &far, 2);
    let mut desired = Desired {
        vxlan: Some(vxlan_spec("198.51.100.1", "198.18.0.1", "node-a")),
        vxlan_peers: vec![
            peer("198.18.1.1", "node-b", "198.51.100.2"),
            peer("198.18.2.1", "node-c", "198.51.100.3"),
        ],
        ..Desired::default()
    };
    let report = reconcile(&node, &desired);
    assert_clean(&report, "first reconcile");

    let details = node
        .ip(&["-d", "link", "show", "dev", "vxlan.tortie"])
        .stdout;
    for expected in [
        "mtu 1450 ",
        &format!("link/ether {} ", show_mac(vxlan_mac("node-a"))),
        "vxlan id 4096 ",
        "local 198.51.100.1 ",
        "dev eth0 ",
        "dstport 4789 ",
        "nolearning ",
    ] {
        assert!(
            details.contains(expected),
            "{expected:?} not in:\n{details}"
        );
    }
    assert!(node.link_state("vxlan.tortie").admin_up(), "{details}");
    let addresses = node
        .ip(&["-4", "-o", "address", "show", "dev", "vxlan.tortie"])
        .stdout;
    assert_eq!(addresses.lines().count(), 1, "{addresses}");
    assert!(addresses.contains("inet 198.18.0.1/32 "), "{addresses}");

    let neighbours = |node: &Netns| node.ip(&["neigh", "show", "dev", "vxlan.tortie"]).stdout;
    let fdb = |node: &Netns| {
        Exec::new("bridge")
            .args(["fdb", "show", "dev", "vxlan.tortie"])
            .run_in(node)
            .expect_success()
            .stdout
    };
    let (seen_neighbours, seen_fdb) = (neighbours(&node), fdb(&node));
    for (tunnel, name, node_address) in [
        ("198.18.1.1", "node-b", "198.51.100.2"),
        ("198.18.2.1", "node-c", "198.51.100.3"),
    ] {
        let mac = show_mac(vxlan_mac(name));
        assert!(
            seen_neighbours.contains(&format!("{tunnel} lladdr {mac} PERMANENT")),
            "{seen_neighbours}"
        );
        assert!(
            seen_fdb.contains(&format!("{mac} dst {node_address} self permanent")),
            "{seen_fdb}"
        );
    }

    let again = reconcile(&node, &desired);
    assert_eq!(again.changes(), 0, "second reconcile: {again}");
    assert_clean(&again, "second reconcile");

    // node-c leaves the cluster: its entries go, node-b's stay.
    desired.vxlan_peers.truncate(1);
    let report = reconcile(&node, &desired);
    assert_clean(&report, "after node-c left");
    assert_eq!(report.removed, 2, "its neighbour and FDB entry: {report}");
    let (seen_neighbours, seen_fdb) = (neighbours(&node), fdb(&node));
    assert!(!seen_neighbours.contains("198.18.2.1"), "{seen_neighbours}");
    assert!(!seen_fdb.contains("198.51.100.3"), "{seen_fdb}");
    assert!(seen_neighbours.contains("198.18.1.1"), "{seen_neighbours}");
    assert!(seen_fdb.contains("198.51.100.2"), "{seen_fdb}");

    // No VXLAN pool any more: the device goes.
    let report = reconcile(&node, &Desired::default());
    assert_clean(&report, "without VXLAN");
    let links = node.ip(&["-o", "link"]).stdout;
    assert!(!links.contains("vxlan.tortie"), "{links}");
}

#[test]
fn routes_of_every_kind_carry_protocol_75_and_a_second_reconcile_changes_nothing() {
    let node = Netns::new("dp-routes");
    let far = Netns::new("dp-routes-far");
    wire(&node, 1, &far, 2);
    node.add_address("eth0", "2001:db8::1/64");
    set_ip_forward(&node, 0);
    let desired = Desired {
        routes: BTreeMap::from([
            (net("198.18.0.0/26"), RouteTarget::Blackhole),
            (net("198.18.1.0/26"), via("198.51.100.2", eth0(), false)),
            (net("198.18.0.5/32"), RouteTarget::Link { device: eth0() }),
            (net("2001:db8:1::/122"), via("2001:db8::2", eth0(), false)),
            (net("2001:db8:2::/122"), RouteTarget::Blackhole),
        ]),
        ..Desired::default()
    };
    let report = reconcile(&node, &desired);
    assert_clean(&report, "first reconcile");
    assert!(report.added >= 5, "{report}");

    let v4 = node.ip(&["-4", "route", "show", "proto", "75"]).stdout;
    for expected in [
        "blackhole 198.18.0.0/26",
        "198.18.1.0/26 via 198.51.100.2 dev eth0",
        "198.18.0.5 dev eth0 scope link",
    ] {
        assert!(v4.contains(expected), "{expected:?} not in:\n{v4}");
    }
    let v6 = node.ip(&["-6", "route", "show", "proto", "75"]).stdout;
    assert!(
        v6.contains("2001:db8:1::/122 via 2001:db8::2 dev eth0"),
        "{v6}"
    );
    assert!(v6.contains("blackhole 2001:db8:2::/122"), "{v6}");
    assert_eq!(kernel_routes(&node), desired.routes);

    let again = reconcile(&node, &desired);
    assert_eq!(again.changes(), 0, "second reconcile: {again}");
    assert_clean(&again, "second reconcile");

    assert_eq!(ip_forward(&node), "1");
}

fn ip_forward(netns: &Netns) -> String {
    Exec::new("sysctl")
        .args(["-n", "net.ipv4.ip_forward"])
        .run_in(netns)
        .expect_success()
        .stdout
        .trim()
        .to_string()
}

fn set_ip_forward(netns: &Netns, value: u8) {
    Exec::new("sysctl")
        .args(["-w", &format!("net.ipv4.ip_forward={value}")])
        .run_in(netns)
        .expect_success();
}

/// The agent may connect on one thread and reconcile from another (a multi-threaded
/// runtime moves tasks between workers). Everything must still happen in the namespace
/// the dataplane was connected in: here it is polled from a thread inside a decoy
/// namespace, which must see nothing of it.
#[test]
fn a_dataplane_works_in_the_namespace_it_was_connected_in_whichever_thread_polls_it() {
    let node = Netns::new("dp-thread-node");
    let decoy = Netns::new("dp-thread-decoy");
    set_ip_forward(&node, 0);
    set_ip_forward(&decoy, 0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let on_runtime = runtime.handle().clone();
    let dataplane = node
        .spawn_thread(move || on_runtime.block_on(Dataplane::connect()))
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        .expect("connect");
    let on_runtime = runtime.handle().clone();
    let desired = Desired {
        routes: BTreeMap::from([(net("198.18.0.0/26"), RouteTarget::Blackhole)]),
        ..Desired::default()
    };
    let report = decoy
        .spawn_thread(move || {
            let mut dataplane = dataplane;
            on_runtime.block_on(async move { dataplane.reconcile(&desired).await })
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        .expect("reconcile");
    assert_clean(&report, "reconcile from the decoy's thread");
    assert!(ipv4_routes(&node).contains("blackhole 198.18.0.0/26 proto 75"));
    assert_eq!(ip_forward(&node), "1");
    let decoy_routes = ipv4_routes(&decoy);
    assert!(!decoy_routes.contains("198.18.0.0/26"), "{decoy_routes}");
    assert_eq!(ip_forward(&decoy), "0");
}

#[test]
fn stale_routes_go_while_other_protocols_and_still_wanted_routes_stay_untouched() {
    let node = Netns::new("dp-stale");
    let far = Netns::new("dp-stale-far");
    wire(&node, 1, &far, 2);
    // What a previous run left, and what someone else installed.
    node.ip(&[
        "route",
        "add",
        "198.18.1.0/26",
        "via",
        "198.51.100.2",
        "proto",
        "75",
    ]);
    node.ip(&[
        "route",
        "add",
        "198.18.5.0/26",
        "via",
        "198.51.100.2",
        "proto",
        "75",
    ]);
    node.ip(&["route", "add", "blackhole", "198.18.7.0/26", "proto", "75"]);
    node.ip(&[
        "route",
        "add",
        "198.18.6.0/26",
        "via",
        "198.51.100.2",
        "proto",
        "static",
    ]);

    // Every route event from here on, to prove which routes were touched. The marker
    // route shows the monitor is listening before the reconcile starts.
    let monitor = Exec::new("ip")
        .args(["-ts", "monitor", "route"])
        .spawn_in(&node);
    wait_until(WITHIN, "ip monitor sees a marker route", || {
        // Added and deleted each time: a change the monitor reports once it listens.
        node.ip(&[
            "route",
            "add",
            "192.0.2.0/24",
            "via",
            "198.51.100.2",
            "proto",
            "static",
        ]);
        node.ip(&["route", "del", "192.0.2.0/24", "proto", "static"]);
        let seen = monitor.stdout_so_far();
        if seen.contains("192.0.2.0/24") {
            Ok(())
        } else {
            Err(seen)
        }
    });

    let desired = Desired {
        routes: BTreeMap::from([(net("198.18.1.0/26"), via("198.51.100.2", eth0(), false))]),
        ..Desired::default()
    };
    let report = reconcile(&node, &desired);
    assert_clean(&report, "reconcile");
    assert_eq!(report.removed, 2, "the two stale routes: {report}");
    assert_eq!(report.added, 0, "{report}");

    let routes = routes_with(
        &node,
        &[
            "198.18.1.0/26 via 198.51.100.2 dev eth0 proto 75",
            "198.18.6.0/26 via 198.51.100.2 dev eth0 proto static",
        ],
    );
    assert!(!routes.contains("198.18.5.0/26"), "{routes}");
    assert!(!routes.contains("198.18.7.0/26"), "{routes}");

    let events = wait_until(WITHIN, "ip monitor reports both deletions", || {
        let seen = monitor.stdout_so_far();
        if seen.contains("Deleted 198.18.5.0/26")
            && seen.contains("Deleted blackhole 198.18.7.0/26")
        {
            Ok(seen)
        } else {
            Err(seen)
        }
    });
    for untouched in ["198.18.1.0/26", "198.18.6.0/26"] {
        assert!(
            !events.contains(untouched),
            "{untouched} was touched; route events:\n{events}"
        );
    }
}

#[test]
fn a_route_of_another_protocol_holding_a_wanted_prefix_is_reported_and_left_alone() {
    let node = Netns::new("dp-foreign");
    let far = Netns::new("dp-foreign-far");
    wire(&node, 1, &far, 2);
    node.ip(&[
        "route",
        "add",
        "198.18.6.0/26",
        "via",
        "198.51.100.2",
        "proto",
        "static",
    ]);
    let desired = Desired {
        routes: BTreeMap::from([
            (net("198.18.6.0/26"), RouteTarget::Blackhole),
            (net("198.18.8.0/26"), RouteTarget::Blackhole),
        ]),
        ..Desired::default()
    };
    let report = reconcile(&node, &desired);
    assert_eq!(report.failures.len(), 1, "{report}: {:#?}", report.failures);
    let failure = &report.failures[0];
    assert!(failure.what.contains("198.18.6.0/26"), "{failure}");
    assert!(failure.why.contains("another protocol"), "{failure}");
    routes_with(
        &node,
        &[
            "198.18.6.0/26 via 198.51.100.2 dev eth0 proto static",
            "blackhole 198.18.8.0/26 proto 75",
        ],
    );
}

#[test]
fn a_never_mode_block_is_routed_plain_via_the_host_interface() {
    let node = Netns::new("dp-never");
    let far = Netns::new("dp-never-far");
    wire(&node, 1, &far, 2);
    let mut pool = IPPool::new("default", net("198.18.0.0/16"));
    pool.ipip_mode = EncapsulationMode::Never;
    let context = RoutingContext {
        pools: vec![pool],
        host_interface: "eth0".to_string(),
        host_network: "198.51.100.1/24".parse().unwrap(),
        ..RoutingContext::default()
    };
    let block = net("198.18.3.0/26");
    let target = remote_route(&context, block, ip("198.51.100.2"));
    assert_eq!(target, via("198.51.100.2", eth0(), false));
    let desired = Desired {
        routes: BTreeMap::from([(block, target)]),
        ..Desired::default()
    };
    assert_clean(&reconcile(&node, &desired), "reconcile");
    let chosen = node.ip(&["route", "get", "198.18.3.7"]).stdout;
    assert!(chosen.contains("via 198.51.100.2 dev eth0"), "{chosen}");
}

/// Two nodes on one link, each with a pod address in its own block (on `lo`, standing in
/// for a pod), VXLAN Always between them: a ping from one pod address to the other crosses
/// vxlan.tortie both ways.
#[test]
fn pods_on_two_nodes_reach_each_other_over_vxlan() {
    let a = Netns::new("dp-vxping-a");
    let b = Netns::new("dp-vxping-b");
    wire(&a, 1, &b, 2);
    a.add_address("lo", "198.18.0.2/32");
    b.add_address("lo", "198.18.1.2/32");
    let node =
        |local: &str, tunnel: &str, name: &str, own: &str, other: VxlanPeer, other_block: &str| {
            let gateway = other.tunnel_address.to_string();
            Desired {
                vxlan: Some(vxlan_spec(local, tunnel, name)),
                vxlan_peers: vec![other],
                routes: BTreeMap::from([
                    (net(own), RouteTarget::Blackhole),
                    (net(other_block), via(&gateway, Device::Vxlan, true)),
                ]),
                ..Desired::default()
            }
        };
    let desired_a = node(
        "198.51.100.1",
        "198.18.0.1",
        "node-a",
        "198.18.0.0/26",
        peer("198.18.1.1", "node-b", "198.51.100.2"),
        "198.18.1.0/26",
    );
    let desired_b = node(
        "198.51.100.2",
        "198.18.1.1",
        "node-b",
        "198.18.1.0/26",
        peer("198.18.0.1", "node-a", "198.51.100.1"),
        "198.18.0.0/26",
    );
    assert_clean(&reconcile(&a, &desired_a), "node a");
    assert_clean(&reconcile(&b, &desired_b), "node b");
    let routes = a.ip(&["route", "show", "proto", "75"]).stdout;
    assert!(
        routes.contains("198.18.1.0/26 via 198.18.1.1 dev vxlan.tortie onlink"),
        "{routes}"
    );

    // It went through the tunnel: vxlan.tortie counted the packets, both ways.
    a.ping_through("vxlan.tortie", "198.18.0.2", "198.18.1.2", WITHIN);
}

#[test]
fn update_routes_installs_replaces_and_removes_many_routes_at_once() {
    let node = Netns::new("dp-update");
    let far = Netns::new("dp-update-far");
    wire(&node, 1, &far, 2);
    let upserts: Vec<(IpNet, RouteTarget)> = (0..2000u32)
        .map(|n| {
            let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (n << 6));
            (
                IpNet::new(IpAddr::V4(address), 26).unwrap(),
                via("198.51.100.2", eth0(), false),
            )
        })
        .collect();
    let (first, second, third, seen) = {
        let upserts = upserts.clone();
        block_on_in(&node, move || async move {
            let mut dataplane = Dataplane::connect().await.expect("connect");
            let first = dataplane
                .update_routes(&upserts, &[])
                .await
                .expect("install");
            // The same again changes nothing; half of them moved to blackholes are
            // replaced; the other half withdrawn.
            let second = dataplane.update_routes(&upserts, &[]).await.expect("again");
            let moved: Vec<_> = upserts[..1000]
                .iter()
                .map(|(prefix, _)| (*prefix, RouteTarget::Blackhole))
                .collect();
            let withdrawn: Vec<_> = upserts[1000..].iter().map(|(prefix, _)| *prefix).collect();
            let third = dataplane
                .update_routes(&moved, &withdrawn)
                .await
                .expect("move and withdraw");
            let seen = dataplane.routes().await.expect("routes");
            (first, second, third, seen)
        })
    };
    assert_clean(&first, "install");
    assert_eq!(first.added, 2000, "{first}");
    assert_eq!(second.changes(), 0, "{second}");
    assert_clean(&third, "move and withdraw");
    assert_eq!((third.replaced, third.removed), (1000, 1000), "{third}");
    assert_eq!(seen.len(), 1000);
    assert!(
        seen.values()
            .all(|target| *target == RouteTarget::Blackhole)
    );
    let listed = node.ip(&["-4", "route", "show", "proto", "75"]).stdout;
    assert_eq!(listed.lines().count(), 1000);
}

#[test]
fn update_routes_adopts_a_route_of_ours_it_did_not_know_and_refuses_foreign_ones() {
    let node = Netns::new("dp-adopt");
    let far = Netns::new("dp-adopt-far");
    wire(&node, 1, &far, 2);
    let report = block_on_in(&node, || async {
        let mut dataplane = Dataplane::connect().await.expect("connect");
        // Added behind the dataplane's back after it read the kernel's routes.
        let added = std::process::Command::new("ip")
            .args([
                "route",
                "add",
                "198.18.1.0/26",
                "via",
                "198.51.100.2",
                "proto",
                "75",
            ])
            .status()
            .expect("ip");
        assert!(added.success());
        let foreign = std::process::Command::new("ip")
            .args([
                "route",
                "add",
                "198.18.2.0/26",
                "via",
                "198.51.100.2",
                "proto",
                "static",
            ])
            .status()
            .expect("ip");
        assert!(foreign.success());
        dataplane
            .update_routes(
                &[
                    (net("198.18.1.0/26"), RouteTarget::Blackhole),
                    (net("198.18.2.0/26"), RouteTarget::Blackhole),
                ],
                &[],
            )
            .await
            .expect("update")
    });
    assert_eq!(report.replaced, 1, "{report}");
    assert_eq!(report.failures.len(), 1, "{report}");
    routes_with(
        &node,
        &[
            "blackhole 198.18.1.0/26 proto 75",
            "198.18.2.0/26 via 198.51.100.2 dev eth0 proto static",
        ],
    );
}

#[test]
fn a_kernel_without_ipip_is_reported_with_the_fix_by_the_probe_and_by_reconcile() {
    let node = Netns::new("dp-ipip");
    let host_has_ipip = vm::host_has_ipip();
    let (support, report) = block_on_in(&node, || async {
        let support = dataplane::ipip_support().await.expect("probe");
        let mut dataplane = Dataplane::connect().await.expect("connect");
        let report = dataplane
            .reconcile(&Desired {
                tunl0: Some(Tunl0Spec {
                    address: "198.18.0.1".parse().unwrap(),
                    mtu: 1480,
                }),
                ..Desired::default()
            })
            .await
            .expect("reconcile");
        (support, report)
    });
    if host_has_ipip {
        assert_eq!(support, IpipSupport::Available);
        assert_eq!(report.ipip, Some(IpipSupport::Available), "{report}");
        println!("this host's kernel has ipip: the missing-ipip path is not exercised here");
        return;
    }
    let IpipSupport::Missing { reason } = &support else {
        panic!("the host lacks ipip but the probe says {support}");
    };
    for fix in ["modprobe ipip", "VXLAN pool"] {
        assert!(reason.contains(fix), "{fix:?} not in {reason:?}");
    }
    assert!(
        matches!(&report.ipip, Some(IpipSupport::Missing { reason }) if reason.contains("modprobe ipip")),
        "{report:?}"
    );
    assert!(
        report
            .failures
            .iter()
            .any(|failure| failure.what == "tunl0" && failure.why.contains("modprobe ipip")),
        "{:#?}",
        report.failures
    );
}

#[test]
fn update_routes_follows_a_device_made_again_under_the_same_name() {
    let node = Netns::new("dp-remade");
    let far = Netns::new("dp-remade-far");
    wire(&node, 1, &far, 2);
    let report = block_on_in(&node, || async {
        let run = |args: &[&str]| {
            let status = std::process::Command::new("ip")
                .args(args)
                .status()
                .expect("ip");
            assert!(status.success(), "ip {args:?}");
        };
        run(&[
            "link",
            "add",
            "cali1",
            "type",
            "veth",
            "peer",
            "name",
            "cali1-pod",
        ]);
        run(&["link", "set", "cali1", "up"]);
        let mut dataplane = Dataplane::connect().await.expect("connect");
        let pod = |prefix: &str| {
            (
                net(prefix),
                RouteTarget::Link {
                    device: Device::Named("cali1".to_string()),
                },
            )
        };
        let first = dataplane
            .update_routes(&[pod("198.18.0.2/32")], &[])
            .await
            .expect("first");
        assert_clean(&first, "first pod route");
        // The pod's veth is deleted and made again: same name, new index.
        run(&["link", "del", "cali1"]);
        run(&[
            "link",
            "add",
            "cali1",
            "type",
            "veth",
            "peer",
            "name",
            "cali1-pod",
        ]);
        run(&["link", "set", "cali1", "up"]);
        dataplane
            .update_routes(&[pod("198.18.0.3/32")], &[])
            .await
            .expect("second")
    });
    assert_clean(&report, "route on the remade device");
    assert_eq!(report.added, 1, "{report}");
    routes_with(&node, &["198.18.0.3 dev cali1 proto 75 scope link"]);
}

/// The MTU and MAC of vxlan.tortie change in place (same device, routes kept); a VNI or
/// port the kernel cannot change makes the reconciler delete and recreate the device, and
/// the same reconcile puts back what the kernel dropped with it (routes, FDB).
#[test]
fn vxlan_tortie_is_changed_in_place_where_it_can_be_and_recreated_where_not() {
    let node = Netns::new("dp-vx-change");
    let far = Netns::new("dp-vx-change-far");
    wire(&node, 1, &far, 2);
    let mut desired = Desired {
        vxlan: Some(vxlan_spec("198.51.100.1", "198.18.0.1", "node-a")),
        vxlan_peers: vec![peer("198.18.1.1", "node-b", "198.51.100.2")],
        routes: BTreeMap::from([(net("198.18.1.0/26"), via("198.18.1.1", Device::Vxlan, true))]),
        ..Desired::default()
    };
    assert_clean(&reconcile(&node, &desired), "first reconcile");
    let index = node.link_state("vxlan.tortie").index;

    if let Some(spec) = desired.vxlan.as_mut() {
        spec.mtu = 1400;
        spec.mac = vxlan_mac("node-a-renamed");
    }
    let report = reconcile(&node, &desired);
    assert_clean(&report, "new MTU and MAC");
    assert_eq!(report.replaced, 2, "the MTU and the MAC: {report}");
    // A new MAC makes the kernel flush the device's neighbours, permanent ones too
    // (neigh_changeaddr); the same reconcile puts the peer's back, after the device step.
    assert_eq!((report.added, report.removed), (1, 0), "{report}");
    let neighbours = node.ip(&["neigh", "show", "dev", "vxlan.tortie"]).stdout;
    assert!(neighbours.contains("198.18.1.1 lladdr"), "{neighbours}");
    assert_eq!(
        node.link_state("vxlan.tortie").index,
        index,
        "changed in place"
    );
    let details = node
        .ip(&["-d", "link", "show", "dev", "vxlan.tortie"])
        .stdout;
    assert!(details.contains("mtu 1400 "), "{details}");
    assert!(
        details.contains(&show_mac(vxlan_mac("node-a-renamed"))),
        "{details}"
    );

    if let Some(spec) = desired.vxlan.as_mut() {
        spec.port = 4790;
    }
    let report = reconcile(&node, &desired);
    assert_clean(&report, "new port");
    let details = node
        .ip(&["-d", "link", "show", "dev", "vxlan.tortie"])
        .stdout;
    assert!(details.contains("dstport 4790 "), "{details}");
    assert_ne!(node.link_state("vxlan.tortie").index, index, "recreated");
    assert_eq!(kernel_routes(&node), desired.routes);
    let fdb = Exec::new("bridge")
        .args(["fdb", "show", "dev", "vxlan.tortie"])
        .run_in(&node)
        .expect_success()
        .stdout;
    assert!(fdb.contains("dst 198.51.100.2 self permanent"), "{fdb}");
    let again = reconcile(&node, &desired);
    assert_eq!(again.changes(), 0, "{again}");
}

/// A BGP withdrawal deletes tortie's route for the prefix and nothing else: a route of
/// another protocol for the same prefix (IPv4 and IPv6) stays.
#[test]
fn a_withdrawal_leaves_other_protocols_routes_for_the_same_prefix_alone() {
    let node = Netns::new("dp-withdraw");
    let far = Netns::new("dp-withdraw-far");
    wire(&node, 1, &far, 2);
    node.add_address("eth0", "2001:db8::1/64");
    node.ip(&[
        "route",
        "add",
        "198.18.6.0/26",
        "via",
        "198.51.100.2",
        "proto",
        "static",
    ]);
    node.ip(&[
        "route",
        "add",
        "2001:db8:6::/122",
        "via",
        "2001:db8::2",
        "proto",
        "static",
    ]);
    // Ours at another metric beside each, so both protocols hold the prefix.
    node.ip(&[
        "route",
        "add",
        "198.18.6.0/26",
        "via",
        "198.51.100.3",
        "proto",
        "75",
        "metric",
        "10",
    ]);
    node.ip(&[
        "route",
        "add",
        "2001:db8:6::/122",
        "via",
        "2001:db8::3",
        "proto",
        "75",
        "metric",
        "10",
    ]);
    let report = block_on_in(&node, || async {
        let mut dataplane = Dataplane::connect().await.expect("connect");
        dataplane
            .update_routes(&[], &[net("198.18.6.0/26"), net("2001:db8:6::/122")])
            .await
            .expect("withdraw")
    });
    assert_clean(&report, "withdrawal");
    assert_eq!(report.removed, 2, "{report}");
    let v4 = ipv4_routes(&node);
    assert!(
        v4.contains("198.18.6.0/26 via 198.51.100.2 dev eth0 proto static"),
        "{v4}"
    );
    assert!(!v4.contains("198.51.100.3"), "{v4}");
    let v6 = node.ip(&["-6", "route"]).stdout;
    assert!(
        v6.contains("2001:db8:6::/122 via 2001:db8::2 dev eth0 proto static"),
        "{v6}"
    );
    assert!(!v6.contains("2001:db8::3"), "{v6}");

    // Withdrawn again: nothing of ours is left, and still nothing else goes.
    let again = block_on_in(&node, || async {
        let mut dataplane = Dataplane::connect().await.expect("connect");
        dataplane
            .update_routes(&[], &[net("198.18.6.0/26"), net("2001:db8:6::/122")])
            .await
            .expect("withdraw again")
    });
    assert_clean(&again, "second withdrawal");
    assert_eq!(again.changes(), 0, "{again}");
    assert!(ipv4_routes(&node).contains("198.18.6.0/26 via 198.51.100.2 dev eth0 proto static"));
    assert!(
        node.ip(&["-6", "route"])
            .stdout
            .contains("2001:db8:6::/122 via 2001:db8::2")
    );
}

/// Hundreds of VTEPs (a large cluster) land in one reconcile, and leaving nodes' entries
/// go in one too: the neighbour and FDB requests are sent together, not one by one.
#[test]
fn hundreds_of_vxlan_peers_converge_in_one_reconcile() {
    let node = Netns::new("dp-vx-many");
    let far = Netns::new("dp-vx-many-far");
    wire(&node, 1, &far, 2);
    let peers: Vec<VxlanPeer> = (0..300u32)
        .map(|n| VxlanPeer {
            tunnel_address: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + (n << 6)),
            mac: vxlan_mac(&format!("node-{n}")),
            node_address: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 1)) + n),
        })
        .collect();
    let mut desired = Desired {
        vxlan: Some(vxlan_spec("198.51.100.1", "198.18.255.1", "node-self")),
        vxlan_peers: peers.clone(),
        ..Desired::default()
    };
    let first = reconcile(&node, &desired);
    assert_clean(&first, "300 peers");
    let neighbours = node.ip(&["neigh", "show", "dev", "vxlan.tortie"]).stdout;
    assert_eq!(
        neighbours
            .lines()
            .filter(|l| l.contains("PERMANENT"))
            .count(),
        300
    );
    let again = reconcile(&node, &desired);
    assert_eq!(again.changes(), 0, "{again}");

    desired.vxlan_peers.truncate(100);
    let report = reconcile(&node, &desired);
    assert_clean(&report, "down to 100 peers");
    assert_eq!(
        report.removed, 400,
        "200 neighbours and 200 FDB entries: {report}"
    );
    let fdb = Exec::new("bridge")
        .args(["fdb", "show", "dev", "vxlan.tortie"])
        .run_in(&node)
        .expect_success()
        .stdout;
    assert_eq!(
        fdb.lines().filter(|l| l.contains(" dst ")).count(),
        100,
        "{fdb}"
    );
}
