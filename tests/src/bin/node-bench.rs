//! Node agent benchmark: how fast a block claimed on one node is routed on another, how
//! much memory an agent needs idle and with 10,000 remote blocks, and how fast it programs
//! 10,000 routes that arrive at once, next to the raw netlink rate on the same machine.
//! A benchmark, not a test: it prints a table and fails only when something breaks.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p tortie-tests --bin node-bench            # as root
//! ```
//!
//! # How it measures
//!
//! A LAN of four namespaces: three run `tortie-node` (plain routing, one SQLite file), the
//! fourth a `tortie-bgpd` standing in for a top-of-rack router.
//!
//! - Convergence: node 0's agent is asked, over its local API, for 64 addresses — exactly
//!   a fresh /26 — once to fill the block it claimed at start, then again and again, so each
//!   measured request claims a new block, as a pod start on a full node does.
//!   `ip -ts monitor route` in node 1's namespace stamps the moment the block's route
//!   enters node 1's kernel; the figure is that stamp minus the moment the request was
//!   sent (claim in the datastore, BGP UPDATE, route install: all of it).
//! - Memory: `VmRSS` of each agent after the mesh has been idle for 5 s, and of node 1's
//!   agent once it holds 10,000 remote blocks.
//! - Route programming: the router announces 10,000 /30s at once (one session, packed
//!   UPDATEs); the rate is 10,000 over the time between the first and the last of them
//!   entering node 1's kernel (again stamped by `ip -ts monitor route`). The raw rate is
//!   the dataplane benchmark's pipelined netlink sender (`route-install-bench --methods raw`,
//!   median of 3)
//!   in the same run.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use tortie_agent::api::{self, Request, Response};
use tortie_tests::cluster::CLUSTER_WAIT;
use tortie_tests::peers::{Announcement, Neighbor, PeerConfig, TortieBgpd};
use tortie_tests::{Cluster, Exec, Process, binary, wait_until};

/// Fewer than maxBlocksPerHost (20) minus the block claimed at start: every measured
/// request must claim a block, not borrow one.
const CONVERGENCE_RUNS: usize = 15;
const REMOTE_BLOCKS: u32 = 10_000;
const ROUTER: usize = 3;
const ROUTER_AS: u32 = 65000;

