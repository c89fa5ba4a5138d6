//! Network namespaces as guards, and the links inside them.
//!
//! A [`Netns`] is created by `ip netns add` and deleted by `ip netns del` when dropped,
//! which also destroys every link inside it (and so both ends of any veth pair with one end
//! inside). Links are created directly in their namespaces (never in the root namespace
//! and moved), so no test ever sees another's links.

use std::fmt;
use std::fs;
use std::path::Path;
use std::process;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use crate::addresses::check_test_cidr;
use crate::process::{Exec, Output};
use crate::wait::wait_until;

/// Namespaces created by this process so far: part of each name, so one test can hold
/// several namespaces with the same tag and no two tests' names collide.
static CREATED: AtomicU32 = AtomicU32::new(0);

/// Serialises `ip netns add` / `ip netns del` within the process. The first `ip netns add`
/// on a machine makes `/run/netns` a shared bind mount of itself; two racing at that moment
/// can stack two such mounts and hide each other's namespaces.
static NAMESPACE_CHANGES: Mutex<()> = Mutex::new(());

/// Whether this process has looked for namespaces that killed test processes left behind.
static SWEPT: Once = Once::new();

/// The longest tag kept in a name: names stay short enough to read in `ip netns list`.
const MAX_TAG_LEN: usize = 12;

/// Link names are at most IFNAMSIZ - 1 bytes.
const MAX_LINK_NAME_LEN: usize = 15;

/// How long a link may take to come up, or anything else the kernel does asynchronously.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(30);

