//! Many OS processes on one SQLite file: concurrency (nothing handed out twice) and crash
//! safety (processes killed mid-assignment leave nothing that check + GC cannot settle).
//! The processes are `tortie-ipam-load assign`, which prints each address once it holds it.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use tortie_ipam::{IPPool, Ipam, SqliteStore};

const POOL: &str = "198.18.0.0/15";
/// Generous: these machines are small and shared; the deadline only stops a hung test.
const DEADLINE: Duration = Duration::from_secs(240);

/// A scratch directory, removed when the test ends (pass or fail).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tortie-ipam-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn database(&self) -> PathBuf {
        self.0.join("tortie.db")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A worker process and the lines it has printed so far (read by a thread as they come).
struct Worker {
    child: Child,
    prefix: String,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(database: &Path, node: &str, prefix: &str, count: usize) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tortie-ipam-load"))
            .arg("assign")
            .arg("--datastore")
            .arg(database)
            .args([
                "--node",
                node,
                "--handle-prefix",
                prefix,
                "--count",
                &count.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tortie-ipam-load");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Worker {
            child,
            prefix: prefix.to_string(),
            lines,
            reader: Some(reader),
        }
    }

    fn printed(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits for the process to exit by itself; fails the test, saying what it saw, if it
    /// does not by the deadline or exits non-zero.
    fn finish(mut self, deadline: Instant) -> Vec<(String, IpAddr)> {
        loop {
            match self.child.try_wait().expect("polling a worker") {
                Some(status) => {
                    let mut stderr = String::new();
                    if let Some(mut pipe) = self.child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                    }
                    assert!(
                        status.success(),
                        "worker {} failed ({status}): {stderr}",
                        self.prefix
                    );
                    break;
                }
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    panic!(
                        "worker {} still running at the deadline, {} lines printed",
                        self.prefix,
                        self.printed()
                    );
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        self.collect()
    }

    /// Kills the process (SIGKILL: no chance to clean up) and returns what it printed.
    fn kill(mut self) -> Vec<(String, IpAddr)> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.collect()
    }

    /// Line i is the address of handle `<prefix>-i`.
    fn collect(mut self) -> Vec<(String, IpAddr)> {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("reader thread");
        }
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .enumerate()
            .map(|(index, line)| {
                let address = line
                    .parse()
                    .unwrap_or_else(|_| panic!("worker {} printed {line:?}", self.prefix));
                (format!("{}-{index}", self.prefix), address)
            })
            .collect()
    }
}

fn open(database: &Path) -> Ipam<SqliteStore> {
    Ipam::new(SqliteStore::open(database).expect("opening the test database"))
}

#[test]
fn eight_processes_assign_4000_distinct_addresses() {
    let scratch = Scratch::new("concurrency");
    let database = scratch.database();
    open(&database)
        .create_pool(IPPool::new("pool", POOL.parse().unwrap()))
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    // Two processes per node, so they compete for the same blocks as well as the file.
    let workers: Vec<Worker> = (0..8)
        .map(|i| Worker::start(&database, &format!("node-{}", i % 4), &format!("p{i}"), 500))
        .collect();
    let mut held: BTreeMap<IpAddr, String> = BTreeMap::new();
    for worker in workers {
        for (handle, address) in worker.finish(deadline) {
            if let Some(other) = held.insert(address, handle.clone()) {
                panic!("{address} handed to both {other} and {handle}");
            }
        }
    }
    assert_eq!(held.len(), 4000);
    let pool: IpNet = POOL.parse().unwrap();
    let ipam = open(&database);
    let report = ipam.check().unwrap();
    assert!(report.is_clean(), "check: {:#?}", report.problems);
    assert_eq!(report.allocations, 4000);
    assert_eq!(report.handles, 4000);
    for (address, handle) in held.iter().step_by(97) {
        assert!(pool.contains(address));
        assert_eq!(
            ipam.address_info(*address).unwrap().handle_id.as_deref(),
            Some(handle.as_str())
        );
    }
}

#[test]
fn processes_killed_mid_assignment_leave_a_store_check_and_gc_can_settle() {
    let scratch = Scratch::new("crash");
    let database = scratch.database();
    open(&database)
        .create_pool(IPPool::new("pool", POOL.parse().unwrap()))
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    println!("random seed {seed}");
    let mut random = seed;
    let mut next = move |bound: u64| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % bound
    };

    let mut live: BTreeMap<String, IpAddr> = BTreeMap::new();
    let mut kills = 0;
    for round in 0..8 {
        // Same node names every round, so later rounds meet the claims earlier ones left.
        let workers: Vec<Worker> = (0..4)
            .map(|i| {
                Worker::start(
                    &database,
                    &format!("node-{i}"),
                    &format!("r{round}w{i}"),
                    400,
                )
            })
            .collect();
        for mut worker in workers {
            // Kill once it has done a random amount of work (zero: possibly before it even
            // opened the file); the kill lands wherever the process happens to be.
            let target = next(120) as usize;
            while worker.printed() < target
                && worker.child.try_wait().is_ok_and(|status| status.is_none())
            {
                assert!(
                    Instant::now() < deadline,
                    "worker {} stalled at {} lines",
                    worker.prefix,
                    worker.printed()
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            kills += 1;
            for (handle, address) in worker.kill() {
                if let Some(previous) = live.insert(handle.clone(), address) {
                    panic!("handle {handle} printed twice ({previous}, {address})");
                }
            }
        }
    }
    let distinct: HashSet<IpAddr> = live.values().copied().collect();
    assert_eq!(
        distinct.len(),
        live.len(),
        "an address was printed by two processes"
    );
    println!(
        "{kills} processes killed; {} addresses confirmed held",
        live.len()
    );

    let ipam = open(&database);
    let before = ipam.check().unwrap();
    println!("check before GC: {} problems", before.problems.len());
    let live_handles: HashSet<String> = live.keys().cloned().collect();
    let gc = ipam.gc(&live_handles, Duration::ZERO).unwrap();
    println!("GC: {gc:?}");
    let after = ipam.check().unwrap();
    assert!(after.is_clean(), "check after GC: {:#?}", after.problems);
    assert_eq!(
        after.allocations,
        live.len(),
        "GC must leave exactly the confirmed addresses"
    );
    for (handle, address) in &live {
        let info = ipam.address_info(*address).unwrap();
        assert!(info.allocated, "{address} (handle {handle}) was freed");
        assert_eq!(info.handle_id.as_deref(), Some(handle.as_str()));
    }
    // And the store is fully usable afterwards.
    let worker = Worker::start(&database, "node-0", "after", 50);
    let fresh = worker.finish(deadline);
    for (_, address) in &fresh {
        assert!(
            !distinct.contains(address),
            "{address} reassigned while held"
        );
    }
    assert!(open(&database).check().unwrap().is_clean());
}
