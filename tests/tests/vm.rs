//! The VM tier itself: the runner reports a command's output and status faithfully, and the
//! kernel it boots has working IPIP, which this host's kernel may lack.

use std::time::Duration;

use tortie_tests::vm;

const VM_WITHIN: Duration = Duration::from_secs(600);

/// `make test` installs what the VM needs; where a VM still cannot start, the test says
/// "skipped: <reason>" (also listed at the end of `make test`) and fails.
fn require_vm(test: &str) {
    tortie_tests::require_root();
    if let Some(reason) = vm::unavailable() {
        tortie_tests::cannot_run(test, &format!("no VM can start here: {reason}"));
    }
}

#[test]
fn the_vm_runs_a_command_and_reports_its_output_and_status() {
    require_vm("the_vm_runs_a_command_and_reports_its_output_and_status");
    let output = vm::run_in_vm(
        "sh",
        &[
            "-c",
            "echo out; echo err >&2; test \"$TORTIE_IN_VM\" = 1 && exit 7",
        ],
        VM_WITHIN,
    );
    assert_eq!(output.code(), Some(7), "{output}");
    assert_eq!(output.stdout, "out\n", "{output}");
    assert!(output.stderr.contains("err\n"), "{output}");
}

#[test]
fn the_vm_kernel_tunnels_ipip() {
    require_vm("the_vm_kernel_tunnels_ipip");
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vm/ipip-pair.sh");
    let script = script.display().to_string();
    let output = vm::run_in_vm("bash", &[&script], VM_WITHIN);
    assert!(
        output.success() && output.stdout.contains("ipip tunnel: ok"),
        "IPIP between two namespaces in the VM: {output}"
    );
    // Say where IPIP comes from on this machine, for whoever reads the log.
    println!(
        "host kernel has ipip: {}; the VM tier provides it either way",
        vm::host_has_ipip()
    );
}

/// The node agent over IPIP: two `tortie-node`s on an IPIP Always pool, inside the VM
/// (whose stock kernel has ipip), route each other's blocks through `tunl0` and carry
/// packets over it. The body is [`inside_the_vm_two_nodes_route_over_tunl0`], which this
/// test runs in a VM as a filtered run of this very test executable.
#[test]
fn the_node_agent_routes_blocks_over_ipip_in_the_vm() {
    require_vm("the_node_agent_routes_blocks_over_ipip_in_the_vm");
    let executable = std::env::current_exe().expect("the test executable's path");
    let output = vm::run_in_vm(
        &executable.display().to_string(),
        &[
            "--ignored",
            "--exact",
            "inside_the_vm_two_nodes_route_over_tunl0",
            "--nocapture",
            "--test-threads=1",
        ],
        VM_WITHIN,
    );
    assert!(
        output.success() && output.stdout.contains("ipip cluster: ok"),
        "two tortie nodes over IPIP in the VM: {output}"
    );
}

#[test]
#[ignore = "runs inside the VM tier: started by the_node_agent_routes_blocks_over_ipip_in_the_vm"]
fn inside_the_vm_two_nodes_route_over_tunl0() {
    assert_eq!(
        std::env::var("TORTIE_IN_VM").as_deref(),
        Ok("1"),
        "this test runs inside the VM tier only"
    );
    let mut cluster =
        tortie_tests::Cluster::new("ipipvm", 2, &[("TORTIE_IPV4POOL_IPIP", "Always")]);
    cluster.start_meshed(2, 1);
    let tunnel_address = |index: usize| -> String {
        let output = tortie_tests::run_in(
            &cluster.lan.hosts[index],
            "ip",
            ["-4", "-o", "addr", "show", "dev", "tunl0"],
            &[],
        )
        .expect_success();
        let address = output
            .stdout
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .unwrap_or_else(|| panic!("tunl0 has no IPv4 address on node {index}: {output}"));
        assert!(
            address.ends_with("/32"),
            "tunl0's only address is a /32: {output}"
        );
        address.trim_end_matches("/32").to_string()
    };
    for (index, other) in [(0, 1), (1, 0)] {
        let block = cluster.blocks(other)[0].clone();
        let wanted = format!("{block} via {} dev tunl0", cluster.lan.v4(other));
        tortie_tests::wait_until(
            tortie_tests::cluster::CLUSTER_WAIT,
            &format!("node {index} routes {block} over tunl0"),
            || {
                let routes = cluster.routes(index);
                if routes
                    .iter()
                    .any(|r| r.starts_with(&wanted) && r.contains("onlink"))
                {
                    Ok(())
                } else {
                    Err(format!("{routes:?}"))
                }
            },
        );
        let link = tortie_tests::run_in(
            &cluster.lan.hosts[index],
            "ip",
            ["link", "show", "tunl0"],
            &[],
        )
        .expect_success();
        assert!(
            link.stdout.contains("mtu 1480"),
            "host MTU 1500 − 20: {link}"
        );
        assert!(link.stdout.contains(",UP"), "tunl0 is up: {link}");
    }
    let ping = tortie_tests::run_in(
        &cluster.lan.hosts[0],
        "ping",
        [
            "-c",
            "3",
            "-i",
            "0.3",
            "-W",
            "10",
            "-I",
            &tunnel_address(0),
            &tunnel_address(1),
        ],
        &[],
    );
    assert!(ping.success(), "ping over tunl0: {ping}");
    println!("ipip cluster: ok");
}

