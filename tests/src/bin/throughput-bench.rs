//! Throughput benchmark: TCP pod to pod across two nodes for each way tortie carries pod
//! traffic between nodes (plain routing, VXLAN, IPIP; Always and CrossSubnet), next to a
//! bare veth pair between two namespaces on the same machine, which is the limit every
//! other path is built on. A benchmark, not a test: it prints a table and fails only when
//! something breaks.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/throughput-bench                      # as root; --runs 3 --seconds 5
//! ```
//!
//! # How it measures
//!
//! Each row gets a fresh two-node cluster (the real `tortie-node` in each node's
//! namespace, the pool's mode set through `TORTIE_IPV4POOL_IPIP` / `_VXLAN`) with one pod
//! on each node, made by the real `tortie` plugin with the MTU the agent asks for. Once
//! both BGP sessions are Established and the pods ping each other, iperf3 runs `--runs`
//! times for `--seconds` each, server in one pod, client in the other; the figure is the
//! median of what the server received. Across subnets the nodes sit on two subnets joined
//! by a router namespace ([`tortie_tests::Lan::routed`]), so those packets cross one more
//! veth hop and a forwarding namespace. The route column is the device node 0's kernel
//! picks for the far pod (`ip route get`), which shows whether the packets were
//! encapsulated.
//!
//! IPIP rows need the host kernel's `ipip` module; without it they say so and measure
//! nothing (the VM tier would run under emulation and measure the emulator, not tortie).
//!
//! Every namespace is on one machine, so each path's packets are copied by the same CPUs
//! that run both iperf3 ends: the figures are a CPU-cost comparison of the paths, not a
//! network's. On a busy machine the absolute figures move a lot between runs; the ratios
//! within one run are what to compare.
//!
//! # Figures
//!
//! Release build, 2 vCPUs, 3 runs × 5 s per row, two runs one after the other while other
//! engineers compiled on the same machine (load average 5.2 → 4.8 over the first run,
//! 3.5 → 2.9 over the second). Gbit/s, median of 3 (ratio to the bare veth pair); pod MTU:
//!
//! ```text
//! path                                        MTU  route          run 1          run 2
//! bare veth pair (the limit)                  1500 eth0           21.03 (1.00)   23.27 (1.00)
//! Never (plain routing)                       1500 eth0           14.90 (0.71)   13.99 (0.60)
//! VXLAN Always                                1450 vxlan.tortie   12.70 (0.60)   12.87 (0.55)
//! VXLAN CrossSubnet, same subnet              1450 eth0           14.01 (0.67)   14.57 (0.63)
//! VXLAN CrossSubnet, across subnets           1450 vxlan.tortie   12.01 (0.57)   11.42 (0.49)
//! IPIP Always, IPIP CrossSubnet               skipped: this kernel has no ipip module
//! ```
//!
//! A third run on a quieter machine (load 2.2 → 1.6, nothing else compiling): bare veth
//! 21.21, Never 16.57 (0.78), VXLAN Always 13.30 (0.63), VXLAN CrossSubnet same subnet 15.46
//! (0.73), across subnets 12.26 (0.58).
//!
//! Pod to pod crosses three veth pairs, a bridge and two forwarding namespaces where the
//! limit crosses one veth pair: most of the gap from the limit to Never. VXLAN costs
//! another 8-15% on top (a pass through the tunnel device and 50 bytes of outer headers
//! per packet, on segments of 1450 bytes instead of 1500), and across subnets the router
//! namespace a little more.
//! CrossSubnet within a subnet sends unencapsulated, as Never does, and measures the same
//! within the noise, though its pods get the pool's VXLAN MTU (1450), as Calico's do.

use tortie_tests::iperf::{link_mtu, throughput};
use tortie_tests::{Cluster, Lan, Netns, run_in, veth, wait_ping};

const SKIPPED_IPIP: &str = "skipped: this kernel has no ipip module (a VM under emulation \
                            would measure the emulator, not tortie)";

/// One row of the table: how the pods' nodes are wired and what the pool says.
struct Path {
    label: &'static str,
    /// Nodes on two subnets joined by a router, instead of one LAN.
    routed: bool,
    ipip: &'static str,
    vxlan: &'static str,
}

const CLUSTER_PATHS: [Path; 6] = [
    Path {
        label: "Never (plain routing)",
        routed: false,
        ipip: "Never",
        vxlan: "Never",
    },
    Path {
        label: "VXLAN Always",
        routed: false,
        ipip: "Never",
        vxlan: "Always",
    },
    Path {
        label: "VXLAN CrossSubnet, same subnet",
        routed: false,
        ipip: "Never",
        vxlan: "CrossSubnet",
    },
    Path {
        label: "VXLAN CrossSubnet, across subnets (via router)",
        routed: true,
        ipip: "Never",
        vxlan: "CrossSubnet",
    },
    Path {
        label: "IPIP Always",
        routed: false,
        ipip: "Always",
        vxlan: "Never",
    },
    Path {
        label: "IPIP CrossSubnet, across subnets (via router)",
        routed: true,
        ipip: "CrossSubnet",
        vxlan: "Never",
    },
];

/// What one row measured.
struct Measured {
    mtu: u32,
    route: String,
    gbits: Vec<f64>,
}

struct Settings {
    runs: usize,
    seconds: u32,
}