/// A network namespace that exists while this guard does.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `tt-<tag>-<pid>-<n>` with its loopback up. `tag` says
    /// what the namespace is for (e.g. `lab-a`); it is cut to a few characters of
    /// `[a-z0-9-]`. Panics unless running as root.
    #[track_caller]
    pub fn new(tag: &str) -> Netns {
        crate::require_root();
        let tag: String = tag
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(MAX_TAG_LEN)
            .collect();
        let name = format!(
            "tt-{tag}-{}-{}",
            process::id(),
            CREATED.fetch_add(1, Ordering::Relaxed)
        );
        {
            let _changing = lock_namespace_changes();
            SWEPT.call_once(sweep_orphans_locked);
            let added = ip_here(&["netns", "add", &name]);
            if !added.success() && added.stderr.contains("File exists") {
                // Left behind by an earlier process that had our pid and was killed before
                // its guards ran: it is nobody's now.
                ip_here(&["netns", "del", &name]).expect_success();
                ip_here(&["netns", "add", &name]).expect_success();
            } else {
                added.expect_success();
            }
        }
        let netns = Netns { name };
        netns.link_up("lo");
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `work` on a new thread that has entered this namespace (`setns` changes the
    /// network namespace of the calling thread only), so a test can serve or connect from
    /// inside it in-process: sockets the thread opens belong to this namespace.
    pub fn spawn_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let handle = std::fs::File::open(&path)
                .unwrap_or_else(|error| panic!("cannot open {path}: {error}"));
            // SAFETY: `handle` is an open namespace file; CLONE_NEWNET asks setns to check
            // that it is a network namespace. Only this thread moves.
            let entered = unsafe {
                libc::setns(std::os::fd::AsRawFd::as_raw_fd(&handle), libc::CLONE_NEWNET)
            };
            assert_eq!(
                entered,
                0,
                "setns into {path}: {}",
                std::io::Error::last_os_error()
            );
            work()
        })
    }

    /// Waits (up to `within`) until a ping from `source` (an address of this namespace) to
    /// `target` is answered, then asserts that `link` counted packets both ways: the ping
    /// went through that device (a tunnel), not around it.
    #[track_caller]
    pub fn ping_through(&self, link: &str, source: &str, target: &str, within: Duration) {
        let ping = crate::wait_until(
            within,
            &format!("{source} pings {target} through {link}"),
            || {
                let output = crate::Exec::new("ping")
                    .args(["-c", "1", "-W", "2", "-I", source, target])
                    .run_in(self);
                if output.success() {
                    Ok(output)
                } else {
                    Err(output)
                }
            },
        );
        assert!(ping.stdout.contains("1 received"), "{ping}");
        let statistics = self.ip(&["-j", "-s", "link", "show", "dev", link]).stdout;
        let parsed: serde_json::Value = serde_json::from_str(&statistics)
            .unwrap_or_else(|error| panic!("{error}: {statistics}"));
        for direction in ["tx", "rx"] {
            let packets = parsed[0]["stats64"][direction]["packets"].as_u64();
            assert!(
                packets.is_some_and(|packets| packets > 0),
                "{link} {direction}: {statistics}"
            );
        }
    }

    /// Runs `ip -n <this namespace> args...` and panics, showing its output, if it fails.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> Output {
        self.try_ip(args).expect_success()
    }

    /// Runs `ip -n <this namespace> args...` and returns what it did.
    #[track_caller]
    pub fn try_ip(&self, args: &[&str]) -> Output {
        ip_here(&[&["-n", self.name.as_str()], args].concat())
    }

    #[track_caller]
    pub fn link_up(&self, link: &str) {
        self.ip(&["link", "set", "dev", link, "up"]);
    }

    #[track_caller]
    pub fn link_down(&self, link: &str) {
        self.ip(&["link", "set", "dev", link, "down"]);
    }

    /// Adds `cidr` (`address/prefix_len`) to `link`. Panics unless it is a test address
    /// (see [`crate::addresses`]). IPv6 addresses are added with `nodad`, so they are
    /// usable at once rather than tentative for a second.
    #[track_caller]
    pub fn add_address(&self, link: &str, cidr: &str) {
        let address = check_test_cidr(cidr);
        if address.is_ipv6() {
            self.ip(&["address", "add", cidr, "dev", link, "nodad"]);
        } else {
            self.ip(&["address", "add", cidr, "dev", link]);
        }
    }

    /// Creates a bridge named `name` (down, no ports, STP off).
    #[track_caller]
    pub fn add_bridge(&self, name: &str) {
        check_link_name(name);
        self.ip(&["link", "add", "name", name, "type", "bridge"]);
    }

    /// Makes `link` a port of `bridge`.
    #[track_caller]
    pub fn set_master(&self, link: &str, bridge: &str) {
        self.ip(&["link", "set", "dev", link, "master", bridge]);
    }

    /// The kernel's view of `link` now.
    #[track_caller]
    pub fn link_state(&self, link: &str) -> LinkState {
        let output = self.ip(&["-o", "link", "show", "dev", link]);
        LinkState::parse(&output.stdout)
            .unwrap_or_else(|| panic!("cannot parse `ip link show dev {link}` in {self}: {output}"))
    }

    /// Waits until `link` has carrier (`LOWER_UP`), which for a veth means both ends are up
    /// and for a bridge that a port forwards (on kernels where a bridge without ports has
    /// none).
    #[track_caller]
    pub fn wait_carrier(&self, link: &str) -> LinkState {
        self.wait_link(link, "has carrier", LinkState::carrier)
    }

    /// Waits until `link`'s state satisfies `condition` (described by `what`, e.g. "has
    /// lost carrier"), and returns that state.
    #[track_caller]
    pub fn wait_link(
        &self,
        link: &str,
        what: &str,
        condition: impl Fn(&LinkState) -> bool,
    ) -> LinkState {
        wait_until(LINK_TIMEOUT, &format!("{link} in {self} {what}"), || {
            let state = self.link_state(link);
            if condition(&state) {
                Ok(state)
            } else {
                Err(state)
            }
        })
    }

    /// `ip -o address` in this namespace, for failure messages.
    pub fn describe_addresses(&self) -> String {
        self.try_ip(&["-o", "address"]).stdout
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "netns {}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Must not panic: this also runs while a failing test unwinds.
        let _changing = lock_namespace_changes();
        match Exec::new("ip")
            .args(["netns", "del", self.name.as_str()])
            .try_run_here()
        {
            Ok(output) if output.success() => {}
            Ok(output) => eprintln!("warning: could not delete {self}: {output}"),
            Err(timed_out) => eprintln!("warning: could not delete {self}: {timed_out}"),
        }
    }
}

/// Creates a veth pair with one end named `a_link` in `a` and the other named `b_link` in
/// `b`, each created directly in its namespace. Both ends start down. `a` and `b` may be
/// the same namespace.
///
/// A veth whose far end is up is also this kernel's stand-in for a `dummy` interface (the
/// `dummy` module is missing here): it has carrier and holds addresses like any NIC.
#[track_caller]
pub fn veth(a: &Netns, a_link: &str, b: &Netns, b_link: &str) {
    check_link_name(a_link);
    check_link_name(b_link);
    a.ip(&[
        "link", "add", "name", a_link, "type", "veth", "peer", "name", b_link, "netns", &b.name,
    ]);
}