/// The dataplane's IPIP half, which this host's kernel may lack: this test runs its inner
/// half, [`in_vm::ipip_dataplane_between_two_nodes`], inside the VM by running this very
/// test executable there with a filter (the VM sees the host's filesystem, so the binary
/// and everything it runs are where they are here).
#[test]
fn the_dataplane_adopts_tunl0_and_carries_pod_traffic_over_ipip_in_the_vm() {
    require_vm("the_dataplane_adopts_tunl0_and_carries_pod_traffic_over_ipip_in_the_vm");
    let executable = std::env::current_exe()
        .unwrap_or_else(|error| panic!("cannot locate this test executable: {error}"));
    let executable = executable.display().to_string();
    let output = vm::run_in_vm(
        &executable,
        &[
            "--exact",
            "in_vm::ipip_dataplane_between_two_nodes",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ],
        VM_WITHIN,
    );
    assert!(
        output.success() && output.stdout.contains("ipip dataplane: ok"),
        "the IPIP dataplane test inside the VM: {output}"
    );
}

mod in_vm {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use ipnet::IpNet;
    use tortie_agent::dataplane::plan::{IPIP_OVERHEAD, tunnel_mtu};
    use tortie_agent::dataplane::{
        self, Dataplane, Desired, Device, IpipSupport, Report, RouteTarget, RoutingContext,
        Tunl0Spec, remote_route,
    };
    use tortie_ipam::model::{EncapsulationMode, IPPool};
    use tortie_tests::{Netns, block_on_in, veth};

    /// One node's wanted state: tunl0 with its tunnel address and host MTU − 20, a
    /// blackhole for its own block, and the other node's block as IPIP Always routes it.
    fn desired(node: &Netns, tunnel: &str, own: &str, other: &str, other_node: &str) -> Desired {
        let host_mtu = block_on_in(node, || async {
            dataplane::host_mtu("eth0").await.expect("eth0's MTU")
        });
        let mut pool = IPPool::new("ipip", "198.18.0.0/16".parse().unwrap());
        pool.ipip_mode = EncapsulationMode::Always;
        let context = RoutingContext {
            pools: vec![pool],
            host_interface: "eth0".to_string(),
            host_network: "198.51.100.0/24".parse().unwrap(),
            ..RoutingContext::default()
        };
        let other: IpNet = other.parse().unwrap();
        Desired {
            tunl0: Some(Tunl0Spec {
                address: tunnel.parse().unwrap(),
                mtu: tunnel_mtu(Some(host_mtu), IPIP_OVERHEAD),
            }),
            routes: BTreeMap::from([
                (own.parse().unwrap(), RouteTarget::Blackhole),
                (
                    other,
                    remote_route(&context, other, other_node.parse().unwrap()),
                ),
            ]),
            ..Desired::default()
        }
    }

    fn reconcile(node: &Netns, desired: &Desired) -> Report {
        let desired = desired.clone();
        block_on_in(node, move || async move {
            let mut dataplane = Dataplane::connect().await.expect("connect");
            dataplane.reconcile(&desired).await.expect("reconcile")
        })
    }

