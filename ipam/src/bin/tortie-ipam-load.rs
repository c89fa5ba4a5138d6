//! Load for IPAM: the worker the multi-process tests and the benchmark spawn, and the
//! benchmark itself.
//!
//! - `tortie-ipam-load assign --datastore F --node N --count K --handle-prefix P` assigns K
//!   addresses one call at a time (handles `P-0` … `P-(K-1)`) and prints each address on its
//!   own line as soon as it is assigned, so a process killed halfway has printed exactly the
//!   addresses it holds (plus at most the one in flight, which it has not printed).
//! - `tortie-ipam-load release --datastore F --count K --handle-prefix P` releases them.
//! - `tortie-ipam-load bench` prints assignments/s and releases/s for the in-memory and
//!   SQLite stores, with 1 and 8 workers (threads for memory, processes for SQLite).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tortie_ipam::{AutoAssignArgs, IPAMConfig, IPPool, Ipam, MemoryStore, SqliteStore, Store};

/// The benchmark's pool: 198.18.0.0/15 (RFC 2544 benchmarking space), 2048 blocks of 64.
const BENCH_POOL: &str = "198.18.0.0/15";
/// Pods per node in the benchmark: a node gets one block, as with a typical pod density.
const PODS_PER_NODE: usize = 50;

#[derive(Parser)]
#[command(about = "IPAM load: worker for multi-process tests, and the benchmark")]
struct Cli {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Assign addresses, one call each, printing each as it is assigned.
    Assign {
        #[arg(long)]
        datastore: PathBuf,
        #[arg(long)]
        node: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        handle_prefix: String,
        /// Rotate over this many nodes (`<node>-0` …), PODS_PER_NODE calls each in turn.
        #[arg(long)]
        nodes: Option<usize>,
        /// Print a timing line instead of the addresses.
        #[arg(long)]
        timing: bool,
    },
    /// Release the handles an `assign` with the same prefix and count created.
    Release {
        #[arg(long)]
        datastore: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        handle_prefix: String,
        #[arg(long)]
        timing: bool,
    },
    /// Print the benchmark table.
    Bench {
        /// Operations per in-memory run.
        #[arg(long, default_value_t = 100_000)]
        memory_ops: usize,
        /// Operations per SQLite run (split over the workers).
        #[arg(long, default_value_t = 8_000)]
        sqlite_ops: usize,
        /// Workers for the parallel rows.
        #[arg(long, default_value_t = 8)]
        workers: usize,
        /// Where to put the SQLite files (removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    // End quietly when the reader of the table or the addresses goes away (`| head`).
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match Cli::parse().action {
        Action::Assign {
            datastore,
            node,
            count,
            handle_prefix,
            nodes,
            timing,
        } => {
            let ipam = Ipam::new(open(&datastore)?);
            let stdout = std::io::stdout();
            let started = unix_nanos();
            let cpu_started = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID);
            for index in 0..count {
                let node = match nodes {
                    Some(nodes) => format!("{node}-{}", (index / PODS_PER_NODE) % nodes.max(1)),
                    None => node.clone(),
                };
                let handle = format!("{handle_prefix}-{index}");
                let assigned = ipam
                    .auto_assign(&AutoAssignArgs::new(handle.as_str(), node.as_str()))
                    .with_context(|| format!("assigning for handle {handle} on node {node}"))?;
                if !timing {
                    let mut out = stdout.lock();
                    for allocation in &assigned.ipv4 {
                        writeln!(out, "{}", allocation.address).context("writing to stdout")?;
                    }
                    out.flush().context("writing to stdout")?;
                }
            }
            if timing {
                let cpu = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID).saturating_sub(cpu_started);
                println!(
                    "timing {started} {} {count} {}",
                    unix_nanos(),
                    cpu.as_nanos()
                );
            }
            Ok(())
        }
        Action::Release {
            datastore,
            count,
            handle_prefix,
            timing,
        } => {
            let ipam = Ipam::new(open(&datastore)?);
            let started = unix_nanos();
            let cpu_started = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID);
            for index in 0..count {
                let handle = format!("{handle_prefix}-{index}");
                ipam.release_handle(&handle)
                    .with_context(|| format!("releasing handle {handle}"))?;
            }
            if timing {
                let cpu = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID).saturating_sub(cpu_started);
                println!(
                    "timing {started} {} {count} {}",
                    unix_nanos(),
                    cpu.as_nanos()
                );
            }
            Ok(())
        }
        Action::Bench {
            memory_ops,
            sqlite_ops,
            workers,
            dir,
        } => bench(memory_ops, sqlite_ops, workers, dir),
    }
}