/// A link's index, flags and operational state, as `ip link` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    /// The flags between `<` and `>`, e.g. `BROADCAST`, `UP`, `LOWER_UP`, `NO-CARRIER`.
    pub flags: Vec<String>,
    /// The operational state (RFC 2863): `UP`, `DOWN`, `UNKNOWN`, ...
    pub operstate: String,
}

impl LinkState {
    /// `IFF_UP`: set up by the administrator.
    pub fn admin_up(&self) -> bool {
        self.flags.iter().any(|flag| flag == "UP")
    }

    /// `IFF_LOWER_UP`: the link has carrier.
    pub fn carrier(&self) -> bool {
        self.flags.iter().any(|flag| flag == "LOWER_UP")
    }

    /// Parses one line of `ip -o link show`, e.g.
    /// `4: eth0@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP ...`.
    fn parse(line: &str) -> Option<LinkState> {
        let (index, rest) = line.split_once(':')?;
        let (_, rest) = rest.split_once('<')?;
        let (flags, rest) = rest.split_once('>')?;
        let (_, after_state) = rest.split_once(" state ")?;
        Some(LinkState {
            index: index.trim().parse().ok()?,
            flags: flags.split(',').map(str::to_string).collect(),
            operstate: after_state.split_whitespace().next()?.to_string(),
        })
    }
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "index {} <{}> state {}",
            self.index,
            self.flags.join(","),
            self.operstate
        )
    }
}

/// Deletes the namespaces this harness created in processes that no longer exist: a test
/// process killed outright (SIGKILL, a CI timeout) never runs its guards. Only names of the
/// form `tt-<tag>-<pid>-<n>` whose pid is gone are touched, so namespaces of running tests
/// (here or in another process) and anyone else's are left alone. [`Netns::new`] does this
/// once per process.
pub fn sweep_orphans() {
    let _changing = lock_namespace_changes();
    sweep_orphans_locked();
}

fn sweep_orphans_locked() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if pid == process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        eprintln!("note: deleting netns {name}, left behind by test process {pid}, now gone");
        match Exec::new("ip")
            .args(["netns", "del", name.as_str()])
            .try_run_here()
        {
            Ok(output) if output.success() => {}
            Ok(output) => eprintln!("warning: could not delete netns {name}: {output}"),
            Err(timed_out) => eprintln!("warning: could not delete netns {name}: {timed_out}"),
        }
    }
}

/// The pid in a name [`Netns::new`] made (`tt-<tag>-<pid>-<n>`), or `None` for any other
/// name.
fn owner_pid(name: &str) -> Option<u32> {
    let mut parts = name.strip_prefix("tt-")?.rsplitn(3, '-');
    let counter = parts.next()?;
    let pid = parts.next()?;
    parts.next()?;
    counter.parse::<u32>().ok()?;
    pid.parse().ok()
}

#[track_caller]
fn check_link_name(name: &str) {
    assert!(
        !name.is_empty() && name.len() <= MAX_LINK_NAME_LEN,
        "link name {name:?} must be 1 to {MAX_LINK_NAME_LEN} bytes"
    );
}

#[track_caller]
fn ip_here(args: &[&str]) -> Output {
    Exec::new("ip")
        .args(args)
        .try_run_here()
        .unwrap_or_else(|timed_out| panic!("{timed_out}"))
}

fn lock_namespace_changes() -> std::sync::MutexGuard<'static, ()> {
    NAMESPACE_CHANGES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_harness_names_have_an_owner() {
        assert_eq!(owner_pid("tt-lab-a-4242-7"), Some(4242));
        assert_eq!(owner_pid("tt--4242-0"), Some(4242));
        assert_eq!(owner_pid("tt-4242-0"), None);
        assert_eq!(owner_pid("tt-lab-x-0"), None);
        assert_eq!(owner_pid("red"), None);
        assert_eq!(owner_pid("ttx-a-1-2"), None);
    }

    #[test]
    fn parses_ip_link_show() {
        let state = LinkState::parse(
            "4: eth0@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP \
             mode DEFAULT group default qlen 1000\\    link/ether 6a:8a:8b:39:0a:84",
        )
        .unwrap();
        assert_eq!(state.index, 4);
        assert!(state.admin_up());
        assert!(state.carrier());
        assert_eq!(state.operstate, "UP");

        let state = LinkState::parse(
            "2: docker0: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state DOWN \
             mode DEFAULT",
        )
        .unwrap();
        assert!(state.admin_up());
        assert!(!state.carrier());
        assert_eq!(state.operstate, "DOWN");
    }
}