    #[test]
    #[ignore = "runs inside the VM tier, started by \
                the_dataplane_adopts_tunl0_and_carries_pod_traffic_over_ipip_in_the_vm"]
    fn ipip_dataplane_between_two_nodes() {
        assert_eq!(
            std::env::var("TORTIE_IN_VM").as_deref(),
            Ok("1"),
            "this half runs inside the VM: run \
             the_dataplane_adopts_tunl0_and_carries_pod_traffic_over_ipip_in_the_vm instead"
        );
        let a = Netns::new("vm-ipip-a");
        let b = Netns::new("vm-ipip-b");
        veth(&a, "eth0", &b, "eth0");
        a.add_address("eth0", "198.51.100.1/24");
        b.add_address("eth0", "198.51.100.2/24");
        a.link_up("eth0");
        b.link_up("eth0");
        a.wait_carrier("eth0");
        // Pod addresses, one per node's block.
        a.add_address("lo", "198.18.0.2/32");
        b.add_address("lo", "198.18.1.2/32");
        // Someone else's address on tunl0: the reconciler leaves only the tunnel /32.
        a.add_address("tunl0", "192.0.2.9/24");

        let support = block_on_in(&a, || async {
            dataplane::ipip_support().await.expect("probe")
        });
        assert_eq!(support, IpipSupport::Available);

        let desired_a = desired(
            &a,
            "198.18.0.1",
            "198.18.0.0/26",
            "198.18.1.0/26",
            "198.51.100.2",
        );
        let desired_b = desired(
            &b,
            "198.18.1.1",
            "198.18.1.0/26",
            "198.18.0.0/26",
            "198.51.100.1",
        );
        assert_eq!(
            desired_a.routes.get(&"198.18.1.0/26".parse().unwrap()),
            Some(&RouteTarget::Via {
                gateway: "198.51.100.2".parse().unwrap(),
                device: Device::Tunl0,
                onlink: true,
            })
        );
        for (node, desired) in [(&a, &desired_a), (&b, &desired_b)] {
            let report = reconcile(node, desired);
            assert!(
                report.failures.is_empty(),
                "{node}: {report}: {:#?}",
                report.failures
            );
            assert_eq!(report.ipip, Some(IpipSupport::Available), "{report}");
        }

        let details = a.ip(&["-d", "link", "show", "dev", "tunl0"]).stdout;
        assert!(
            details.contains("mtu 1480 "),
            "host MTU 1500 − 20: {details}"
        );
        assert!(details.contains("ipip "), "{details}");
        assert!(a.link_state("tunl0").admin_up(), "{details}");
        let addresses = a
            .ip(&["-4", "-o", "address", "show", "dev", "tunl0"])
            .stdout;
        assert_eq!(addresses.lines().count(), 1, "{addresses}");
        assert!(addresses.contains("inet 198.18.0.1/32 "), "{addresses}");
        // Listed in full (`ip route show proto X` leaves the protocol out of each line),
        // numerically (whether a name for 75 exists depends on the host's /etc).
        let routes = a.ip(&["-N", "-4", "route"]).stdout;
        assert!(
            routes.contains("198.18.1.0/26 via 198.51.100.2 dev tunl0 proto 75 onlink"),
            "{routes}"
        );

        let again = reconcile(&a, &desired_a);
        assert_eq!(again.changes(), 0, "second reconcile: {again}");

        // It went through the tunnel: tunl0 counted the packets, both ways.
        a.ping_through("tunl0", "198.18.0.2", "198.18.1.2", Duration::from_secs(60));

        // The VM's filesystem is a throwaway layer: name the protocol where iproute2
        // looks, and `ip route` says `proto tortie`.
        dataplane::write_protocol_name(std::path::Path::new(dataplane::PROTOCOL_NAMES_DIR))
            .expect("writing rt_protos.d/tortie.conf");
        let named = a.ip(&["-4", "route"]).stdout;
        assert!(
            named.contains("198.18.1.0/26 via 198.51.100.2 dev tunl0 proto tortie onlink"),
            "{named}"
        );
        println!("ipip dataplane: ok");
    }
}
