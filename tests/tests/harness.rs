//! The harness's own guarantees, which every later integration test relies on: namespaces
//! and their links disappear (also when a test panics), names never collide, programs run
//! inside the namespace, and nothing outlives its timeout or its guard.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tortie_tests::{Exec, Lan, Netns, run_in, veth, wait_until};

fn namespace_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn process_exists(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[test]
fn a_namespace_and_its_links_go_away_when_the_guard_drops_even_on_panic() {
    let survivor = Netns::new("survivor");
    let mut doomed_name = String::new();
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let doomed = Netns::new("doomed");
        doomed_name = doomed.name().to_string();
        veth(&doomed, "eth0", &survivor, "peer0");
        assert!(namespace_exists(&doomed_name));
        panic!("the test fails halfway");
    }));
    assert!(result.is_err());
    assert!(
        !namespace_exists(&doomed_name),
        "{doomed_name} should be gone"
    );
    // Destroying one end of a veth pair destroys the other.
    wait_until(
        Duration::from_secs(30),
        "the survivor's end of the veth is gone",
        || {
            let links = survivor.ip(&["-o", "link"]).stdout;
            if links.contains("peer0") {
                Err(links)
            } else {
                Ok(())
            }
        },
    );
}

#[test]
fn names_are_unique_and_carry_the_tag_and_pid() {
    let first = Netns::new("same tag");
    let second = Netns::new("same tag");
    assert_ne!(first.name(), second.name());
    let pid = std::process::id().to_string();
    for netns in [&first, &second] {
        assert!(
            netns.name().starts_with("tt-same-tag-") && netns.name().contains(&pid),
            "{netns}"
        );
    }
    // The same link name in two namespaces does not clash.
    let far = Netns::new("far");
    veth(&first, "eth0", &far, "a0");
    veth(&second, "eth0", &far, "b0");
}

#[test]
fn programs_run_inside_the_namespace_with_their_environment_and_stdin() {
    let netns = Netns::new("exec");
    let far = Netns::new("exec-far");
    veth(&netns, "ens32", &far, "eth1");
    let links = run_in(&netns, "ip", ["-o", "link"], &[("UNUSED", "1")]).expect_success();
    assert!(links.stdout.contains("ens32"), "{links}");
    assert!(!links.stdout.contains("eth1"), "{links}");

    let echoed = Exec::new("sh")
        .args([
            "-c",
            "printf '%s ' \"$GREETING\"; cat; echo oops >&2; exit 3",
        ])
        .env("GREETING", "hello")
        .stdin("from stdin")
        .run_in(&netns);
    assert_eq!(echoed.code(), Some(3), "{echoed}");
    assert_eq!(echoed.stdout, "hello from stdin", "{echoed}");
    assert_eq!(echoed.stderr, "oops\n", "{echoed}");
}

#[test]
fn a_program_that_outlives_its_timeout_is_killed_and_reported() {
    let netns = Netns::new("timeout");
    let result = panic::catch_unwind(|| {
        Exec::new("sh")
            .args(["-c", "echo $$; exec sleep 600"])
            .timeout(Duration::from_millis(500))
            .run_in(&netns)
    });
    let message = *result
        .expect_err("run_in should panic on timeout")
        .downcast::<String>()
        .expect("a formatted panic message");
    assert!(message.contains("timed out"), "{message}");
    let pid: u32 = message
        .split("--- stdout ---\n")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("the message should show the pid printed: {message}"));
    assert!(!process_exists(pid), "{pid} should be dead and reaped");
}

#[test]
fn a_background_process_is_killed_when_its_guard_drops() {
    let netns = Netns::new("daemon");
    let daemon = Exec::new("sleep").arg("600").spawn_in(&netns);
    let pid = daemon.pid();
    assert!(process_exists(pid));
    assert!(!daemon.has_exited());
    drop(daemon);
    assert!(!process_exists(pid), "{pid} should be dead and reaped");
}