fn main() {
    tortie_tests::require_root();
    let mut cluster = Cluster::new(
        "nodebench",
        4,
        &[
            ("TORTIE_IPV4POOL_IPIP", "Never"),
            ("TORTIE_LOG_LEVEL", "warn"),
            ("TORTIE_HEALTH_LISTEN", "off"),
        ],
    );
    cluster.start_meshed(3, 2);
    let load_start = tortie_tests::bench::load_average();

    // Convergence.
    let monitor = monitor_routes(&cluster, 1);
    let mut convergence = Vec::new();
    // Run 0 fills the block the node claimed at start (already routed everywhere); every
    // later request needs a new block.
    for run in 0..=CONVERGENCE_RUNS {
        let sent = SystemTime::now();
        let response = api::call(
            std::path::Path::new(&cluster.socket(0)),
            &Request::Assign {
                handle: format!("bench-{run}"),
                num4: 64,
                num6: 0,
                attributes: Default::default(),
                pools: Vec::new(),
            },
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("assign: {e}"));
        let Response::Assigned { ipv4, .. } = response else {
            panic!("assign answered {response:?}");
        };
        let IpAddr::V4(first) = ipv4[0] else {
            panic!("an IPv4 address: {ipv4:?}")
        };
        if run == 0 {
            continue;
        }
        let block = Ipv4Net::new(first, 26).expect("/26").trunc().to_string();
        let seen = wait_until(CLUSTER_WAIT, &format!("{block} routed on node 1"), || {
            stamp_of(&monitor.stdout_so_far(), &format!("{block} via")).ok_or_else(|| {
                format!(
                    "assigned {ipv4:?}; node 1's routes: {:?}; node 0's log: {}",
                    cluster.routes(1),
                    cluster.log(0)
                )
            })
        });
        let sent = sent
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        convergence.push((seen - sent) * 1000.0);
    }

    // Idle memory.
    std::thread::sleep(Duration::from_secs(5));
    let idle: Vec<u64> = (0..3).map(|i| rss_kib(cluster.pid(i))).collect();

    // 10,000 remote blocks from the router (the same monitor goes on watching node 1).
    let router_address = cluster.lan.v4(ROUTER);
    let IpAddr::V4(router_v4) = router_address else {
        unreachable!("the LAN's first address is IPv4")
    };
    let mut router = PeerConfig::new(router_v4, ROUTER_AS, router_address);
    for index in 0..3 {
        router = router.neighbor(Neighbor::new(cluster.lan.v4(index), 64512).passive());
    }
    for block in 0..REMOTE_BLOCKS {
        let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + block * 4);
        router = router.originate(Announcement::new(&format!("{address}/30")));
    }
    let apply = cluster.scratch.write(
        "router.yaml",
        &format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: {router_address}\n  asNumber: {ROUTER_AS}\n"
        ),
    );
    let tor = TortieBgpd::start_quiet(&cluster.lan.hosts[ROUTER], &router);
    let applied = cluster.tortiectl(0, &["apply", "-f", &apply.display().to_string()]);
    assert!(applied.success(), "{applied}");
    let last = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + (REMOTE_BLOCKS - 1) * 4);
    let (first_at, last_at) = wait_until(
        Duration::from_secs(300),
        "node 1 holds the router's 10,000 blocks",
        || {
            let seen = monitor.stdout_so_far();
            let count = seen.lines().filter(|l| l.contains(" 198.19.")).count();
            match (
                stamp_of(&seen, "198.19.0.0/30 via"),
                stamp_of(&seen, &format!("{last}/30 via")),
            ) {
                (Some(first), Some(last)) if count >= REMOTE_BLOCKS as usize => Ok((first, last)),
                _ => Err(format!("{count} routes so far")),
            }
        },
    );
    drop(monitor);
    let routes = cluster.routes(1).len();
    assert!(
        routes >= REMOTE_BLOCKS as usize,
        "node 1 has {routes} tortie routes"
    );
    let programmed_rate = f64::from(REMOTE_BLOCKS) / (last_at - first_at).max(1e-6);
    std::thread::sleep(Duration::from_secs(2));
    let loaded_rss = rss_kib(cluster.pid(1));
    drop(tor);

    let raw = Exec::new(binary("route-install-bench"))
        .args([
            "--methods",
            "raw",
            "--runs",
            "3",
            "--routes",
            &REMOTE_BLOCKS.to_string(),
        ])
        .timeout(Duration::from_secs(300))
        .run_here();
    let raw_rate = raw
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("| raw netlink"))
        .and_then(|row| row.split('|').nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok());
    let load_end = tortie_tests::bench::load_average();

    convergence.sort_by(f64::total_cmp);
    let median = convergence[convergence.len() / 2];
    let p90 = convergence[convergence.len() * 9 / 10];
    println!("tortie-node benchmark (3-node plain mesh; load average {load_start} → {load_end})");
    println!();
    println!("| measure | tortie | target / reference |");
    println!("|---|---|---|");
    println!(
        "| block claimed on node 0 → route in node 1's kernel ({CONVERGENCE_RUNS} runs) | median {median:.1} ms, p90 {p90:.1} ms, max {:.1} ms | ≤ 100 ms (Calico: seconds) |",
        convergence[convergence.len() - 1]
    );
    println!(
        "| agent RSS, idle, 3-node mesh | {} | ≤ 20 MB |",
        idle.iter()
            .map(|k| format!("{:.1} MiB", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| agent RSS with {REMOTE_BLOCKS} remote blocks | {:.1} MiB | — |",
        loaded_rss as f64 / 1024.0
    );
    match raw_rate {
        Some(raw_rate) => println!(
            "| routes programmed/s, {REMOTE_BLOCKS} at once | {programmed_rate:.0} | raw pipelined netlink {raw_rate:.0} (ratio {:.2}) |",
            programmed_rate / raw_rate
        ),
        None => println!(
            "| routes programmed/s, {REMOTE_BLOCKS} at once | {programmed_rate:.0} | raw rate unavailable: {raw} |"
        ),
    }
}

/// `ip -ts monitor route` in node `index`'s namespace.
fn monitor_routes(cluster: &Cluster, index: usize) -> Process {
    let monitor = Exec::new("ip")
        .args(["-ts", "monitor", "route"])
        .spawn_in(&cluster.lan.hosts[index]);
    // `ip monitor` subscribes before it prints anything; give it a moment to be sure the
    // subscription precedes the first measured change, by waiting on a change we make.
    let probe = "198.51.100.250";
    tortie_tests::run_in(
        &cluster.lan.hosts[index],
        "ip",
        ["route", "add", &format!("{probe}/32"), "dev", "eth0"],
        &[],
    )
    .expect_success();
    wait_until(CLUSTER_WAIT, "ip monitor is listening", || {
        let seen = monitor.stdout_so_far();
        if seen.contains(probe) {
            Ok(())
        } else {
            Err(seen)
        }
    });
    tortie_tests::run_in(
        &cluster.lan.hosts[index],
        "ip",
        ["route", "del", &format!("{probe}/32"), "dev", "eth0"],
        &[],
    )
    .expect_success();
    monitor
}

/// The Unix time stamped on the first monitor line containing `needle` (and not a
/// deletion): `ip -ts` prints `[2026-11-21T15:30:00.123456] <route>`.
fn stamp_of(output: &str, needle: &str) -> Option<f64> {
    output
        .lines()
        .find(|line| line.contains(needle) && !line.contains("Deleted"))
        .and_then(|line| {
            let stamp = line.strip_prefix('[')?.split(']').next()?;
            parse_stamp(stamp)
        })
}

/// `2026-11-21T15:30:00.123456` (local time, which is UTC here) to Unix seconds.
fn parse_stamp(stamp: &str) -> Option<f64> {
    let (date, time) = stamp.split_once('T')?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let mut time = time.split(':');
    let hours: f64 = time.next()?.parse().ok()?;
    let minutes: f64 = time.next()?.parse().ok()?;
    let seconds: f64 = time.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hours * 3600.0 + minutes * 60.0 + seconds + utc_offset())
}

/// Seconds to add to a local time to get UTC (0 when TZ is UTC, as on these machines).
fn utc_offset() -> f64 {
    // SAFETY: localtime_r with a valid time_t and an output struct we own.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        -(tm.tm_gmtoff as f64)
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
