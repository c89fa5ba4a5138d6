//! `tortiectl demo up|status|down`: the demo cluster comes up with every pod reaching every
//! other (VXLAN, cross-subnet through a router, plain), reports the same on `status`, leaves
//! nothing behind on `down`, refuses a second `up`, and says what it does about IPIP on a
//! kernel with or without it.
//!
//! The demos are brought up one at a time (a lock): each runs several agents and dozens of
//! pinging threads, and the machine is shared.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tortie_agent::ctl::demo::topology;
use tortie_agent::dataplane::IpipSupport;
use tortie_tests::{Exec, Output, ScratchDir, binary, require_root, wait_until};

static ONE_DEMO_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `up` waits up to 60 s for the mesh and 30 s for the pings, on a busy machine.
const UP_TIMEOUT: Duration = Duration::from_secs(300);
/// `down` gives each agent up to 20 s.
const DOWN_TIMEOUT: Duration = Duration::from_secs(180);

/// One demo's name and state dir; runs `demo down` when dropped, also on panic.
struct Demo {
    name: String,
    state_dir: PathBuf,
    scratch: ScratchDir,
}

impl Demo {
    fn new(tag: &str) -> Demo {
        require_root();
        let scratch = ScratchDir::new(&format!("demo-{tag}"));
        Demo {
            name: format!("td{}{tag}", std::process::id()),
            state_dir: scratch.join("state"),
            scratch,
        }
    }

    fn tortiectl(&self, args: &[&str], timeout: Duration) -> Output {
        Exec::new(binary("tortiectl"))
            .arg("demo")
            .args(args)
            .args(["--name", &self.name])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .timeout(timeout)
            .run_here()
    }

    fn up(&self, args: &[&str]) -> Output {
        let mut all = vec!["up"];
        all.extend_from_slice(args);
        self.tortiectl(&all, UP_TIMEOUT)
    }

    fn status(&self) -> Output {
        self.tortiectl(&["status"], UP_TIMEOUT)
    }

    fn down(&self) -> Output {
        self.tortiectl(&["down"], DOWN_TIMEOUT)
    }

    fn namespaces(&self) -> Vec<String> {
        namespaces_with_prefix(&format!("{}-", self.name))
    }

    /// The agents' PIDs from the state file.
    fn pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.state_dir.join("state.json"))
            .unwrap_or_else(|e| panic!("cannot read the demo's state file: {e}"));
        let state: serde_json::Value = serde_json::from_str(&text).expect("state.json parses");
        state["nodes"]
            .as_array()
            .expect("state.json has nodes")
            .iter()
            .filter_map(|node| node["pid"].as_u64())
            .map(|pid| pid as u32)
            .collect()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Exec::new(binary("tortiectl"))
            .args(["demo", "down", "--name", &self.name])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .timeout(DOWN_TIMEOUT)
            .try_run_here_quietly();
    }
}

/// `Exec::run_here` panics on a timeout, which must not happen inside a drop.
trait Quietly {
    fn try_run_here_quietly(self) -> Option<Output>;
}

impl Quietly for Exec {
    fn try_run_here_quietly(self) -> Option<Output> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_here())).ok()
    }
}

fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

fn is_agent(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            String::from_utf8_lossy(program).ends_with("tortie-node")
        })
        .unwrap_or(false)
}

/// The matrix's cells: how many say `ok` and how many `--`.
fn cells(stdout: &str) -> (usize, usize) {
    let matrix = stdout
        .split("=== reachability")
        .nth(1)
        .unwrap_or_else(|| panic!("no reachability matrix in:\n{stdout}"));
    let words: Vec<&str> = matrix.split_whitespace().collect();
    (
        words.iter().filter(|w| **w == "ok").count(),
        words.iter().filter(|w| **w == "--").count(),
    )
}

