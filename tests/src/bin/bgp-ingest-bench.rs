//! BGP ingest benchmark: how fast tortie-bgpd, BIRD 2 and GoBGP each take in a full table
//! of 1,000,000 IPv4 prefixes over one eBGP session, and at what memory; and how fast the
//! table goes on through tortie-bgpd (and, for reference, through BIRD) to a second peer.
//! A benchmark, not a test: it prints a table and fails only when something breaks.
//!
//! ```text
//! cargo build --release -p tortie-bgp --bin tortie-bgpd --example feeder
//! cargo run --release -p tortie-tests --bin bgp-ingest-bench            # as root
//! cargo run --release -p tortie-tests --bin bgp-ingest-bench -- --feed four-sets --runs 5
//! ```
//!
//! # How it measures
//!
//! Each run builds a fresh LAN of namespaces (feeder, receiver, and for propagation a
//! second receiver), starts the receiver, then the raw feeder (`bgp/examples/feeder.rs`, a
//! real BGP speaker) in its own namespace. The feed is built before the session opens;
//! the feeder prints the wall-clock time at which its first UPDATE goes out, right after
//! the session reaches Established, and the clock stops when the receiver's RIB holds
//! every prefix. Completion is detected without disturbing the receiver:
//!
//! - tortie-bgpd: the peer's accepted-prefix count from `tortie-bgpd show peers -o json`,
//!   an O(1) counter kept by the speaker, polled every 10 ms.
//! - BIRD: `birdc show protocols all <p>`'s "Routes: N imported", an O(1) counter, polled
//!   every 10 ms. (Polling also wakes BIRD's I/O loop, which is harmless for a receiver
//!   and avoids the stall NOTES.md describes when BIRD feeds the second peer.)
//! - GoBGP 3.10: none of its counters is O(1) to read. `ListPeer` (which `gobgp neighbor`
//!   calls) counts each Adj-RIB-In by walking it, inside the server's main loop, and with
//!   an address also walks the Loc-RIB for the advertised count; `global rib summary`
//!   walks the table too. So gobgpd is not asked while it works: its CPU time is sampled
//!   from `/proc/<pid>/stat` every 10 ms, and once it has been idle for half a second the
//!   accepted count is read once to confirm; the time is that of the last sample in which
//!   it was still using CPU (resolution: one 10 ms clock tick).
//!
//! A counter poll's time is taken after the CLI returns, so a figure is an upper bound by
//! at most one poll interval plus one CLI call. Peak RSS is the receiver's `VmHWM` read
//! one second after completion. Each receiver runs `--runs` times (3 by default),
//! interleaved (tortie, BIRD, GoBGP, tortie, ...), so a change in the machine's load hits
//! all of them alike; the table shows medians, and the load average at start and end.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tortie_tests::peers::{BgpDaemon, Bird, GoBgp, Neighbor, PeerConfig, TortieBgpd};
use tortie_tests::{Exec, Lan, Netns, Process, binary};

const PREFIXES: u64 = 1_000_000;
const RECEIVER_AS: u32 = 64512;
const FEEDER_AS: u32 = 64513;
const SECOND_AS: u32 = 64514;
/// How long one run may take before the benchmark gives up (GoBGP takes tens of seconds).
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
const POLL_EVERY: Duration = Duration::from_millis(10);
/// How long gobgpd must use no CPU before its count is read.
const IDLE_FOR: Duration = Duration::from_millis(500);
/// How long after completion peak RSS is read, so work that trails the count is included.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Tortie,
    Bird,
    GoBgp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tortie => "tortie-bgpd",
            Kind::Bird => "BIRD 2",
            Kind::GoBgp => "GoBGP 3",
        }
    }

    fn how_completion_is_seen(self) -> &'static str {
        match self {
            Kind::Tortie => "accepted count (show peers -o json), polled every 10 ms",
            Kind::Bird => "\"Routes: N imported\" (show protocols all), polled every 10 ms",
            Kind::GoBgp => "CPU idle for 0.5 s (/proc), then accepted count read once",
        }
    }
}

/// A receiver under test, whichever daemon it is.
enum Receiver {
    Tortie(TortieBgpd),
    Bird(Bird),
    GoBgp(GoBgp),
}

