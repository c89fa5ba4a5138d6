//! The VM tier itself: the runner reports a command's output and status faithfully, and the
//! kernel it boots has working IPIP, which this host's kernel may lack.

use std::time::Duration;

use tortie_tests::vm;

const VM_WITHIN: Duration = Duration::from_secs(600);

/// `make test` installs what the VM needs, so a VM that cannot start is a failure here,
/// with the reason, never a silent pass.
fn require_vm() {
    tortie_tests::require_root();
    if let Some(reason) = vm::unavailable() {
        panic!("the VM tier cannot run: {reason}");
    }
}

#[test]
fn the_vm_runs_a_command_and_reports_its_output_and_status() {
    require_vm();
    let output = vm::run_in_vm(
        "sh",
        &[
            "-c",
            "echo out; echo err >&2; test \"$TORTIE_IN_VM\" = 1 && exit 7",
        ],
        VM_WITHIN,
    );
    assert_eq!(output.code(), Some(7), "{output}");
    assert_eq!(output.stdout, "out\n", "{output}");
    assert!(output.stderr.contains("err\n"), "{output}");
}

#[test]
fn the_vm_kernel_tunnels_ipip() {
    require_vm();
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vm/ipip-pair.sh");
    let script = script.display().to_string();
    let output = vm::run_in_vm("bash", &[&script], VM_WITHIN);
    assert!(
        output.success() && output.stdout.contains("ipip tunnel: ok"),
        "IPIP between two namespaces in the VM: {output}"
    );
    // Say where IPIP comes from on this machine, for whoever reads the log.
    println!(
        "host kernel has ipip: {}; the VM tier provides it either way",
        vm::host_has_ipip()
    );
}

/// The node agent over IPIP: two `tortie-node`s on an IPIP Always pool, inside the VM
/// (whose stock kernel has ipip), route each other's blocks through `tunl0` and carry
/// packets over it. The body is [`inside_the_vm_two_nodes_route_over_tunl0`], which this
/// test runs in a VM as a filtered run of this very test executable.
#[test]
fn the_node_agent_routes_blocks_over_ipip_in_the_vm() {
    require_vm();
    let executable = std::env::current_exe().expect("the test executable's path");
    let output = vm::run_in_vm(
        &executable.display().to_string(),
        &[
            "--ignored",
            "--exact",
            "inside_the_vm_two_nodes_route_over_tunl0",
            "--nocapture",
            "--test-threads=1",
        ],
        VM_WITHIN,
    );
    assert!(
        output.success() && output.stdout.contains("ipip cluster: ok"),
        "two tortie nodes over IPIP in the VM: {output}"
    );
}

#[test]
#[ignore = "runs inside the VM tier: started by the_node_agent_routes_blocks_over_ipip_in_the_vm"]
fn inside_the_vm_two_nodes_route_over_tunl0() {
    assert_eq!(
        std::env::var("TORTIE_IN_VM").as_deref(),
        Ok("1"),
        "this test runs inside the VM tier only"
    );
    let mut cluster =
        tortie_tests::Cluster::new("ipipvm", 2, &[("TORTIE_IPV4POOL_IPIP", "Always")]);
    cluster.start(0);
    cluster.start(1);
    cluster.wait_established(0, 1);
    cluster.wait_established(1, 1);
    let tunnel_address = |index: usize| -> String {
        let output = tortie_tests::run_in(
            &cluster.lan.hosts[index],
            "ip",
            ["-4", "-o", "addr", "show", "dev", "tunl0"],
            &[],
        )
        .expect_success();
        let address = output
            .stdout
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .unwrap_or_else(|| panic!("tunl0 has no IPv4 address on node {index}: {output}"));
        assert!(
            address.ends_with("/32"),
            "tunl0's only address is a /32: {output}"
        );
        address.trim_end_matches("/32").to_string()
    };
    for (index, other) in [(0, 1), (1, 0)] {
        let block = cluster.blocks(other)[0].clone();
        let wanted = format!("{block} via {} dev tunl0", cluster.lan.v4(other));
        tortie_tests::wait_until(
            tortie_tests::cluster::CLUSTER_WAIT,
            &format!("node {index} routes {block} over tunl0"),
            || {
                let routes = cluster.routes(index);
                if routes
                    .iter()
                    .any(|r| r.starts_with(&wanted) && r.contains("onlink"))
                {
                    Ok(())
                } else {
                    Err(format!("{routes:?}"))
                }
            },
        );
        let link = tortie_tests::run_in(
            &cluster.lan.hosts[index],
            "ip",
            ["link", "show", "tunl0"],
            &[],
        )
        .expect_success();
        assert!(
            link.stdout.contains("mtu 1480"),
            "host MTU 1500 − 20: {link}"
        );
        assert!(link.stdout.contains(",UP"), "tunl0 is up: {link}");
    }
    let ping = tortie_tests::run_in(
        &cluster.lan.hosts[0],
        "ping",
        [
            "-c",
            "3",
            "-i",
            "0.3",
            "-W",
            "10",
            "-I",
            &tunnel_address(0),
            &tunnel_address(1),
        ],
        &[],
    );
    assert!(ping.success(), "ping over tunl0: {ping}");
    println!("ipip cluster: ok");
}