#[track_caller]
fn assert_all_reach(output: &Output, pods: usize) {
    assert!(output.success(), "{output}");
    let line = format!("all {pods}×{pods} pod pairs reach each other");
    assert!(output.stdout.contains(&line), "no `{line}`: {output}");
    assert_eq!(cells(&output.stdout), (pods * pods, 0), "{output}");
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_DEMO_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn kernel_has_ipip() -> Result<(), String> {
    match topology::ipip_support().expect("the IPIP probe runs") {
        IpipSupport::Available => Ok(()),
        IpipSupport::Missing { reason } => Err(reason),
    }
}

#[track_caller]
fn assert_gone(demo: &Demo, pids: &[u32]) {
    assert_eq!(demo.namespaces(), Vec::<String>::new());
    wait_until(
        Duration::from_secs(30),
        "the demo's agents are gone",
        || {
            let alive: Vec<&u32> = pids.iter().filter(|pid| is_agent(**pid)).collect();
            if alive.is_empty() {
                Ok(())
            } else {
                Err(format!("{alive:?} still run tortie-node"))
            }
        },
    );
    assert!(
        !Path::new(&demo.state_dir).exists(),
        "{} is still there",
        demo.state_dir.display()
    );
}

#[test]
fn a_vxlan_demo_comes_up_reports_the_same_on_status_and_goes_without_a_trace() {
    let _one = lock();
    let demo = Demo::new("a");
    let up = demo.up(&["--nodes", "3", "--pods", "2", "--encap", "vxlan"]);
    assert_all_reach(&up, 6);
    for expected in [
        "building 3 nodes",
        "starting tortie-node on node-2",
        "waiting for BGP",
        "wiring pod-2-1",
    ] {
        assert!(
            up.stderr.contains(expected),
            "no progress `{expected}`: {up}"
        );
    }
    assert!(up.stdout.contains("dev vxlan.tortie onlink"), "{up}");
    assert_eq!(up.stdout.matches("Established").count(), 6, "{up}");
    let pids = demo.pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|pid| is_agent(*pid)), "{pids:?}");

    let status = demo.status();
    assert_all_reach(&status, 6);
    assert!(status.stdout.contains("pod-2-1"), "{status}");

    let down = demo.down();
    assert!(down.success(), "{down}");
    assert!(
        down.stdout.contains("stopped tortie-node on node-0"),
        "{down}"
    );
    assert!(
        down.stdout
            .contains(&format!("removed namespace {}-sw", demo.name)),
        "{down}"
    );
    assert_gone(&demo, &pids);

    let again = demo.down();
    assert!(again.success(), "{again}");
    assert!(again.stdout.contains("no demo running"), "{again}");
    let status = demo.status();
    assert!(
        !status.success() && status.stderr.contains("no demo running"),
        "{status}"
    );
}

#[test]
fn crosssubnet_nodes_reach_each_other_through_the_router() {
    let _one = lock();
    let demo = Demo::new("c");
    let up = demo.up(&["--nodes", "2", "--pods", "2", "--encap", "crosssubnet"]);
    assert_all_reach(&up, 4);
    assert!(up.stdout.contains("203.0.113.11/24"), "{up}");
    let router = format!("{}-rtr", demo.name);
    assert!(
        demo.namespaces().contains(&router),
        "{:?}",
        demo.namespaces()
    );
    let pids = demo.pids();
    assert!(demo.down().success());
    assert_gone(&demo, &pids);
}

#[test]
fn a_plain_demo_routes_via_the_nodes() {
    let _one = lock();
    let demo = Demo::new("n");
    let up = demo.up(&["--nodes", "2", "--pods", "1", "--encap", "never"]);
    assert_all_reach(&up, 2);
    assert!(up.stdout.contains("via 198.51.100.11 dev eth0"), "{up}");
    assert!(up.stdout.contains("via 198.51.100.10 dev eth0"), "{up}");
    let pids = demo.pids();
    assert!(demo.down().success());
    assert_gone(&demo, &pids);
}

#[test]
fn a_second_up_is_refused_and_the_first_keeps_working() {
    let _one = lock();
    let demo = Demo::new("t");
    assert_all_reach(
        &demo.up(&["--nodes", "2", "--pods", "1", "--encap", "vxlan"]),
        2,
    );
    let namespaces = demo.namespaces();
    let second = demo.up(&["--nodes", "2", "--pods", "1", "--encap", "vxlan"]);
    assert!(!second.success(), "{second}");
    assert!(
        second.stderr.contains("a demo is already running (state")
            && second.stderr.contains("run `tortiectl demo down` first"),
        "{second}"
    );
    assert_eq!(demo.namespaces(), namespaces);
    assert_all_reach(&demo.status(), 2);
}

/// Two `up`s started together on one state dir: exactly one builds the demo; the other is
/// refused without touching it.
#[test]
fn of_two_ups_started_together_one_builds_and_the_other_is_refused() {
    let _one = lock();
    let demo = Demo::new("p");
    let args = ["--nodes", "2", "--pods", "1", "--encap", "vxlan"];
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| demo.up(&args));
        let second = scope.spawn(|| demo.up(&args));
        (first.join().unwrap(), second.join().unwrap())
    });
    let (built, refused) = match (first.success(), second.success()) {
        (true, false) => (first, second),
        (false, true) => (second, first),
        _ => panic!("exactly one up must succeed:\n{first}\n{second}"),
    };
    assert_all_reach(&built, 2);
    assert!(
        refused.stderr.contains("a demo is already running")
            || refused.stderr.contains("exist already"),
        "{refused}"
    );
    assert_all_reach(&demo.status(), 2);
    let pids = demo.pids();
    assert!(demo.down().success());
    assert_gone(&demo, &pids);
}

#[test]
fn encap_ipip_fails_early_without_the_module_and_works_with_it() {
    let _one = lock();
    let demo = Demo::new("i");
    let up = demo.up(&["--nodes", "2", "--pods", "1", "--encap", "ipip"]);
    match kernel_has_ipip() {
        Err(reason) => {
            assert!(!up.success(), "ipip is missing ({reason}), yet: {up}");
            assert!(
                up.stderr.contains("modprobe ipip") && up.stderr.contains("--encap vxlan"),
                "{up}"
            );
            assert_eq!(demo.namespaces(), Vec::<String>::new());
            assert!(!demo.state_dir.join("state.json").exists());
        }
        Ok(()) => {
            assert_all_reach(&up, 2);
            assert!(up.stdout.contains("dev tunl0 onlink"), "{up}");
        }
    }
}