fn open(path: &Path) -> Result<SqliteStore> {
    SqliteStore::open(path).with_context(|| format!("opening datastore {}", path.display()))
}

/// CPU time of this thread or process (`clock`), for rates per CPU-second: on a machine
/// shared with other work, wall-clock rates say as much about the neighbours as about IPAM.
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to a local.
    let result = unsafe { libc::clock_gettime(clock, &mut now) };
    if result != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A store with the benchmark pool and no block limit, so it measures IPAM, not a full pool.
fn prepare<S: Store>(store: S) -> Result<Ipam<S>> {
    let ipam = Ipam::new(store);
    ipam.create_pool(IPPool::new("bench", BENCH_POOL.parse()?))
        .context("creating the benchmark pool")?;
    ipam.set_config(IPAMConfig {
        max_blocks_per_host: 0,
        ..IPAMConfig::default()
    })?;
    Ok(ipam)
}

/// One line of the table: wall time and CPU time (all workers together) of each phase.
struct Row {
    store: &'static str,
    workers: String,
    ops: usize,
    assign: Phase,
    release: Phase,
}

#[derive(Clone, Copy)]
struct Phase {
    wall: Duration,
    cpu: Duration,
}

impl Phase {
    fn better(self, other: Phase) -> Phase {
        if other.wall < self.wall { other } else { self }
    }
}

