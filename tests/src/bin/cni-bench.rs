//! CNI benchmark: ADD and DEL latency of the `tortie` plugin, p50 and p99 over 100 pods,
//! one at a time and 16 at a time, next to the reference `bridge` + `host-local` on the same
//! machine in the same run. A benchmark, not a test: it prints a table and fails only when
//! something breaks.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p tortie-tests --bin cni-bench            # as root
//! ```
//!
//! Each call is what a runtime pays: the plugin started (fork + exec) from a thread inside
//! the node's namespace, as a runtime on that node starts it, config on stdin, its exit
//! waited for with a blocking wait. One node namespace runs `tortie-node` (plain routing);
//! the pods' namespaces are made before the clock starts. (An earlier version started the
//! plugin under `ip netns exec` and polled for its exit: ~4 ms of every call was that.)
//!
//! Figures (release build, 2 vCPUs, load 1.5, same run):
//!
//! | plugin | mode | ADD p50 ms | ADD p99 ms | DEL p50 ms | DEL p99 ms |
//! |---|---|---|---|---|---|
//! | tortie | sequential | 3.3 | 7.2 | 23.6 | 32.1 |
//! | tortie | 16 in parallel | 21.3 | 35.4 | 36.2 | 52.7 |
//! | bridge + host-local | sequential | 9.0 | 13.0 | 20.3 | 28.5 |
//! | bridge + host-local | 16 in parallel | 70.2 | 97.9 | 61.3 | 88.4 |
//!
//! DEL is the kernel's: deleting a veth pair takes ~21 ms here (`ip link del` alike), an RCU
//! grace period; tortie releases the addresses meanwhile.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tortie_tests::{Cluster, Netns, binary};

const PODS: usize = 100;
const PARALLEL: usize = 16;

#[derive(Clone, Copy, PartialEq)]
enum Plugin {
    Tortie,
    Bridge,
}

impl Plugin {
    fn label(self) -> &'static str {
        match self {
            Plugin::Tortie => "tortie",
            Plugin::Bridge => "bridge + host-local",
        }
    }
}

fn config(cluster: &Cluster, plugin: Plugin) -> String {
    match plugin {
        Plugin::Tortie => serde_json::json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "tortie",
            "agent_socket": cluster.socket(0), "mtu": 1500,
        }),
        Plugin::Bridge => serde_json::json!({
            "cniVersion": "1.0.0", "name": "bench-br", "type": "bridge",
            "bridge": "br-bench", "isGateway": true, "ipMasq": false,
            "ipam": {"type": "host-local", "subnet": "203.0.113.0/24",
                     "dataDir": cluster.scratch.join("host-local").display().to_string()},
        }),
    }
    .to_string()
}

/// One call; its wall time. The plugin is started the way a runtime on the node starts it:
/// from a thread inside the node's namespace (a runtime runs in the host's), config on
/// stdin, and waited for with a blocking `wait` so the clock stops when the plugin does.
fn call(cluster: &Cluster, plugin: Plugin, command: &str, pod: &Netns, index: usize) -> Duration {
    let program = match plugin {
        Plugin::Tortie => binary("tortie"),
        Plugin::Bridge => "/usr/lib/cni/bridge".into(),
    };
    let stdin = config(cluster, plugin);
    let command = command.to_string();
    let netns = format!("/run/netns/{}", pod.name());
    let label = plugin.label();
    cluster.lan.hosts[0]
        .spawn_thread(move || {
            let started = Instant::now();
            let mut child = Command::new(&program)
                .env("CNI_COMMAND", &command)
                .env("CNI_CONTAINERID", format!("bench-{index}"))
                .env("CNI_NETNS", &netns)
                .env("CNI_IFNAME", "eth0")
                .env(
                    "CNI_ARGS",
                    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod-{index}"),
                )
                .env("CNI_PATH", "/usr/lib/cni")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
            child
                .stdin
                .take()
                .expect("stdin is piped")
                .write_all(stdin.as_bytes())
                .expect("the plugin reads its config");
            let output = child.wait_with_output().expect("waiting for the plugin");
            let elapsed = started.elapsed();
            assert!(
                output.status.success(),
                "{label} {command}: {}\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            elapsed
        })
        .join()
        .expect("a plugin call failed")
}

/// ADD then DEL latencies over every pod, `width` calls at a time.
fn round(
    cluster: &Cluster,
    plugin: Plugin,
    pods: &[Netns],
    width: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut results = Vec::new();
    for command in ["ADD", "DEL"] {
        let mut times = Vec::new();
        for chunk in pods.chunks(width).enumerate() {
            let (chunk_index, chunk) = chunk;
            let chunk_times: Vec<Duration> = std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, pod)| {
                        let index = chunk_index * width + i;
                        scope.spawn(move || call(cluster, plugin, command, pod, index))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a call panicked"))
                    .collect()
            });
            times.extend(chunk_times);
        }
        results.push(times);
    }
    let del = results.pop().unwrap_or_default();
    let add = results.pop().unwrap_or_default();
    (add, del)
}

fn percentile(times: &[Duration], p: f64) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn main() {
    tortie_tests::require_root();
    let mut cluster = Cluster::new(
        "cnibench",
        1,
        &[
            ("TORTIE_IPV4POOL_IPIP", "Never"),
            ("TORTIE_LOG_LEVEL", "warn"),
            ("TORTIE_HEALTH_LISTEN", "off"),
        ],
    );
    cluster.start(0);
    let pods: Vec<Netns> = (0..PODS).map(|i| Netns::new(&format!("cb{i}"))).collect();
    println!("| plugin | mode | ADD p50 ms | ADD p99 ms | DEL p50 ms | DEL p99 ms |");
    println!("|---|---|---|---|---|---|");
    for plugin in [Plugin::Tortie, Plugin::Bridge] {
        for (mode, width) in [("sequential", 1), ("16 in parallel", PARALLEL)] {
            let (add, del) = round(&cluster, plugin, &pods, width);
            println!(
                "| {} | {mode} | {:.1} | {:.1} | {:.1} | {:.1} |",
                plugin.label(),
                percentile(&add, 50.0),
                percentile(&add, 99.0),
                percentile(&del, 50.0),
                percentile(&del, 99.0)
            );
        }
    }
}
