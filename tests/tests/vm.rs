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