fn main() {
    tortie_tests::require_root();
    let settings = settings();
    let load_start = tortie_tests::bench::load_average();
    let ipip = tortie_tests::vm::host_has_ipip();

    let bare = measure_bare_veth(&settings);
    let limit = median(&bare.gbits);
    let mut rows = vec![("bare veth pair, two namespaces (the limit)", Ok(bare))];
    for (index, path) in CLUSTER_PATHS.iter().enumerate() {
        let needs_ipip = path.ipip != "Never";
        let result = if needs_ipip && !ipip {
            Err(SKIPPED_IPIP)
        } else {
            Ok(measure_cluster(&format!("tput{index}"), path, &settings))
        };
        rows.push((path.label, result));
    }
    let load_end = tortie_tests::bench::load_average();

    println!(
        "| path | pod MTU | route to the far pod | Gbit/s (median of {}) | runs | ratio to bare veth |",
        settings.runs
    );
    println!("|---|---|---|---|---|---|");
    for (label, result) in rows {
        match result {
            Ok(measured) => {
                let gbits = median(&measured.gbits);
                let runs: Vec<String> = measured.gbits.iter().map(|g| format!("{g:.2}")).collect();
                println!(
                    "| {label} | {} | {} | {gbits:.2} | {} | {:.2} |",
                    measured.mtu,
                    measured.route,
                    runs.join(", "),
                    gbits / limit
                );
            }
            Err(reason) => println!("| {label} | – | – | {reason} | – | – |"),
        }
    }
    println!();
    println!(
        "{} runs × {} s per row; load average (1, 5, 15 min) at start {load_start}, at end {load_end}",
        settings.runs, settings.seconds
    );
}

/// Two namespaces joined by one veth pair, nothing else: what the machine can push
/// through the kernel between namespaces at all.
fn measure_bare_veth(settings: &Settings) -> Measured {
    let client = Netns::new("tput-bare-a");
    let server = Netns::new("tput-bare-b");
    veth(&client, "eth0", &server, "eth0");
    client.add_address("eth0", "192.0.2.1/24");
    server.add_address("eth0", "192.0.2.2/24");
    client.link_up("eth0");
    server.link_up("eth0");
    client.wait_carrier("eth0");
    server.wait_carrier("eth0");
    wait_ping(&client, "192.0.2.2");
    Measured {
        mtu: link_mtu(&client, "eth0"),
        route: route_device(&client, "192.0.2.2"),
        gbits: (0..settings.runs)
            .map(|_| throughput(&server, "192.0.2.2", &client, settings.seconds) / 1e9)
            .collect(),
    }
}

/// A fresh two-node cluster in `path`'s mode, one pod on each node; iperf3 from the pod
/// on node 0 to the pod on node 1.
fn measure_cluster(tag: &str, path: &Path, settings: &Settings) -> Measured {
    let lan = if path.routed {
        Lan::routed(tag, 1, 1)
    } else {
        Lan::new(tag, 2)
    };
    let mut cluster = Cluster::on(
        lan,
        tag,
        &[
            ("TORTIE_IPV4POOL_IPIP", path.ipip),
            ("TORTIE_IPV4POOL_VXLAN", path.vxlan),
            ("TORTIE_LOG_LEVEL", "warn"),
            ("TORTIE_HEALTH_LISTEN", "off"),
        ],
    );
    cluster.start_meshed(2, 1);
    // Pods after the cluster, so they drop (their namespaces go) before the agents die.
    let client = cluster.add_pod(0, &format!("{tag}-a"));
    let server = cluster.add_pod(1, &format!("{tag}-b"));
    wait_ping(&client.netns, &server.address);
    wait_ping(&server.netns, &client.address);
    Measured {
        mtu: link_mtu(&client.netns, "eth0"),
        route: route_device(&cluster.lan.hosts[0], &server.address),
        gbits: (0..settings.runs)
            .map(|_| {
                throughput(
                    &server.netns,
                    &server.address,
                    &client.netns,
                    settings.seconds,
                ) / 1e9
            })
            .collect(),
    }
}

/// The device `netns`'s kernel sends packets for `address` out of (`ip route get`).
fn route_device(netns: &Netns, address: &str) -> String {
    let output = run_in(netns, "ip", ["-o", "route", "get", address], &[]).expect_success();
    let mut fields = output.stdout.split_whitespace();
    fields
        .by_ref()
        .find(|field| *field == "dev")
        .and_then(|_| fields.next())
        .map(|device| format!("`{device}`"))
        .unwrap_or_else(|| format!("no device in: {}", output.stdout.trim()))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// `--runs N` (default 3) and `--seconds S` (default 5).
fn settings() -> Settings {
    let mut settings = Settings {
        runs: 3,
        seconds: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next();
        let parsed = value.as_deref().and_then(|v| v.parse::<u32>().ok());
        match (flag.as_str(), parsed) {
            ("--runs", Some(runs)) if runs > 0 => settings.runs = runs as usize,
            ("--seconds", Some(seconds)) if seconds > 0 => settings.seconds = seconds,
            _ => {
                eprintln!(
                    "throughput-bench: bad argument {flag} {}: expected --runs N and/or \
                     --seconds S, each a whole number above 0",
                    value.unwrap_or_default()
                );
                std::process::exit(2);
            }
        }
    }
    settings
}
