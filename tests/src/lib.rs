//! The integration harness: throwaway network namespaces, wired with veth pairs and bridges,
//! in which tests run tortie's real binaries (and, later, real BGP peers and CNI plugins).
//!
//! What it guarantees, so that tests can run in parallel threads (cargo's default) and in
//! parallel processes on a shared machine:
//!
//! - Every namespace is a [`Netns`] guard with a name unique to the process and the test
//!   (a tag, the process id and a counter), deleted on drop — also when the test panics.
//! - Links are only ever created inside such namespaces ([`veth`] creates both ends directly
//!   in their namespaces), so nothing touches the root namespace, no link name can clash
//!   with another test's, and deleting the namespaces removes every link.
//! - Only documentation and benchmarking addresses are configured ([`addresses`]), so no
//!   test can send traffic anywhere real.
//! - Every process runs with a timeout ([`Exec::run_in`]) or under a guard that kills it on
//!   drop ([`Process`]); all kills are by process id (the child's own process group).
//! - Waiting is polling with a deadline that reports what it last saw ([`wait_until`]),
//!   never a fixed sleep.
//!
//! Tests need root. A test that cannot run fails and says why; it never passes silently.
//! Declare process guards after the namespaces they run in, so they drop (and kill) first.
//!
//! ```no_run
//! use std::time::Duration;
//! use tortie_tests::{Exec, Netns, run_in, tortie_node, veth, wait_until};
//!
//! // Two nodes joined by a veth pair, each end created in its own namespace.
//! let a = Netns::new("demo-a");
//! let b = Netns::new("demo-b");
//! veth(&a, "eth0", &b, "eth0");
//! a.add_address("eth0", "198.51.100.1/24");
//! b.add_address("eth0", "198.51.100.2/24");
//! a.link_up("eth0");
//! b.link_up("eth0");
//! a.wait_carrier("eth0");
//!
//! // A command run to completion inside a namespace (killed if it outlives its timeout).
//! let detected = run_in(&a, tortie_node(), ["autodetect", "-o", "json"], &[("IP", "autodetect")]);
//! assert!(detected.success(), "{detected}");
//!
//! // A long-running process, killed when the guard drops; its output, polled.
//! let pinger = Exec::new("ping").args(["-c", "1000", "198.51.100.2"]).spawn_in(&a);
//! wait_until(Duration::from_secs(30), "b answers a's ping", || {
//!     let seen = pinger.stdout_so_far();
//!     if seen.contains("bytes from 198.51.100.2") { Ok(()) } else { Err(seen) }
//! });
//! ```

pub mod addresses;
pub mod asynchronous;
pub mod bench;
pub mod binaries;
pub mod capture;
pub mod cluster;
pub mod iperf;
pub mod lan;
pub mod netns;
pub mod peers;
pub mod pod;
pub mod process;
pub mod scratch;
pub mod skip;
pub mod vm;
pub mod wait;

pub use addresses::{TEST_NETWORKS, is_test_address};
pub use asynchronous::block_on_in;
pub use binaries::{bin_dir, binary, tortie_node};
pub use capture::Capture;
pub use cluster::Cluster;
pub use lan::Lan;
pub use netns::{LinkState, Netns, veth};
pub use pod::{Pod, wait_ping};
pub use process::{Exec, Output, Process, run_in};
pub use scratch::ScratchDir;
pub use skip::cannot_run;
pub use wait::wait_until;

/// Fails the calling test unless the process runs as root, which creating namespaces and
/// links needs. Called by [`Netns::new`], so every test that builds a namespace checks it.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "integration tests need root: run make test as root (effective uid is {euid})"
    );
}
