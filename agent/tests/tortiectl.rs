//! tortiectl as an operator runs it: a real process on a scratch SQLite file.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tortie_ipam::{Ipam, Kind, SqliteStore, Store};

/// A scratch directory with a datastore path in it, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tortiectl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn database(&self) -> PathBuf {
        self.0.join("tortie.db")
    }

    /// Runs tortiectl against this scratch datastore (through TORTIE_DATASTORE).
    fn run(&self, args: &[&str]) -> Output {
        run_with(&format!("sqlite:{}", self.database().display()), args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "tortiectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "tortiectl {args:?} should have failed"
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_with(datastore: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tortiectl"))
        .args(args)
        .env("TORTIE_DATASTORE", datastore)
        .output()
        .expect("running tortiectl")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn addresses(text: &str) -> Vec<IpAddr> {
    text.lines()
        .map(|line| {
            line.parse()
                .unwrap_or_else(|_| panic!("not a bare address: {line:?}"))
        })
        .collect()
}

#[test]
fn pools_are_created_listed_and_deleted_and_bad_input_changes_nothing() {
    let scratch = Scratch::new("pools");
    // Bad input before any pool exists: refused, and no datastore file is created.
    let host_bits = scratch.fails(&["pool", "create", "p", "--cidr", "198.18.0.1/15"]);
    assert!(
        host_bits.contains("did you mean 198.18.0.0/15"),
        "{host_bits}"
    );
    assert!(
        scratch
            .fails(&["pool", "create", "p", "--cidr", "198.18.0/15"])
            .contains("is not a CIDR")
    );
    let size = scratch.fails(&[
        "pool",
        "create",
        "p",
        "--cidr",
        "198.18.0.0/15",
        "--block-size",
        "33",
    ]);
    assert!(
        size.contains("blockSize: 33 is out of range for IPv4 pools (20–32)"),
        "{size}"
    );
    let mode = scratch.fails(&[
        "pool",
        "create",
        "p",
        "--cidr",
        "198.18.0.0/15",
        "--ipip-mode",
        "Sometimes",
    ]);
    assert!(mode.contains("--ipip-mode"), "{mode}");
    assert!(!scratch.database().exists());
    assert!(scratch.fails(&["pool", "list"]).contains("does not exist"));

    scratch.ok(&[
        "pool",
        "create",
        "pods",
        "--cidr",
        "198.18.0.0/15",
        "--ipip-mode",
        "Always",
        "--nat-outgoing",
    ]);
    scratch.ok(&["pool", "create", "v6", "--cidr", "2001:db8::/64"]);
    let overlap = scratch.fails(&["pool", "create", "other", "--cidr", "198.19.0.0/16"]);
    assert!(
        overlap.contains("overlaps pool pods (198.18.0.0/15)"),
        "{overlap}"
    );
    let pools = json(&scratch.ok(&["pool", "list", "-o", "json"]));
    let pools = pools.as_array().unwrap();
    assert_eq!(
        pools.len(),
        2,
        "a refused pool must not be stored: {pools:?}"
    );
    let pods = pools.iter().find(|p| p["name"] == "pods").unwrap();
    assert_eq!(pods["cidr"], "198.18.0.0/15");
    assert_eq!(pods["blockSize"], 26);
    assert_eq!(pods["ipipMode"], "Always");
    assert_eq!(pods["natOutgoing"], true);
    let table = scratch.ok(&["pool", "list"]);
    assert!(
        table.contains("| NAME |") && table.contains("| pods | 198.18.0.0/15 | 26"),
        "{table}"
    );

    scratch.ok(&["ipam", "assign", "--node", "n1", "--handle", "h"]);
    assert!(
        scratch
            .fails(&["pool", "delete", "pods"])
            .contains("still has 1 addresses in use")
    );
    scratch.ok(&["ipam", "release", "--handle", "h"]);
    scratch.ok(&["pool", "delete", "pods"]);
    assert!(
        scratch
            .fails(&["pool", "delete", "pods"])
            .contains("pool pods does not exist")
    );
}

#[test]
fn assign_show_check_and_release() {
    let scratch = Scratch::new("ipam");
    scratch.ok(&["pool", "create", "pods", "--cidr", "198.51.100.0/24"]);
    scratch.ok(&["pool", "create", "v6", "--cidr", "2001:db8:1::/120"]);
    let first = addresses(&scratch.ok(&["ipam", "assign", "--node", "n1", "--handle", "net.c1"]));
    assert_eq!(first.len(), 1);
    let dual = addresses(&scratch.ok(&[
        "ipam", "assign", "--node", "n1", "--handle", "net.c2", "--num4", "2", "--num6", "1",
    ]));
    assert_eq!(dual.len(), 3);
    assert!(dual[2].is_ipv6());
    let specific = addresses(&scratch.ok(&[
        "ipam",
        "assign",
        "--node",
        "n2",
        "--handle",
        "net.c3",
        "--ip",
        "198.51.100.200",
    ]));
    assert_eq!(specific, vec!["198.51.100.200".parse::<IpAddr>().unwrap()]);
    let taken = scratch.fails(&[
        "ipam",
        "assign",
        "--node",
        "n2",
        "--handle",
        "net.c4",
        "--ip",
        "198.51.100.200",
    ]);
    assert!(taken.contains("already in use by handle net.c3"), "{taken}");

    let usage = json(&scratch.ok(&["ipam", "show", "-o", "json"]));
    let pods = usage["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "pods")
        .unwrap();
    assert_eq!(pods["inUse"], 4);
    assert_eq!(pods["total"], 256);
    let table = scratch.ok(&["ipam", "show", "--show-blocks"]);
    assert!(
        table.contains("| GROUPING |") && table.contains("IPS IN USE"),
        "{table}"
    );
    assert!(table.contains("| IP Pool  | 198.51.100.0/24"), "{table}");
    assert!(table.contains("| Block    |"), "{table}");
    let info = json(&scratch.ok(&["ipam", "show", "--ip", "198.51.100.200", "-o", "json"]));
    assert_eq!(info["handleId"], "net.c3");
    assert_eq!(info["allocated"], true);
    assert!(
        scratch
            .ok(&["ipam", "show", "--ip", "198.51.100.201"])
            .contains("is not assigned")
    );
    let borrowed = json(&scratch.ok(&["ipam", "show", "--show-borrowed", "-o", "json"]));
    assert!(borrowed.as_array().is_some());

    let check = json(&scratch.ok(&["ipam", "check", "-o", "json"]));
    assert_eq!(check["problems"], serde_json::json!([]));
    assert_eq!(check["allocations"], 5);

    let never = scratch.fails(&["ipam", "release", "--ip", "198.51.100.99"]);
    assert!(never.contains("198.51.100.99 is not allocated"), "{never}");
    assert!(
        scratch
            .ok(&["ipam", "release", "--ip", &first[0].to_string()])
            .contains("released")
    );
    assert_eq!(
        scratch
            .ok(&["ipam", "release", "--handle", "net.c2"])
            .lines()
            .count(),
        3
    );
    assert!(
        scratch
            .ok(&["ipam", "release", "--handle", "net.c2"])
            .contains("nothing to release")
    );
    let after = json(&scratch.ok(&["ipam", "show", "-o", "json"]));
    let in_use: u64 = after["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["inUse"].as_u64().unwrap())
        .sum();
    assert_eq!(in_use, 1);
}

#[test]
fn check_finds_a_leak_and_release_from_report_fixes_it() {
    let scratch = Scratch::new("report");
    scratch.ok(&["pool", "create", "pods", "--cidr", "203.0.113.0/24"]);
    let leaked = addresses(&scratch.ok(&["ipam", "assign", "--node", "n1", "--handle", "gone"]))[0];
    let kept = addresses(&scratch.ok(&["ipam", "assign", "--node", "n1", "--handle", "kept"]))[0];
    // Simulate a crash that lost the handle object: remove it behind IPAM's back.
    {
        let store = SqliteStore::open(scratch.database()).unwrap();
        let handle = store.get(Kind::IPAMHandle, "gone").unwrap().unwrap();
        store
            .delete(Kind::IPAMHandle, "gone", &handle.revision)
            .unwrap();
    }
    let report_path = scratch.0.join("report.json");
    let report = report_path.to_str().unwrap();
    let output = scratch.run(&["ipam", "check", "-o", report]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "check must exit 1 when it finds problems"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("allocationWithoutHandle") && stdout.contains(&leaked.to_string()),
        "{stdout}"
    );
    let released = scratch.ok(&["ipam", "release", "--from-report", report]);
    assert!(
        released.contains(&format!("Successfully released {leaked}")),
        "{released}"
    );
    assert!(scratch.ok(&["ipam", "check"]).contains("No problems found"));
    let ipam = Ipam::new(SqliteStore::open(scratch.database()).unwrap());
    assert!(ipam.address_info(kept).unwrap().allocated);
    // The same report again (stale now): nothing is released twice.
    let again = scratch.ok(&["ipam", "release", "--from-report", report]);
    assert!(
        again.contains("Skipped") && !again.contains("Successfully released"),
        "{again}"
    );
    let bad = scratch.0.join("bad.json");
    std::fs::write(&bad, "{\"not\": \"a report\"}").unwrap();
    let error = scratch.fails(&["ipam", "release", "--from-report", bad.to_str().unwrap()]);
    assert!(error.contains("is not a report"), "{error}");
}

#[test]
fn foreign_files_and_unknown_datastores_are_refused_untouched() {
    let scratch = Scratch::new("foreign");
    let database = scratch.database();
    let path: &Path = &database;
    std::fs::write(path, "not a database\n".repeat(300)).unwrap();
    let before = std::fs::read(path).unwrap();
    for args in [
        &["pool", "list"][..],
        &["ipam", "show"],
        &["ipam", "assign", "--node", "n", "--handle", "h"],
    ] {
        let error = scratch.fails(args);
        assert!(
            error.contains("not a tortie datastore") && error.contains(&path.display().to_string()),
            "{error}"
        );
    }
    assert_eq!(std::fs::read(path).unwrap(), before);
    let output = run_with("etcd:http://192.0.2.1:2379", &["pool", "list"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not supported yet"));
    let output = Command::new(env!("CARGO_BIN_EXE_tortiectl"))
        .args(["--datastore", "nonsense", "pool", "list"])
        .env_remove("TORTIE_DATASTORE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected sqlite:<path>"));
}

#[test]
fn parallel_tortiectl_assigns_never_share_an_address() {
    let scratch = Scratch::new("parallel");
    scratch.ok(&["pool", "create", "pods", "--cidr", "198.18.0.0/16"]);
    let datastore = format!("sqlite:{}", scratch.database().display());
    let threads: Vec<_> = (0..4)
        .map(|worker| {
            let datastore = datastore.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|pod| {
                        let handle = format!("w{worker}-{pod}");
                        let node = format!("node-{}", worker % 2);
                        let output = run_with(
                            &datastore,
                            &["ipam", "assign", "--node", &node, "--handle", &handle],
                        );
                        assert!(
                            output.status.success(),
                            "{}",
                            String::from_utf8_lossy(&output.stderr)
                        );
                        addresses(&String::from_utf8_lossy(&output.stdout))[0]
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for thread in threads {
        for address in thread.join().unwrap() {
            assert!(seen.insert(address), "{address} assigned twice");
        }
    }
    assert_eq!(seen.len(), 100);
    assert!(scratch.ok(&["ipam", "check"]).contains("No problems found"));
}
