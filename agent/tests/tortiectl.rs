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

/// Runs tortiectl with `input` on its standard input.
fn run_with_stdin(scratch: &Scratch, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tortiectl"))
        .args(args)
        .env(
            "TORTIE_DATASTORE",
            format!("sqlite:{}", scratch.database().display()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running tortiectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const CLUSTER: &str = "\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pods
spec:
  cidr: 198.18.0.0/16
  ipipMode: Always
  natOutgoing: true
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
  asNumber: 65000
  nodeMeshMaxRestartTime: 300s
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: tor-1
spec:
  peerIP: 192.0.2.1:1790
  asNumber: 64513
  node: node-a
  ttlSecurity: 1
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: to-rr
spec:
  nodeSelector: \"!has(route-reflector)\"
  peerSelector: route-reflector == 'true'
---
apiVersion: tortie.dev/v1
kind: Node
metadata:
  name: node-a
  labels:
    route-reflector: \"true\"
spec:
  bgp:
    ipv4Address: 198.51.100.10/24
    ipv6Address: 2001:db8::10/64
    routeReflectorClusterID: 224.0.0.1
";

#[test]
fn resources_are_applied_shown_reapplied_and_deleted() {
    let scratch = Scratch::new("resources");
    let file = scratch.0.join("cluster.yaml");
    std::fs::write(&file, CLUSTER).unwrap();
    let file = file.to_str().unwrap();
    let applied = scratch.ok(&["apply", "-f", file]);
    assert_eq!(
        applied.lines().collect::<Vec<_>>(),
        [
            "ippool pods created",
            "bgpconfiguration default created",
            "bgppeer tor-1 created",
            "bgppeer to-rr created",
            "node node-a created",
        ]
    );

    let nodes = scratch.ok(&["get", "nodes"]);
    assert!(
        nodes.lines().nth(1).is_some_and(|header| {
            header.split('|').map(str::trim).collect::<Vec<_>>()
                == ["", "NAME", "ASN", "IPV4", "IPV6", ""]
        }),
        "{nodes}"
    );
    assert!(
        nodes.contains("| node-a | (65000) | 198.51.100.10/24 | 2001:db8::10/64 |"),
        "the AS a node inherits shows in parentheses: {nodes}"
    );
    let peers = scratch.ok(&["get", "bgppeers"]);
    assert!(
        peers.contains("| tor-1 | 192.0.2.1:1790") && peers.contains("| node-a "),
        "{peers}"
    );
    let pools = scratch.ok(&["get", "pool"]);
    assert!(
        pools.contains("| pods | 198.18.0.0/16 | all()    |"),
        "{pools}"
    );
    let config = scratch.ok(&["get", "bgpconfig"]);
    assert!(
        config.contains("| default | Info        | false       | 65000    |"),
        "{config}"
    );

    let peer = json(&scratch.ok(&["get", "bgppeer", "tor-1", "-o", "json"]));
    assert_eq!(peer["kind"], "BGPPeer");
    assert_eq!(peer["metadata"]["name"], "tor-1");
    assert_eq!(peer["spec"]["peerIP"], "192.0.2.1:1790");
    assert_eq!(peer["spec"]["asNumber"], 64513);
    assert_eq!(peer["spec"]["ttlSecurity"], 1);
    let node = json(&scratch.ok(&["get", "node", "node-a", "-o", "json"]));
    assert_eq!(node["spec"]["bgp"]["ipv4Address"], "198.51.100.10/24");
    assert_eq!(node["spec"]["bgp"]["routeReflectorClusterID"], "224.0.0.1");
    assert_eq!(node["metadata"]["labels"]["route-reflector"], "true");
    let list = json(&scratch.ok(&["get", "peers", "-o", "json"]));
    assert_eq!(list["kind"], "BGPPeerList");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    // The same file again changes nothing.
    let again = scratch.ok(&["apply", "-f", file]);
    assert_eq!(again.lines().count(), 5);
    assert!(
        again.lines().all(|line| line.ends_with(" unchanged")),
        "{again}"
    );

    // A change is "configured".
    let changed = CLUSTER.replace("asNumber: 64513", "asNumber: 64514");
    let output = run_with_stdin(&scratch, &["apply", "-f", "-"], &changed);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("bgppeer tor-1 configured"), "{stdout}");
    assert!(stdout.contains("node node-a unchanged"), "{stdout}");

    scratch.ok(&["delete", "bgppeer", "tor-1"]);
    let gone = scratch.fails(&["get", "bgppeer", "tor-1"]);
    assert!(gone.contains("bgppeer tor-1 does not exist"), "{gone}");
    let missing = scratch.run(&["delete", "bgppeer", "tor-1"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("bgppeer tor-1 does not exist"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let deleted = scratch.ok(&["delete", "node", "node-a"]);
    assert!(deleted.contains("node node-a deleted"), "{deleted}");
    assert!(!scratch.ok(&["get", "nodes"]).contains("node-a"));

    // delete -f: everything the file names that is left; a missing one refuses it all.
    let refused = scratch.fails(&["delete", "-f", file]);
    assert!(
        refused.contains("does not exist") && refused.contains("nothing was deleted"),
        "{refused}"
    );
    assert_eq!(
        json(&scratch.ok(&["get", "peers", "-o", "json"]))["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    scratch.ok(&["apply", "-f", file]);
    let deleted = scratch.ok(&["delete", "-f", file]);
    assert_eq!(
        deleted.lines().filter(|l| l.ends_with(" deleted")).count(),
        5,
        "{deleted}"
    );
    for kind in ["pools", "peers", "nodes", "bgpconfigs"] {
        let list = json(&scratch.ok(&["get", kind, "-o", "json"]));
        assert_eq!(list["items"], serde_json::json!([]), "{kind}");
    }
}

#[test]
fn a_bad_document_names_itself_and_nothing_from_the_file_is_written() {
    let scratch = Scratch::new("bad-document");
    let bad = format!(
        "{CLUSTER}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor-2\nspec:\n  peerIP: 192.0.2.300\n  asNumber: 64513\n"
    );
    let path = scratch.0.join("bad.yaml");
    std::fs::write(&path, &bad).unwrap();
    let path = path.to_str().unwrap();
    let error = scratch.fails(&["apply", "-f", path]);
    assert!(
        error.contains(&format!("{path}: document 6: BGPPeer tor-2: spec.peerIP:"))
            && error.contains("valid forms"),
        "{error}"
    );
    assert!(
        !scratch.database().exists(),
        "a refused file creates no datastore"
    );

    // The same with a datastore in place: nothing from the file reaches it.
    scratch.ok(&["pool", "create", "other", "--cidr", "203.0.113.0/24"]);
    scratch.fails(&["apply", "-f", path]);
    assert_eq!(
        json(&scratch.ok(&["get", "peers", "-o", "json"]))["items"],
        serde_json::json!([])
    );
    assert_eq!(
        json(&scratch.ok(&["get", "pools", "-o", "json"]))["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A misspelt field, an unknown kind and a store conflict are refused the same way.
    for (document, expected) in [
        (
            "apiVersion: tortie.dev/v1\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIp: 192.0.2.1, asNumber: 1}\n",
            "document 1: BGPPeer p: spec.peerIp: unknown field; valid fields here:",
        ),
        (
            "apiVersion: tortie.dev/v1\nkind: Pod\nmetadata: {name: p}\n",
            "document 1: kind: \"Pod\"; valid: IPPool, IPReservation, Node, BGPPeer, BGPConfiguration",
        ),
        (
            "apiVersion: tortie.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 203.0.113.128/25}\n",
            "document 1: pool p (203.0.113.128/25) overlaps pool other",
        ),
        ("kind: [", "not valid YAML"),
    ] {
        let output = run_with_stdin(&scratch, &["apply", "-f", "-"], document);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{expected} not in: {stderr}");
    }
    let usage = scratch.fails(&["get", "pods"]);
    assert!(usage.contains("unknown resource type \"pods\""), "{usage}");
}

#[test]
fn get_output_applies_back_unchanged() {
    let scratch = Scratch::new("round-trip");
    let output = run_with_stdin(&scratch, &["apply", "-f", "-"], CLUSTER);
    assert!(output.status.success());
    scratch.ok(&["ipam", "assign", "--node", "node-a", "--handle", "h"]);
    for kind in ["nodes", "ippools", "bgppeers", "bgpconfigurations"] {
        for format in ["json", "yaml"] {
            let printed = scratch.ok(&["get", kind, "-o", format]);
            let output = run_with_stdin(&scratch, &["apply", "-f", "-"], &printed);
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{kind} -o {format}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(
                !stdout.is_empty() && stdout.lines().all(|line| line.ends_with(" unchanged")),
                "{kind} -o {format}: {stdout}"
            );
        }
    }
    // Blocks and affinities are shown, not applied.
    let blocks = scratch.ok(&["get", "blocks"]);
    assert!(
        blocks.contains("| 198-18-") && blocks.contains("| node-a |"),
        "{blocks}"
    );
    let affinities = json(&scratch.ok(&["get", "affinities", "-o", "json"]));
    assert_eq!(affinities["items"][0]["spec"]["state"], "confirmed");
    let printed = scratch.ok(&["get", "blocks", "-o", "yaml"]);
    let output = run_with_stdin(&scratch, &["apply", "-f", "-"], &printed);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("IPAMBlock is written by tortie itself"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