/// The IPIP demo for real, whatever this host's kernel lacks: `up --encap ipip` and `down`
/// inside the VM tier (Debian's stock kernel has ipip; the VM's writes stay in its own
/// overlay, so nothing of it reaches this host).
#[test]
fn an_ipip_demo_comes_up_and_goes_in_the_vm() {
    require_root();
    if let Some(reason) = tortie_tests::vm::unavailable() {
        tortie_tests::cannot_run(
            "an_ipip_demo_comes_up_and_goes_in_the_vm",
            &format!("no VM can start here: {reason}"),
        );
    }
    let tortiectl = binary("tortiectl").display().to_string();
    let script = format!(
        "{tortiectl} demo up --nodes 2 --pods 1 --encap ipip --name tdvm --state-dir /tmp/tdvm \
         && {tortiectl} demo down --name tdvm --state-dir /tmp/tdvm \
         && test ! -e /tmp/tdvm && echo 'ipip demo: up and down'"
    );
    let output = tortie_tests::vm::run_in_vm("sh", &["-c", &script], Duration::from_secs(600));
    assert_all_reach(&output, 2);
    assert!(output.stdout.contains("dev tunl0 onlink"), "{output}");
    assert!(output.stdout.contains("ipip demo: up and down"), "{output}");
}

#[test]
fn encap_auto_says_why_it_picks_vxlan() {
    let _one = lock();
    let demo = Demo::new("u");
    let up = demo.up(&["--nodes", "2", "--pods", "1"]);
    assert_all_reach(&up, 2);
    let notice = "notice: using VXLAN: ";
    match kernel_has_ipip() {
        Err(_) => {
            let line = up
                .stderr
                .lines()
                .find(|line| line.starts_with(notice))
                .unwrap_or_else(|| panic!("no notice: {up}"));
            assert!(line.ends_with("`modprobe ipip` would allow IPIP"), "{line}");
            assert!(up.stdout.contains("dev vxlan.tortie onlink"), "{up}");
        }
        Ok(()) => {
            assert!(!up.stderr.contains(notice), "{up}");
            assert!(up.stdout.contains("dev tunl0 onlink"), "{up}");
        }
    }
}

#[test]
fn leftover_namespaces_block_up_and_down_removes_them() {
    let _one = lock();
    let demo = Demo::new("l");
    let leftover = format!("{}-node7", demo.name);
    Exec::new("ip")
        .args(["netns", "add", &leftover])
        .run_here()
        .expect_success();
    let up = demo.up(&["--nodes", "1", "--pods", "0", "--encap", "vxlan"]);
    assert!(!up.success(), "{up}");
    assert!(
        up.stderr.contains(&leftover) && up.stderr.contains("demo down"),
        "{up}"
    );
    assert_eq!(demo.namespaces(), vec![leftover.clone()]);
    let down = demo.down();
    assert!(down.success(), "{down}");
    assert!(
        down.stdout
            .contains(&format!("removed namespace {leftover}")),
        "{down}"
    );
    assert_eq!(demo.namespaces(), Vec::<String>::new());
}

/// An `up` that fails after the agents started (here the CNI plugin refuses every pod)
/// stops them and removes every namespace before it reports the error.
#[test]
fn an_up_that_fails_halfway_removes_what_it_made() {
    let _one = lock();
    let demo = Demo::new("f");
    // tortiectl finds the agent and the plugin beside itself: a copy of it (not a link, which
    // current_exe would resolve) beside the real agent and a plugin that always fails.
    let bin = demo.scratch.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::fs::copy(binary("tortiectl"), bin.join("tortiectl")).expect("copy tortiectl");
    std::os::unix::fs::symlink(binary("tortie-node"), bin.join("tortie-node")).expect("link");
    let plugin = bin.join("tortie");
    std::fs::write(
        &plugin,
        "#!/bin/sh\necho '{\"cniVersion\":\"1.0.0\",\"code\":100,\"msg\":\"refused by the test\"}'\nexit 1\n",
    )
    .expect("fake plugin");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let up = Exec::new(bin.join("tortiectl"))
        .args([
            "demo", "up", "--nodes", "2", "--pods", "1", "--encap", "vxlan",
        ])
        .args(["--name", &demo.name])
        .arg("--state-dir")
        .arg(&demo.state_dir)
        .timeout(UP_TIMEOUT)
        .run_here();
    assert!(!up.success(), "{up}");
    assert!(up.stderr.contains("refused by the test"), "{up}");
    let pids: Vec<u32> = up
        .stderr
        .lines()
        .filter_map(|line| line.strip_prefix("stopped tortie-node on "))
        .filter_map(|rest| {
            rest.split("(pid ")
                .nth(1)?
                .trim_end_matches(')')
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(pids.len(), 2, "both agents stopped: {up}");
    assert_gone(&demo, &pids);
}
