//! The VM tier: running a command under Debian's stock kernel when this host's kernel
//! lacks a module a test needs (`ipip` on CI). See `tests/vm/run-in-vm.sh`.

use std::path::PathBuf;
use std::time::Duration;

use crate::process::{Exec, Output};
use crate::{Netns, veth};

/// The runner script, in this crate's source tree.
pub fn runner() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vm/run-in-vm.sh")
}

/// `None` when a VM can run here, else why not (missing qemu, kernel, busybox, ...).
pub fn unavailable() -> Option<String> {
    let output = Exec::new(runner())
        .arg("--check")
        .timeout(Duration::from_secs(60))
        .try_run_here()
        .unwrap_or_else(|timed_out| panic!("{timed_out}"));
    if output.success() {
        None
    } else {
        Some(
            format!("{}{}", output.stdout, output.stderr)
                .trim()
                .to_string(),
        )
    }
}

/// Runs `program args...` in a VM (as root, on the host's filesystem, in the current
/// directory and environment) and returns what it did. `within` bounds the whole VM.
pub fn run_in_vm(program: &str, args: &[&str], within: Duration) -> Output {
    Exec::new(runner())
        .arg("--")
        .arg(program)
        .args(args)
        .env("TORTIE_VM_TIMEOUT", within.as_secs().to_string())
        // The runner's own timeout fires first; this one only catches a runner that hangs.
        .timeout(within + Duration::from_secs(60))
        .try_run_here()
        .unwrap_or_else(|timed_out| panic!("{timed_out}"))
}

/// Whether this host's kernel can make IPIP tunnels: tried for real, in a throwaway
/// namespace, so a module that would load on demand counts.
pub fn host_has_ipip() -> bool {
    let probe = Netns::new("ipip-probe");
    let far = Netns::new("ipip-far");
    veth(&probe, "eth0", &far, "eth0");
    probe.add_address("eth0", "198.51.100.1/24");
    probe
        .try_ip(&[
            "link",
            "add",
            "name",
            "ipip0",
            "type",
            "ipip",
            "local",
            "198.51.100.1",
            "remote",
            "198.51.100.2",
        ])
        .success()
}
