//! The end-to-end suite: whole clusters of real `tortie-node` agents (one SQLite datastore,
//! one namespace per node), pods wired by the real `tortie` CNI plugin, and real BIRD as a
//! top-of-rack router. Each test builds its own cluster and tears it down by guards.
//!
//! - every pool mode carries every pod pair: VXLAN Always and CrossSubnet across a router,
//!   Never on a flat LAN, IPIP Always and CrossSubnet (in the VM tier when this host's kernel
//!   has no `ipip`);
//! - CrossSubnet encapsulates only what crosses the router, seen on the wire;
//! - pods get the host MTU less the encapsulation, full-size TCP goes through, and a
//!   don't-fragment ping one byte too large does not;
//! - a node joins and leaves a running cluster, and a pool added at runtime serves pods;
//! - pods lose no ping while both agents restart;
//! - a BIRD router peered as a global BGPPeer learns every block from its owner;
//! - two route reflectors carry every block between six nodes without the mesh.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tortie_tests::peers::{BgpDaemon, Bird, Neighbor, PeerConfig};
use tortie_tests::{
    Capture, Cluster, Exec, Lan, Netns, Pod, run_in, veth, vm, wait_ping, wait_until,
};

/// How long anything a cluster does may take here: generous, since the machine is shared
/// and these tests run in parallel (and the IPIP ones under emulation).
const WAIT: Duration = Duration::from_secs(120);

/// The pools' modes, as the agents' environment sets them.
const NEVER: &[(&str, &str)] = &[
    ("TORTIE_IPV4POOL_IPIP", "Never"),
    ("TORTIE_IPV4POOL_VXLAN", "Never"),
];
const VXLAN_ALWAYS: &[(&str, &str)] = &[
    ("TORTIE_IPV4POOL_IPIP", "Never"),
    ("TORTIE_IPV4POOL_VXLAN", "Always"),
];
const VXLAN_CROSS_SUBNET: &[(&str, &str)] = &[
    ("TORTIE_IPV4POOL_IPIP", "Never"),
    ("TORTIE_IPV4POOL_VXLAN", "CrossSubnet"),
];
const IPIP_ALWAYS: &[(&str, &str)] = &[
    ("TORTIE_IPV4POOL_IPIP", "Always"),
    ("TORTIE_IPV4POOL_VXLAN", "Never"),
];
const IPIP_CROSS_SUBNET: &[(&str, &str)] = &[
    ("TORTIE_IPV4POOL_IPIP", "CrossSubnet"),
    ("TORTIE_IPV4POOL_VXLAN", "Never"),
];

/// The host MTU on every LAN the harness builds.
const HOST_MTU: u32 = 1500;

/// How a pool's traffic between nodes looks on the wire.
#[derive(Debug, Clone, Copy)]
enum Encapsulation {
    Ipip,
    Vxlan,
}

impl Encapsulation {
    /// What the outer header costs (IPv4 20; VXLAN's outer IPv4, UDP, VXLAN and inner
    /// Ethernet 50), which the pods' MTU leaves room for.
    fn overhead(self) -> u32 {
        match self {
            Encapsulation::Ipip => 20,
            Encapsulation::Vxlan => 50,
        }
    }

    /// A BPF filter matching the encapsulated packets (IP protocol 4, UDP port 4789).
    fn filter(self) -> &'static str {
        match self {
            Encapsulation::Ipip => "ip proto 4",
            Encapsulation::Vxlan => "udp port 4789",
        }
    }
}

/// `tortiectl apply -f` of `yaml` (written to the scratch directory as `file`), from node
/// `index`'s namespace.
#[track_caller]
fn apply(cluster: &Cluster, index: usize, file: &str, yaml: &str) {
    let path = cluster.scratch.write(file, yaml);
    let output = cluster.tortiectl(index, &["apply", "-f", &path.display().to_string()]);
    assert!(output.success(), "apply {file}: {output}");
}

/// One pod per entry of `nodes` (the node it goes on), named `<tag>-<n>`.
fn add_pods(cluster: &Cluster, tag: &str, nodes: &[usize]) -> Vec<Pod> {
    nodes
        .iter()
        .enumerate()
        .map(|(n, &node)| cluster.add_pod(node, &format!("{tag}-{n}")))
        .collect()
}