impl Receiver {
    fn start(kind: Kind, netns: &Netns, config: &PeerConfig) -> Receiver {
        match kind {
            Kind::Tortie => Receiver::Tortie(TortieBgpd::start_quiet(netns, config)),
            Kind::Bird => Receiver::Bird(Bird::start(netns, config)),
            Kind::GoBgp => Receiver::GoBgp(GoBgp::start(netns, config)),
        }
    }

    fn daemon(&self) -> &dyn BgpDaemon {
        match self {
            Receiver::Tortie(d) => d,
            Receiver::Bird(d) => d,
            Receiver::GoBgp(d) => d,
        }
    }

    /// Routes accepted from `neighbor`, the configuration's neighbor number `index`.
    fn accepted(&self, neighbor: IpAddr, index: usize) -> Option<u64> {
        match self {
            Receiver::Tortie(d) => d.peer(neighbor).map(|row| row.accepted),
            Receiver::Bird(d) => {
                let output = d.birdc(&["show", "protocols", "all", &format!("n{index}")]);
                output
                    .lines()
                    .find_map(|line| line.trim().strip_prefix("Routes:"))
                    .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            }
            Receiver::GoBgp(d) => {
                let all: Value = serde_json::from_str(&d.gobgp(&["neighbor", "-j"])).ok()?;
                let peer = all.as_array()?.iter().find(|peer| {
                    peer.pointer("/conf/neighbor_address")
                        .and_then(Value::as_str)
                        .and_then(|a| a.parse::<IpAddr>().ok())
                        == Some(neighbor)
                })?;
                Some(
                    peer.get("afi_safis")?
                        .as_array()?
                        .iter()
                        .filter_map(|family| family.pointer("/state/accepted")?.as_u64())
                        .sum(),
                )
            }
        }
    }
}

/// `VmHWM` (peak resident set) of `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    kib / 1024.0
}

/// User plus system CPU time of `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) are utime and stime; after the name, field 3 is first.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The feeder, started in `netns` toward `receiver`.
struct Feeder {
    process: Process,
}

impl Feeder {
    fn start(netns: &Netns, receiver: IpAddr, feed: &str) -> Feeder {
        let process = Exec::new(binary("examples/feeder"))
            .arg(receiver.to_string())
            .args(["--as", &FEEDER_AS.to_string()])
            .args(["--count", &PREFIXES.to_string()])
            .args(["--feed", feed])
            .spawn_in(netns);
        Feeder { process }
    }

    /// The `first_update_unix` the feeder printed, once it has.
    fn first_update(&self) -> Option<f64> {
        self.process
            .stdout_so_far()
            .lines()
            .find_map(|line| line.strip_prefix("first_update_unix "))
            .and_then(|value| value.trim().parse().ok())
    }

    /// The feeder's `feed ...` line, without the word.
    fn description(&self) -> Option<String> {
        self.process
            .stdout_so_far()
            .lines()
            .find_map(|line| line.strip_prefix("feed "))
            .map(str::to_string)
    }

    fn check_alive(&self) {
        if self.process.has_exited() {
            panic!(
                "the feeder ended early:\n--- stdout ---\n{}--- stderr ---\n{}",
                self.process.stdout_so_far(),
                self.process.stderr_so_far()
            );
        }
    }
}

/// How completion is detected for one receiver.
#[derive(Clone, Copy)]
enum Watch {
    /// Poll an O(1) counter.
    Counter,
    /// Wait for the process to go idle, then read the counter once.
    Idle,
}

impl Watch {
    fn of(kind: Kind) -> Watch {
        match kind {
            Kind::GoBgp => Watch::Idle,
            Kind::Tortie | Kind::Bird => Watch::Counter,
        }
    }
}