fn bench(memory_ops: usize, sqlite_ops: usize, workers: usize, dir: Option<PathBuf>) -> Result<()> {
    if memory_ops / workers.max(1) / PODS_PER_NODE > 2048 || sqlite_ops / PODS_PER_NODE > 2048 {
        bail!(
            "too many operations for the benchmark pool {BENCH_POOL} (2048 blocks of 64, {PODS_PER_NODE} per node)"
        );
    }
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("tortie-ipam-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut rows = Vec::new();
    // Memory: best of three runs (a run is tens of milliseconds, so noise from the other
    // processes on the machine is large by comparison).
    for threads in [1, workers] {
        let mut best = memory_run(memory_ops, threads)?;
        for _ in 0..2 {
            let (assign, release) = memory_run(memory_ops, threads)?;
            best = (best.0.better(assign), best.1.better(release));
        }
        rows.push(Row {
            store: "memory",
            workers: format!("{threads} thread(s)"),
            ops: memory_ops,
            assign: best.0,
            release: best.1,
        });
    }
    for processes in [1, workers] {
        let path = dir.join(format!("bench-{processes}.db"));
        remove_database(&path);
        let (assign, release) = sqlite_run(&path, sqlite_ops, processes)?;
        remove_database(&path);
        rows.push(Row {
            store: "sqlite",
            workers: format!("{processes} process(es)"),
            ops: sqlite_ops,
            assign,
            release,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "{:<8} {:<14} {:>6} {:>14} {:>14} {:>18} {:>18}",
        "STORE",
        "WORKERS",
        "OPS",
        "ASSIGNMENTS/S",
        "RELEASES/S",
        "ASSIGNMENTS/CPU-S",
        "RELEASES/CPU-S"
    );
    for row in rows {
        let rate = |elapsed: Duration| row.ops as f64 / elapsed.as_secs_f64().max(1e-9);
        println!(
            "{:<8} {:<14} {:>6} {:>14.0} {:>14.0} {:>18.0} {:>18.0}",
            row.store,
            row.workers,
            row.ops,
            rate(row.assign.wall),
            rate(row.release.wall),
            rate(row.assign.cpu),
            rate(row.release.cpu),
        );
    }
    println!(
        "(one assignment = one auto_assign call for one IPv4 address and a new handle, {PODS_PER_NODE} per node, \
         block claims included; one release = one release_handle call. /S: wall clock, from the first worker's \
         start to the last one's end; /CPU-S: per second of CPU the workers used, which other load on the \
         machine does not dilute)"
    );
    Ok(())
}

fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

/// One in-memory run: `threads` threads share one store, each assigning its share on its own
/// nodes, then releasing it. Returns the wall time of each phase.
fn memory_run(ops: usize, threads: usize) -> Result<(Phase, Phase)> {
    let ipam = Arc::new(prepare(MemoryStore::new())?);
    let per_thread = ops / threads;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let ipam = Arc::clone(&ipam);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || -> Result<(Duration, Duration)> {
                let names: Vec<(String, String)> = (0..per_thread)
                    .map(|i| {
                        (
                            format!("t{thread}-pod-{i}"),
                            format!("t{thread}-node-{}", i / PODS_PER_NODE),
                        )
                    })
                    .collect();
                barrier.wait();
                let cpu = cpu_time(libc::CLOCK_THREAD_CPUTIME_ID);
                for (handle, node) in &names {
                    ipam.auto_assign(&AutoAssignArgs::new(handle.as_str(), node.as_str()))?;
                }
                let assign_cpu = cpu_time(libc::CLOCK_THREAD_CPUTIME_ID).saturating_sub(cpu);
                barrier.wait();
                barrier.wait();
                let cpu = cpu_time(libc::CLOCK_THREAD_CPUTIME_ID);
                for (handle, _) in &names {
                    ipam.release_handle(handle)?;
                }
                let release_cpu = cpu_time(libc::CLOCK_THREAD_CPUTIME_ID).saturating_sub(cpu);
                barrier.wait();
                Ok((assign_cpu, release_cpu))
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    barrier.wait();
    let assign_wall = start.elapsed();
    barrier.wait();
    let start = Instant::now();
    barrier.wait();
    let release_wall = start.elapsed();
    let (mut assign_cpu, mut release_cpu) = (Duration::ZERO, Duration::ZERO);
    for handle in handles {
        let (assign, release) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a benchmark thread panicked"))??;
        assign_cpu += assign;
        release_cpu += release;
    }
    Ok((
        Phase {
            wall: assign_wall,
            cpu: assign_cpu,
        },
        Phase {
            wall: release_wall,
            cpu: release_cpu,
        },
    ))
}

/// One SQLite run: `processes` worker processes (this binary's `assign`, then `release`) on
/// one file. A phase lasts from the earliest worker start to the latest worker end, as the
/// workers report them (process start-up is not counted).
fn sqlite_run(path: &Path, ops: usize, processes: usize) -> Result<(Phase, Phase)> {
    drop(prepare(open(path)?)?);
    let exe = std::env::current_exe().context("finding this program to start workers")?;
    let per_process = ops / processes;
    let phase = |verb: &str| -> Result<Phase> {
        let children: Vec<_> = (0..processes)
            .map(|worker| {
                let mut command = Command::new(&exe);
                command
                    .arg(verb)
                    .arg("--datastore")
                    .arg(path)
                    .arg("--count")
                    .arg(per_process.to_string())
                    .arg("--handle-prefix")
                    .arg(format!("w{worker}"))
                    .arg("--timing")
                    .stdout(Stdio::piped());
                if verb == "assign" {
                    command
                        .arg("--node")
                        .arg(format!("w{worker}-node"))
                        .arg("--nodes")
                        .arg("1000000");
                }
                command
                    .spawn()
                    .with_context(|| format!("starting {}", exe.display()))
            })
            .collect::<Result<_>>()?;
        let mut first_start = u128::MAX;
        let mut last_end = 0u128;
        let mut cpu = 0u128;
        for child in children {
            let output = child.wait_with_output().context("waiting for a worker")?;
            if !output.status.success() {
                bail!("a {verb} worker failed with {}", output.status);
            }
            let text = String::from_utf8_lossy(&output.stdout);
            let fields: Vec<u128> = text
                .lines()
                .find_map(|line| line.strip_prefix("timing "))
                .map(|rest| {
                    rest.split_whitespace()
                        .filter_map(|f| f.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            let [start, end, _, worker_cpu] = fields[..] else {
                bail!("a {verb} worker printed no timing line: {text}")
            };
            first_start = first_start.min(start);
            last_end = last_end.max(end);
            cpu += worker_cpu;
        }
        Ok(Phase {
            wall: Duration::from_nanos(last_end.saturating_sub(first_start) as u64),
            cpu: Duration::from_nanos(cpu as u64),
        })
    };
    let assign = phase("assign")?;
    let release = phase("release")?;
    Ok((assign, release))
}