/// Every pod pings every other pod (on its own node and on the others).
#[track_caller]
fn ping_every_pair(pods: &[Pod]) {
    for from in pods {
        for to in pods.iter().filter(|to| to.name != from.name) {
            wait_ping(&from.netns, &to.address);
        }
    }
}

/// Every node pings every pod, and every pod every node (their LAN addresses).
#[track_caller]
fn ping_between_nodes_and_pods(cluster: &Cluster, pods: &[Pod]) {
    for (index, host) in cluster.lan.hosts.iter().enumerate() {
        for pod in pods {
            wait_ping(host, &pod.address);
            wait_ping(&pod.netns, &cluster.lan.v4(index).to_string());
        }
    }
}

/// (address, peer type) of every peer in a node's status.
fn peer_types(status: &serde_json::Value) -> Vec<(String, String)> {
    status["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .map(|p| {
                    let text = |key: &str| p[key].as_str().unwrap_or_default().to_string();
                    (text("address"), text("peerType"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until node `index` routes every other node's first block through `device`
/// (`vxlan.tortie`, `tunl0`, or `eth0` for plain routing).
#[track_caller]
fn wait_routes_through(cluster: &Cluster, index: usize, device: &str) {
    let others: Vec<String> = (0..cluster.lan.hosts.len())
        .filter(|&owner| owner != index)
        .map(|owner| cluster.blocks(owner)[0].clone())
        .collect();
    wait_until(
        WAIT,
        &format!("node {index} routes {others:?} through {device}"),
        || {
            let routes = cluster.routes(index);
            let all = others.iter().all(|block| {
                routes.iter().any(|r| {
                    r.starts_with(&format!("{block} via")) && r.contains(&format!(" dev {device} "))
                })
            });
            if all {
                Ok(())
            } else {
                Err(format!("{routes:#?}"))
            }
        },
    );
}

/// The MTU of `link` in `netns`, as the kernel has it.
fn mtu(netns: &Netns, link: &str) -> u32 {
    let output = netns.ip(&["-o", "link", "show", "dev", link]);
    output
        .stdout
        .split_whitespace()
        .skip_while(|word| *word != "mtu")
        .nth(1)
        .and_then(|mtu| mtu.parse().ok())
        .unwrap_or_else(|| panic!("no MTU for {link} in {netns}: {output}"))
}

/// Every pod has the host MTU less `overhead`; between `from` and `to` (on different
/// nodes) a don't-fragment ping of exactly that size goes through and one byte more does
/// not, and a 20 MB TCP transfer in full-size segments completes.
#[track_caller]
fn check_mtu_and_full_size_transfer(pods: &[Pod], overhead: u32, from: &Pod, to: &Pod) {
    let expected = HOST_MTU - overhead;
    for pod in pods {
        assert_eq!(
            mtu(&pod.netns, "eth0"),
            expected,
            "pod {} on node {}: host MTU {HOST_MTU} less {overhead}",
            pod.name,
            pod.node
        );
    }
    assert_ne!(from.node, to.node, "the transfer crosses nodes");
    // ICMP echo: 20 bytes of IPv4 header and 8 of ICMP around the payload.
    let largest = (expected - 28).to_string();
    let too_large = (expected - 27).to_string();
    let df_ping = |size: &str| {
        run_in(
            &from.netns,
            "ping",
            ["-c", "1", "-W", "5", "-M", "do", "-s", size, &to.address],
            &[],
        )
    };
    wait_until(
        WAIT,
        &format!(
            "a DF ping of {largest} bytes from {} to {}",
            from.name, to.name
        ),
        || {
            let output = df_ping(&largest);
            if output.success() {
                Ok(())
            } else {
                Err(output)
            }
        },
    );
    let refused = df_ping(&too_large);
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        !refused.success()
            && !said.contains("1 received")
            && (said.contains(&format!("mtu={expected}")) || said.contains("Frag needed")),
        "a DF ping one byte over the MTU {expected} must fail, for its size: {refused}"
    );

    let server = Exec::new("iperf3")
        .args(["-s", "-1", "-B", &to.address])
        .spawn_in(&to.netns);
    // iperf3 buffers its banner when not on a terminal: ask the kernel for the socket.
    wait_until(WAIT, &format!("iperf3 listens in {}", to.name), || {
        let sockets = run_in(&to.netns, "ss", ["-Hltn", "sport = :5201"], &[]);
        if sockets.stdout.contains(":5201") {
            Ok(())
        } else if server.has_exited() {
            panic!(
                "iperf3 -s exited: {}{}",
                server.stdout_so_far(),
                server.stderr_so_far()
            )
        } else {
            Err(sockets)
        }
    });
    let client = Exec::new("iperf3")
        .args(["-c", &to.address, "-n", "20M", "--connect-timeout", "30000"])
        .timeout(Duration::from_secs(180))
        .run_in(&from.netns);
    assert!(
        client.success() && client.stdout.contains("iperf Done"),
        "20 MB of TCP from {} to {}: {client}\n--- server ---\n{}{}",
        from.name,
        to.name,
        server.stdout_so_far(),
        server.stderr_so_far()
    );
    let served = server.wait(WAIT);
    assert!(served.success(), "{served}");
}

/// A cluster of three nodes on two subnets (nodes 0 and 1 on the first, node 2 behind the
/// router), every node running, a pod on each node of `pods_on`; every pod pair pings, and
/// every node and pod.
fn routed_cluster_with_pods(
    tag: &str,
    env: &[(&str, &str)],
    pods_on: &[usize],
) -> (Cluster, Vec<Pod>) {
    let mut cluster = Cluster::on(Lan::routed(tag, 2, 1), tag, env);
    let count = cluster.lan.hosts.len();
    cluster.start_meshed(count, count - 1);
    let pods = add_pods(&cluster, tag, pods_on);
    ping_every_pair(&pods);
    ping_between_nodes_and_pods(&cluster, &pods);
    (cluster, pods)
}

/// CrossSubnet on the wire, captured on node 0's eth0 and on the router while pod 0 pings
/// pod 1 (same subnet) and pod 2 (across the router): the first goes as plain ICMP between
/// the pod addresses, the second only encapsulated between the node addresses, and no pod
/// address's ICMP crosses the router.
fn check_cross_subnet_on_the_wire(cluster: &Cluster, pods: &[Pod], encapsulation: Encapsulation) {
    let nodes: Vec<usize> = pods.iter().map(|pod| pod.node).collect();
    assert_eq!(nodes, [0, 1, 2], "pod i on node i");
    let node = &cluster.lan.hosts[0];
    let (_, router) = cluster.lan.second.as_ref().expect("a routed LAN");
    let host = |index: usize| cluster.lan.v4(index);
    // What passes node 0's eth0 between two pods, plain or encapsulated between their nodes.
    let plain = |a: &Pod, b: &Pod| {
        Capture::start(
            node,
            "eth0",
            &format!("icmp and host {} and host {}", a.address, b.address),
        )
    };
    let encapsulated = |a: usize, b: usize| {
        Capture::start(
            node,
            "eth0",
            &format!(
                "{} and host {} and host {}",
                encapsulation.filter(),
                host(a),
                host(b)
            ),
        )
    };
    let plain_near = plain(&pods[0], &pods[1]);
    let encapsulated_near = encapsulated(0, 1);
    let plain_far = plain(&pods[0], &pods[2]);
    let encapsulated_far = encapsulated(0, 2);
    let router_plain = Capture::start(router, "any", "icmp and net 198.18.0.0/15");
    let router_encapsulated = Capture::start(router, "any", encapsulation.filter());

    for to in [&pods[1], &pods[2]] {
        let ping = run_in(
            &pods[0].netns,
            "ping",
            ["-c", "5", "-i", "0.2", "-W", "10", &to.address],
            &[],
        );
        assert!(ping.success(), "pod 0 pings {}: {ping}", to.name);
    }
    // Five requests and five replies each way; the router sees each packet on both legs.
    plain_near.wait_packets(10, WAIT);
    encapsulated_far.wait_packets(10, WAIT);
    router_encapsulated.wait_packets(20, WAIT);
    encapsulated_near.assert_none("same-subnet pod traffic must not be encapsulated");
    plain_far.assert_none("cross-subnet pod traffic must be encapsulated");
    router_plain.assert_none("no plain pod-address ICMP may cross the router");
    println!(
        "{encapsulation:?} CrossSubnet on the wire: plain within the subnet, encapsulated across"
    );
}

#[test]
fn vxlan_always_across_a_router_every_pod_reaches_every_pod_at_host_mtu_less_50() {
    let (cluster, pods) = routed_cluster_with_pods("e2e-vxa", VXLAN_ALWAYS, &[0, 0, 1, 2]);
    for index in 0..3 {
        wait_routes_through(&cluster, index, "vxlan.tortie");
    }
    check_mtu_and_full_size_transfer(&pods, Encapsulation::Vxlan.overhead(), &pods[0], &pods[3]);
}

#[test]
fn vxlan_cross_subnet_every_pod_reaches_every_pod_encapsulated_only_across_the_router() {
    let (cluster, pods) = routed_cluster_with_pods("e2e-vxc", VXLAN_CROSS_SUBNET, &[0, 1, 2]);
    check_cross_subnet_on_the_wire(&cluster, &pods, Encapsulation::Vxlan);
}

#[test]
fn never_on_a_flat_lan_every_pod_reaches_every_pod_unencapsulated() {
    let mut cluster = Cluster::new("e2e-never", 3, NEVER);
    let count = cluster.lan.hosts.len();
    cluster.start_meshed(count, count - 1);
    let pods = add_pods(&cluster, "e2e-never", &[0, 0, 1, 2]);
    ping_every_pair(&pods);
    ping_between_nodes_and_pods(&cluster, &pods);
    let blocks: Vec<String> = (0..3).map(|i| cluster.blocks(i)[0].clone()).collect();
    let routes = cluster.routes(0);
    for owner in [1, 2] {
        let wanted = format!("{} via {} dev eth0", blocks[owner], cluster.lan.v4(owner));
        assert!(
            routes.iter().any(|r| r.starts_with(&wanted)),
            "{wanted} in {routes:#?}"
        );
    }
    // No encapsulation: the pods have the whole host MTU.
    check_mtu_and_full_size_transfer(&pods, 0, &pods[0], &pods[2]);
}

// ------------------------------------------------------------------ IPIP, in the VM tier

/// The IPIP tests that run inside the VM (or directly, on a host whose kernel has ipip).
const IPIP_TESTS: usize = 2;

/// IPIP Always across a router: every pod pair, MTU 1480, full-size transfer.
fn ipip_always() {
    let (cluster, pods) = routed_cluster_with_pods("e2e-ipa", IPIP_ALWAYS, &[0, 0, 2]);
    for index in 0..3 {
        wait_routes_through(&cluster, index, "tunl0");
    }
    check_mtu_and_full_size_transfer(&pods, Encapsulation::Ipip.overhead(), &pods[0], &pods[2]);
    println!("ipip always: ok");
}

/// IPIP CrossSubnet: every pod pair, encapsulated only across the router.
fn ipip_cross_subnet() {
    let (cluster, pods) = routed_cluster_with_pods("e2e-ipc", IPIP_CROSS_SUBNET, &[0, 1, 2]);
    check_cross_subnet_on_the_wire(&cluster, &pods, Encapsulation::Ipip);
    println!("ipip cross-subnet: ok");
}

/// IPIP needs the kernel's `ipip` module. On a host that has it, the IPIP tests run here;
/// otherwise they run in one VM (Debian's stock kernel), as a filtered run of this very
/// test executable, whose report must say every one of them passed.
#[test]
fn ipip_always_and_cross_subnet_carry_every_pod_pair() {
    tortie_tests::require_root();
    if vm::host_has_ipip() {
        ipip_always();
        ipip_cross_subnet();
        println!("the IPIP tests ran on this host, whose kernel has ipip");
        return;
    }
    if let Some(reason) = vm::unavailable() {
        tortie_tests::cannot_run(
            "ipip_always_and_cross_subnet_carry_every_pod_pair",
            &format!("this host's kernel has no ipip and {reason}"),
        );
    }
    let executable = std::env::current_exe().expect("the test executable's path");
    let output = vm::run_in_vm(
        &executable.display().to_string(),
        &[
            "--ignored",
            "inside_the_vm_",
            "--test-threads=1",
            "--nocapture",
        ],
        Duration::from_secs(600),
    );
    let summary = format!("test result: ok. {IPIP_TESTS} passed; 0 failed");
    assert!(
        output.success()
            && output.stdout.contains(&summary)
            && output.stdout.contains("ipip always: ok")
            && output.stdout.contains("ipip cross-subnet: ok"),
        "the IPIP tests in the VM ({summary:?} expected): {output}"
    );
    let ran: Vec<&str> = output
        .stdout
        .lines()
        .filter(|line| line.starts_with("test inside_the_vm_"))
        .collect();
    println!(
        "the IPIP tests ran in the VM: {summary}\n{}",
        ran.join("\n")
    );
}

/// Fails unless running inside the VM tier.
fn require_inside_the_vm() {
    assert_eq!(
        std::env::var("TORTIE_IN_VM").as_deref(),
        Ok("1"),
        "this test runs inside the VM tier only: run \
         ipip_always_and_cross_subnet_carry_every_pod_pair instead"
    );
}

#[test]
#[ignore = "runs inside the VM tier, started by ipip_always_and_cross_subnet_carry_every_pod_pair"]
fn inside_the_vm_ipip_always_across_a_router_every_pod_reaches_every_pod_at_mtu_1480() {
    require_inside_the_vm();
    ipip_always();
}

#[test]
#[ignore = "runs inside the VM tier, started by ipip_always_and_cross_subnet_carry_every_pod_pair"]
fn inside_the_vm_ipip_cross_subnet_encapsulates_only_across_the_router() {
    require_inside_the_vm();
    ipip_cross_subnet();
}

// ------------------------------------------------------------------ a changing cluster

#[test]
fn a_node_joins_and_leaves_and_a_pool_added_at_runtime_serves_pods() {
    let mut cluster = Cluster::new("e2e-join", 3, NEVER);
    cluster.start_meshed(2, 1);
    let mut pods = add_pods(&cluster, "e2e-join", &[0, 1]);
    ping_every_pair(&pods);

    // Node 2 joins the running cluster.
    cluster.start(2);
    for index in 0..3 {
        cluster.wait_established(index, 2);
    }
    pods.push(cluster.add_pod(2, "e2e-join-2"));
    ping_every_pair(&pods);

    // A pool added while the cluster runs serves a pod that asks for it.
    apply(
        &cluster,
        0,
        "extra-pool.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: extra\nspec:\n  cidr: 198.19.0.0/16\n  ipipMode: Never\n  vxlanMode: Never\n  natOutgoing: false\n",
    );
    let mut config: serde_json::Value =
        serde_json::from_str(&cluster.cni_config(1, "1.0.0", 0)).expect("a JSON config");
    config["ipv4_pools"] = serde_json::json!(["extra"]);
    let extra = cluster.add_pod_with(1, "e2e-join-x", &config.to_string());
    assert!(
        extra.address.starts_with("198.19."),
        "the pod asked for pool extra (198.19.0.0/16) and got {}",
        extra.address
    );
    for pod in [&pods[0], &pods[2]] {
        wait_ping(&pod.netns, &extra.address);
        wait_ping(&extra.netns, &pod.address);
    }

    // Node 2 leaves: its pod goes, its agent stops, it is deleted; the others drop its
    // session and its block's route.
    let leaving_block = cluster.blocks(2)[0].clone();
    let deleted = pods[2].run(&cluster, "DEL", &cluster.cni_config(2, "1.0.0", 0));
    assert!(deleted.success(), "DEL of node 2's pod: {deleted}");
    cluster.stop(2);
    // Stopped only, node 2 may be restarting: graceful restart keeps its route.
    assert!(
        cluster
            .routes(0)
            .iter()
            .any(|r| r.starts_with(&leaving_block)),
        "node 0 keeps node 2's block while node 2 may restart: {:#?}",
        cluster.routes(0)
    );
    let removed = cluster.tortiectl(0, &["delete", "node", &Cluster::node_name(2)]);
    assert!(removed.success(), "{removed}");
    for index in 0..2 {
        let status = cluster.wait_established(index, 1);
        let peers = status["peers"].to_string();
        assert!(
            !peers.contains(&cluster.lan.v4(2).to_string()),
            "node {index} still lists node 2: {status}"
        );
        // Well within the graceful-restart time (120 s by default) that would keep the
        // route of a node that only stopped: the deletion is what removes it.
        wait_until(
            Duration::from_secs(60),
            &format!("node {index} drops the route to node 2's block {leaving_block}"),
            || {
                let routes = cluster.routes(index);
                if routes.iter().any(|r| r.starts_with(&leaving_block)) {
                    Err(format!("{routes:#?}"))
                } else {
                    Ok(())
                }
            },
        );
    }
    // Those who stay still reach each other.
    wait_ping(&pods[0].netns, &pods[1].address);
    wait_ping(&pods[1].netns, &extra.address);
}

/// Pings from `from` to `to` in back-to-back batches on a thread until told to stop, so
/// that every echo sent is waited for (a batch ends when all its replies are in, or after
/// its deadline) and none is cut off by the stop. Dropped (a test failing), it stops too.
struct Pinger {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Batch>>>,
}

/// One batch of echoes: how many were sent, how many answered, and what ping said.
#[derive(Debug)]
struct Batch {
    sent: u64,
    received: u64,
    output: String,
}

impl Pinger {
    fn start(from: &Netns, to: &str) -> Pinger {
        let stop = Arc::new(AtomicBool::new(false));
        let netns = from.name().to_string();
        let to = to.to_string();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut batches = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let output = Exec::new("ip")
                        .args(["netns", "exec", &netns, "ping", "-c", "20", "-i", "0.1"])
                        .args(["-w", "60", &to])
                        .timeout(Duration::from_secs(90))
                        .run_here();
                    match ping_summary(&output.stdout) {
                        Some((sent, received)) => batches.push(Batch {
                            sent,
                            received,
                            output: output.stdout,
                        }),
                        // The test failed and its namespaces are going.
                        None if stop.load(Ordering::Relaxed) => break,
                        None => panic!("no ping summary: {output}"),
                    }
                }
                batches
            })
        };
        Pinger {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops after the current batch, and returns every batch.
    fn finish(mut self) -> Vec<Batch> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("running until finished");
        thread.join().expect("the pinger thread panicked")
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `N packets transmitted, M received` from ping's summary.
fn ping_summary(output: &str) -> Option<(u64, u64)> {
    let line = output.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>());
    Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
}

#[test]
fn pods_lose_no_ping_while_both_agents_restart_one_after_the_other() {
    let mut cluster = Cluster::new("e2e-restart", 2, VXLAN_ALWAYS);
    let count = cluster.lan.hosts.len();
    cluster.start_meshed(count, count - 1);
    let pods = add_pods(&cluster, "e2e-restart", &[0, 1]);
    ping_every_pair(&pods);

    let pinger = Pinger::start(&pods[0].netns, &pods[1].address);
    let mut logs = Vec::new();
    for index in [0, 1] {
        let stopped = cluster.stop(index);
        logs.push(format!("--- node {index}, stopped ---\n{}", stopped.stderr));
        cluster.start(index);
        cluster.wait_established(0, 1);
        cluster.wait_established(1, 1);
        // Until the restarted agent has every peer's End-of-RIB and has swept.
        wait_until(WAIT, &format!("node {index} finishes its restart"), || {
            let log = cluster.log(index);
            if log.contains("restart complete") {
                Ok(())
            } else {
                Err(log)
            }
        });
    }
    let batches = pinger.finish();
    for index in [0, 1] {
        logs.push(format!(
            "--- node {index}, restarted ---\n{}",
            cluster.log(index)
        ));
    }
    let sent: u64 = batches.iter().map(|b| b.sent).sum();
    let received: u64 = batches.iter().map(|b| b.received).sum();
    let lossy: Vec<&String> = batches
        .iter()
        .filter(|b| b.sent != b.received)
        .map(|b| &b.output)
        .collect();
    println!(
        "pinged through two restarts: {sent} sent, {received} received in {} batches",
        batches.len()
    );
    assert!(
        batches.len() >= 2 && sent > 0,
        "the ping ran through both restarts: {batches:?}"
    );
    assert_eq!(
        sent,
        received,
        "echoes lost while the agents restarted; lossy batches: {lossy:#?}\n{}",
        logs.join("\n")
    );
}

// ------------------------------------------------------------------ BGP beyond the mesh

#[test]
fn a_bird_top_of_rack_router_learns_every_block_from_its_owner() {
    let mut cluster = Cluster::new("e2e-tor", 3, NEVER);
    let tor_address: IpAddr = "198.51.100.2".parse().expect("an address");
    let tor = Netns::new("e2e-tor-rt");
    veth(&tor, "eth0", &cluster.lan.switch, "ptor");
    cluster.lan.switch.set_master("ptor", "br0");
    cluster.lan.switch.link_up("ptor");
    tor.add_address("eth0", "198.51.100.2/24");
    tor.link_up("eth0");
    tor.wait_carrier("eth0");
    let IpAddr::V4(router_id) = tor_address else {
        unreachable!("an IPv4 address")
    };
    let mut config = PeerConfig::new(router_id, 64513, tor_address);
    for index in 0..3 {
        config = config.neighbor(Neighbor::new(cluster.lan.v4(index), 64512));
    }
    let bird = Bird::start(&tor, &config);

    let count = cluster.lan.hosts.len();
    cluster.start_meshed(count, count - 1);
    apply(
        &cluster,
        0,
        "tor.yaml",
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 198.51.100.2\n  asNumber: 64513\n",
    );
    for index in 0..3 {
        bird.wait_established(cluster.lan.v4(index));
        let status = cluster.wait_established(index, 3);
        let peer_types = peer_types(&status);
        assert!(
            peer_types.contains(&("198.51.100.2".to_string(), "global".to_string())),
            "node {index} peers with the router as a global peer: {status}"
        );
    }
    for owner in 0..3 {
        let block = cluster.blocks(owner)[0].clone();
        let node = cluster.lan.v4(owner);
        let route = bird.wait_route(&block, WAIT, &|route| {
            route.next_hop == Some(node) && route.as_path == [64512]
        });
        let explained = bird.explain(route.prefix);
        assert!(
            explained.contains(&format!("via {node} on eth0")),
            "BIRD's route to node {owner}'s block {block} goes to {node}: {explained}"
        );
    }
}

#[test]
fn two_route_reflectors_carry_every_block_between_six_nodes() {
    let mut cluster = Cluster::new("e2e-rr", 6, NEVER);
    // As Calico documents it: no mesh, two nodes labelled and given a cluster ID, and one
    // BGPPeer making every node peer with the reflectors.
    let mut manifest = String::from(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n",
    );
    for reflector in [0, 1] {
        manifest.push_str(&format!(
            "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {}\n  labels:\n    route-reflector: \"true\"\nspec:\n  bgp:\n    routeReflectorClusterID: 192.0.2.100\n",
            Cluster::node_name(reflector)
        ));
    }
    manifest.push_str(
        "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: peer-with-route-reflectors\nspec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n",
    );
    apply(&cluster, 0, "reflectors.yaml", &manifest);
    for index in 0..6 {
        cluster.start(index);
    }
    // Each reflector peers with the other and every client; each client with both.
    for index in 0..6 {
        let expected = if index < 2 { 5 } else { 2 };
        let status = cluster.wait_established(index, expected);
        assert!(
            peer_types(&status)
                .iter()
                .all(|(_, peer_type)| peer_type != "node-to-node mesh"),
            "node {index} has no mesh session: {status}"
        );
    }
    let pods = add_pods(&cluster, "e2e-rr", &[0, 1, 2, 3, 4, 5]);
    ping_every_pair(&pods);
    // Reflected routes keep their owner as next hop.
    let blocks: Vec<String> = (0..6).map(|i| cluster.blocks(i)[0].clone()).collect();
    for index in [2, 5] {
        let routes = cluster.routes(index);
        for owner in (0..6).filter(|&o| o != index) {
            let wanted = format!("{} via {} dev eth0", blocks[owner], cluster.lan.v4(owner));
            assert!(
                routes.iter().any(|r| r.starts_with(&wanted)),
                "node {index}: {wanted} in {routes:#?}"
            );
        }
    }
}

#[test]
fn ping_summaries_parse() {
    let output = "PING 198.18.0.2 (198.18.0.2) 56(84) bytes of data.\n\n--- 198.18.0.2 ping statistics ---\n20 packets transmitted, 19 received, 5% packet loss, time 1903ms\n";
    assert_eq!(ping_summary(output), Some((20, 19)));
    assert_eq!(ping_summary("nothing"), None);
}