/// Waits until `receiver` holds `PREFIXES` routes from `neighbor` (its neighbor number
/// `index`) and returns the wall-clock time at which it did.
fn wait_complete(
    receiver: &Receiver,
    pid: u32,
    neighbor: IpAddr,
    index: usize,
    watch: Watch,
    feeder: &Feeder,
) -> f64 {
    let started = Instant::now();
    let mut last_ticks = cpu_ticks(pid).unwrap_or(0);
    let mut last_busy = unix_now();
    let mut last_seen = None;
    loop {
        feeder.check_alive();
        if started.elapsed() > RUN_TIMEOUT {
            panic!(
                "{} did not hold {PREFIXES} routes within {RUN_TIMEOUT:?} (last count {last_seen:?})\n--- log ---\n{}",
                receiver.daemon().kind(),
                tail(&receiver.daemon().log(), 30)
            );
        }
        match watch {
            Watch::Counter => {
                let count = receiver.accepted(neighbor, index);
                let now = unix_now();
                if count.is_some_and(|count| count >= PREFIXES) {
                    return now;
                }
                last_seen = count;
            }
            Watch::Idle => {
                let ticks = cpu_ticks(pid).unwrap_or(last_ticks);
                let now = unix_now();
                if ticks != last_ticks {
                    last_ticks = ticks;
                    last_busy = now;
                } else if feeder.first_update().is_some_and(|first| last_busy > first)
                    && now - last_busy >= IDLE_FOR.as_secs_f64()
                {
                    let count = receiver.accepted(neighbor, index);
                    if count.is_some_and(|count| count >= PREFIXES) {
                        return last_busy;
                    }
                    last_seen = count;
                    // Reading the count used CPU: start the idle window over.
                    last_ticks = cpu_ticks(pid).unwrap_or(last_ticks);
                    last_busy = unix_now();
                }
            }
        }
        thread::sleep(POLL_EVERY);
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One measured run.
#[derive(Clone, Copy)]
struct Sample {
    seconds: f64,
    rss_mib: f64,
    /// Propagation runs: when the first receiver held everything, and its peak RSS.
    middle: Option<(f64, f64)>,
}

fn ipv4(address: IpAddr) -> Ipv4Addr {
    match address {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => unreachable!("the LAN's host addresses used here are IPv4"),
    }
}

/// Feeder → `kind`: how long until `kind` holds the table.
fn ingest_run(kind: Kind, feed: &str, description: &mut Option<String>) -> Sample {
    let lan = Lan::new("bgpbench", 2);
    let (feeder_address, receiver_address) = (lan.v4(0), lan.v4(1));
    let config = PeerConfig::new(ipv4(receiver_address), RECEIVER_AS, receiver_address)
        .neighbor(Neighbor::new(feeder_address, FEEDER_AS).passive());
    let receiver = Receiver::start(kind, &lan.hosts[1], &config);
    let pid = receiver.daemon().pid();
    let feeder = Feeder::start(&lan.hosts[0], receiver_address, feed);
    let done = wait_complete(&receiver, pid, feeder_address, 0, Watch::of(kind), &feeder);
    thread::sleep(SETTLE);
    let rss_mib = peak_rss_mib(pid);
    let first = feeder
        .first_update()
        .unwrap_or_else(|| panic!("the feeder printed no first_update_unix"));
    *description = description.take().or_else(|| feeder.description());
    drop(feeder);
    drop(receiver);
    Sample {
        seconds: done - first,
        rss_mib,
        middle: None,
    }
}

/// Feeder → `kind` → BIRD: how long until the BIRD behind `kind` holds the table.
fn propagation_run(kind: Kind, feed: &str) -> Sample {
    let lan = Lan::new("bgpprop", 3);
    let (feeder_address, middle_address, end_address) = (lan.v4(0), lan.v4(1), lan.v4(2));
    let end_config = PeerConfig::new(ipv4(end_address), SECOND_AS, end_address)
        .neighbor(Neighbor::new(middle_address, RECEIVER_AS).passive());
    let middle_config = PeerConfig::new(ipv4(middle_address), RECEIVER_AS, middle_address)
        .neighbor(Neighbor::new(feeder_address, FEEDER_AS).passive())
        .neighbor(Neighbor::new(end_address, SECOND_AS));
    let end = Receiver::Bird(Bird::start(&lan.hosts[2], &end_config));
    let middle = Receiver::start(kind, &lan.hosts[1], &middle_config);
    end.daemon().wait_established(middle_address);
    let middle_pid = middle.daemon().pid();
    let end_pid = end.daemon().pid();
    let feeder = Feeder::start(&lan.hosts[0], middle_address, feed);
    // Both counters are polled, so the middle's completion is seen too; BIRD as the middle
    // is thereby woken every poll (NOTES.md: it may otherwise sit on its last UPDATE).
    let mut middle_done = None;
    let started = Instant::now();
    let end_done = loop {
        feeder.check_alive();
        assert!(
            started.elapsed() < RUN_TIMEOUT,
            "BIRD behind {} did not hold {PREFIXES} routes within {RUN_TIMEOUT:?}\n--- middle log ---\n{}\n--- end log ---\n{}",
            kind.name(),
            tail(&middle.daemon().log(), 30),
            tail(&end.daemon().log(), 30)
        );
        if middle_done.is_none()
            && middle
                .accepted(feeder_address, 0)
                .is_some_and(|count| count >= PREFIXES)
        {
            middle_done = Some(unix_now());
        }
        if end
            .accepted(middle_address, 0)
            .is_some_and(|count| count >= PREFIXES)
        {
            break unix_now();
        }
        thread::sleep(POLL_EVERY);
    };
    let middle_done = middle_done.unwrap_or(end_done);
    thread::sleep(SETTLE);
    let (middle_rss, end_rss) = (peak_rss_mib(middle_pid), peak_rss_mib(end_pid));
    let first = feeder
        .first_update()
        .unwrap_or_else(|| panic!("the feeder printed no first_update_unix"));
    drop(feeder);
    drop(middle);
    drop(end);
    Sample {
        seconds: end_done - first,
        rss_mib: end_rss,
        middle: Some((middle_done - first, middle_rss)),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

struct Summary {
    seconds: f64,
    rss_mib: f64,
    runs: Vec<f64>,
    middle: Option<(f64, f64)>,
}

impl Summary {
    fn of(samples: &[Sample]) -> Summary {
        let middle = samples.iter().all(|s| s.middle.is_some()).then(|| {
            (
                median(
                    samples
                        .iter()
                        .filter_map(|s| s.middle.map(|m| m.0))
                        .collect(),
                ),
                median(
                    samples
                        .iter()
                        .filter_map(|s| s.middle.map(|m| m.1))
                        .collect(),
                ),
            )
        });
        Summary {
            seconds: median(samples.iter().map(|s| s.seconds).collect()),
            rss_mib: median(samples.iter().map(|s| s.rss_mib).collect()),
            runs: samples.iter().map(|s| s.seconds).collect(),
            middle,
        }
    }
}

struct Runs(Vec<f64>);

impl fmt::Display for Runs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: Vec<String> = self.0.iter().map(|s| format!("{s:.3}")).collect();
        write!(f, "{}", text.join(" "))
    }
}

struct Options {
    runs: usize,
    feed: String,
    receivers: Vec<Kind>,
    propagation: bool,
}

fn options() -> Options {
    let mut options = Options {
        runs: 3,
        feed: "realistic".to_string(),
        receivers: vec![Kind::Tortie, Kind::Bird, Kind::GoBgp],
        propagation: true,
    };
    let mut args = std::env::args().skip(1);
    let usage = "usage: bgp-ingest-bench [--runs N] [--feed realistic|four-sets] \
                 [--only tortie,bird,gobgp] [--no-propagation]";
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                options.runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| panic!("--runs takes a positive number; {usage}"))
            }
            "--feed" => {
                options.feed = args
                    .next()
                    .unwrap_or_else(|| panic!("--feed takes realistic or four-sets; {usage}"))
            }
            "--only" => {
                let list = args.next().unwrap_or_default();
                options.receivers = list
                    .split(',')
                    .map(|name| match name {
                        "tortie" => Kind::Tortie,
                        "bird" => Kind::Bird,
                        "gobgp" => Kind::GoBgp,
                        other => panic!("unknown receiver {other:?}; {usage}"),
                    })
                    .collect();
            }
            "--no-propagation" => options.propagation = false,
            other => panic!("unknown argument {other:?}; {usage}"),
        }
    }
    options
}