#[test]
fn a_background_process_can_be_watched_and_stopped() {
    let netns = Netns::new("stop");
    let daemon = Exec::new("sh")
        .args(["-c", "echo started; exec sleep 600"])
        .spawn_in(&netns);
    wait_until(
        Duration::from_secs(30),
        "the daemon says it started",
        || {
            let stdout = daemon.stdout_so_far();
            if stdout.contains("started") {
                Ok(())
            } else {
                Err(format!("stdout so far: {stdout:?}"))
            }
        },
    );
    let output = daemon.stop(Duration::from_secs(10));
    assert_eq!(output.code(), None, "SIGTERM ends sleep: {output}");
    assert_eq!(output.stdout, "started\n");

    let finishing = Exec::new("echo").arg("done").spawn_in(&netns);
    let output = finishing.wait(Duration::from_secs(30)).expect_success();
    assert_eq!(output.stdout, "done\n");
}

#[test]
fn configuring_an_address_outside_the_test_networks_is_refused() {
    let netns = Netns::new("addr");
    let far = Netns::new("addr-far");
    veth(&netns, "eth0", &far, "eth0");
    netns.add_address("eth0", "198.18.0.1/15");
    netns.add_address("eth0", "2001:db8::1/64");
    let refused = panic::catch_unwind(AssertUnwindSafe(|| {
        netns.add_address("eth0", "10.0.0.1/8");
    }));
    assert!(refused.is_err());
    let addresses = netns.describe_addresses();
    assert!(!addresses.contains("10.0.0.1"), "{addresses}");
}

#[test]
fn binaries_are_looked_up_next_to_the_test_executable() {
    if std::env::var_os("TORTIE_BIN_DIR").is_none() {
        let deps = std::env::current_exe().unwrap();
        assert_eq!(
            Some(tortie_tests::bin_dir().as_path()),
            deps.parent().and_then(Path::parent)
        );
    }
    let missing = panic::catch_unwind(|| tortie_tests::binary("no-such-tortie-binary"));
    let message = *missing
        .expect_err("a missing binary should fail the test")
        .downcast::<String>()
        .expect("a formatted panic message");
    assert!(
        message.contains("cargo build --workspace --bins"),
        "{message}"
    );
}

/// Deletes a namespace made outside the harness, if it is still there.
struct RawNetns(String);

impl RawNetns {
    fn add(name: String) -> RawNetns {
        let status = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(status.is_ok_and(|s| s.success()), "ip netns add {name}");
        RawNetns(name)
    }
}

impl Drop for RawNetns {
    fn drop(&mut self) {
        if namespace_exists(&self.0) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
}

#[test]
fn namespaces_left_by_a_killed_test_process_are_swept() {
    let helper = Netns::new("sweep");
    let short_lived = Exec::new("true").spawn_in(&helper);
    let dead_pid = short_lived.pid();
    short_lived.wait(Duration::from_secs(30)).expect_success();
    assert!(!process_exists(dead_pid));

    let orphan = RawNetns::add(format!("tt-orphan-{dead_pid}-0"));
    // pid 1 is always alive: its namespaces are somebody's running test.
    let alive = RawNetns::add(format!("tt-alive{}-1-0", std::process::id()));
    tortie_tests::netns::sweep_orphans();
    assert!(!namespace_exists(&orphan.0), "{} should be swept", orphan.0);
    assert!(namespace_exists(&alive.0), "{} should be kept", alive.0);
}

#[test]
fn a_routed_lan_joins_its_two_subnets_through_the_router() {
    let lan = Lan::routed("routed", 1, 2);
    assert_eq!(lan.v4(0).to_string(), "198.51.100.10");
    assert_eq!(lan.v4(1).to_string(), "203.0.113.10");
    assert_eq!(lan.v4(2).to_string(), "203.0.113.11");
    for (from, to) in [(0, 1), (1, 0), (1, 2)] {
        let target = lan.v4(to).to_string();
        wait_until(
            Duration::from_secs(30),
            &format!("host {from} pings {target}"),
            || {
                let output = run_in(
                    &lan.hosts[from],
                    "ping",
                    ["-c", "1", "-W", "1", &target],
                    &[],
                );
                if output.success() {
                    Ok(())
                } else {
                    Err(format!("{output}"))
                }
            },
        );
    }
    // Across subnets, the path is two hops (through the router); within one, a single hop.
    let across = run_in(
        &lan.hosts[0],
        "ping",
        ["-c", "1", "-t", "1", "203.0.113.10"],
        &[],
    );
    assert!(
        !across.success(),
        "a TTL of 1 must not cross the router: {across}"
    );
}