fn version(program: &str, flag: &str) -> String {
    let output = Exec::new(program)
        .arg(flag)
        .timeout(Duration::from_secs(10));
    let host = Netns::new("bgpbench-v");
    let output = output.run_in(&host);
    format!("{}{}", output.stdout, output.stderr)
        .lines()
        .next()
        .unwrap_or("?")
        .trim()
        .to_string()
}

fn main() {
    let options = options();
    // Fail early, with the build command, if a binary is missing.
    let _: PathBuf = binary("tortie-bgpd");
    let _: PathBuf = binary("examples/feeder");
    let load_at_start = tortie_tests::bench::load_average();
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "bgp-ingest-bench: {} runs each of {:?}, feed {}, load average {load_at_start}",
        options.runs, options.receivers, options.feed
    );

    let mut description = None;
    let mut ingest: BTreeMap<Kind, Vec<Sample>> = BTreeMap::new();
    let mut propagation: BTreeMap<Kind, Vec<Sample>> = BTreeMap::new();
    for run in 0..options.runs {
        for &kind in &options.receivers {
            let sample = ingest_run(kind, &options.feed, &mut description);
            eprintln!(
                "run {}: {} held {PREFIXES} after {:.3} s, peak RSS {:.1} MiB",
                run + 1,
                kind.name(),
                sample.seconds,
                sample.rss_mib
            );
            ingest.entry(kind).or_default().push(sample);
        }
        if options.propagation {
            let middles = [Kind::Tortie, Kind::Bird]
                .into_iter()
                .filter(|kind| options.receivers.contains(kind));
            for kind in middles {
                let sample = propagation_run(kind, &options.feed);
                eprintln!(
                    "run {}: BIRD behind {} held {PREFIXES} after {:.3} s",
                    run + 1,
                    kind.name(),
                    sample.seconds
                );
                propagation.entry(kind).or_default().push(sample);
            }
        }
    }
    let load_at_end = tortie_tests::bench::load_average();

    let versions: Vec<String> = options
        .receivers
        .iter()
        .map(|kind| match kind {
            Kind::Tortie => "tortie-bgpd (this tree)".to_string(),
            Kind::Bird => version("bird", "--version"),
            Kind::GoBgp => version("gobgpd", "--version"),
        })
        .collect();
    println!();
    println!(
        "BGP ingest of {PREFIXES} IPv4 /24s over one eBGP session (feed: {})",
        description.as_deref().unwrap_or(&options.feed)
    );
    println!(
        "machine: {cpus} CPUs; load average (1, 5, 15 min) at start {load_at_start}, at end {load_at_end}"
    );
    println!(
        "timed from the feeder's first UPDATE (sent as soon as the session is Established) \
         until the receiver's RIB holds all prefixes; medians of {} runs per receiver",
        options.runs
    );
    println!("receivers: {}", versions.join(", "));
    println!();
    let summaries: BTreeMap<Kind, Summary> = ingest
        .iter()
        .map(|(&kind, samples)| (kind, Summary::of(samples)))
        .collect();
    let bird = summaries.get(&Kind::Bird);
    let ratio = |value: f64, of_bird: Option<f64>| match of_bird {
        Some(bird) if bird > 0.0 => format!("{:.2}", value / bird),
        _ => "-".to_string(),
    };
    println!(
        "| receiver | seconds to hold 1M | M prefixes/s | peak RSS MiB | time ratio to BIRD | RSS ratio to BIRD | runs (s) | completion seen by |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|---|");
    for (kind, summary) in &summaries {
        println!(
            "| {} | {:.3} | {:.2} | {:.1} | {} | {} | {} | {} |",
            kind.name(),
            summary.seconds,
            PREFIXES as f64 / summary.seconds / 1e6,
            summary.rss_mib,
            ratio(summary.seconds, bird.map(|b| b.seconds)),
            ratio(summary.rss_mib, bird.map(|b| b.rss_mib)),
            Runs(summary.runs.clone()),
            kind.how_completion_is_seen()
        );
    }
    if !propagation.is_empty() {
        println!();
        println!(
            "Propagation: feeder → X → BIRD 2 (eBGP both hops), from the first UPDATE until \
             the BIRD behind X holds all prefixes; medians of {} runs. X's own ingest in \
             this setup is timed by its O(1) counter, polled alongside.",
            options.runs
        );
        println!();
        println!(
            "| X | seconds until the second peer holds 1M | time ratio to BIRD as X | X held 1M after (s) | X peak RSS MiB | runs (s) |"
        );
        println!("|---|---:|---:|---:|---:|---|");
        let summaries: BTreeMap<Kind, Summary> = propagation
            .iter()
            .map(|(&kind, samples)| (kind, Summary::of(samples)))
            .collect();
        let bird = summaries.get(&Kind::Bird).map(|b| b.seconds);
        for (kind, summary) in &summaries {
            let (middle_seconds, middle_rss) = summary.middle.unwrap_or((f64::NAN, f64::NAN));
            println!(
                "| {} | {:.3} | {} | {:.3} | {:.1} | {} |",
                kind.name(),
                summary.seconds,
                ratio(summary.seconds, bird),
                middle_seconds,
                middle_rss,
                Runs(summary.runs.clone())
            );
        }
    }
}
