//! The files the dataplane writes: the forwarding sysctls and the name of its route protocol
//! for iproute2.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::ROUTE_PROTOCOL;

/// Where iproute2 (6.x) looks for extra protocol names; `ip route` then shows
/// `proto tortie` instead of `proto 75`.
pub const PROTOCOL_NAMES_DIR: &str = "/etc/iproute2/rt_protos.d";

/// The name iproute2 shows for [`ROUTE_PROTOCOL`].
pub const PROTOCOL_NAME: &str = "tortie";

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// IPv6's switch: the kernel forwards IPv6 only when `all` says so (per-interface
/// `forwarding` decides router behaviour, not whether packets are forwarded).
const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Writes `<dir>/tortie.conf` naming protocol 75 `tortie`, unless it already says so.
/// Creates `dir` if needed (Debian ships `/etc/iproute2` but not always `rt_protos.d`).
pub fn write_protocol_name(dir: &Path) -> io::Result<()> {
    let path = dir.join("tortie.conf");
    let contents = format!(
        "# Written by tortie-node: the routes it installs carry this protocol number.\n\
         {ROUTE_PROTOCOL}\t{PROTOCOL_NAME}\n"
    );
    if fs::read_to_string(&path).is_ok_and(|existing| existing == contents) {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    // Written beside and renamed over, so `ip` never reads half a file.
    let partial = dir.join(".tortie.conf.partial");
    fs::write(&partial, contents)?;
    fs::rename(&partial, &path)
}

/// The path [`write_protocol_name`] writes in `dir`.
pub fn protocol_name_path(dir: &Path) -> PathBuf {
    dir.join("tortie.conf")
}

/// Whether IPv4 forwarding is on, in the network namespace of the calling thread.
pub fn ip_forwarding() -> io::Result<bool> {
    Ok(fs::read_to_string(IP_FORWARD)?.trim() == "1")
}

/// A forwarding sysctl of one network namespace, held open: a `/proc/sys/net` file
/// belongs to the namespace of the task that opened it, so the dataplane opens it when it
/// opens its sockets and can then set it from any thread.
#[derive(Debug)]
pub(crate) struct IpForward {
    path: &'static str,
    file: Result<fs::File, String>,
}

impl IpForward {
    /// `net.ipv4.ip_forward`, opened in the calling thread's namespace. A failure (a
    /// read-only `/proc/sys` in an unprivileged container) is kept and reported at each
    /// [`Self::enable`].
    pub(crate) fn ipv4() -> IpForward {
        IpForward::open(IP_FORWARD)
    }

    /// `net.ipv6.conf.all.forwarding`, likewise. Turning it on also makes the kernel ignore
    /// router advertisements on interfaces with `accept_ra=1` (a node whose IPv6 address
    /// or route comes from SLAAC needs `accept_ra=2`, as with Calico); so the dataplane
    /// enables it only when it routes IPv6.
    pub(crate) fn ipv6() -> IpForward {
        IpForward::open(IPV6_FORWARD)
    }

    fn open(path: &'static str) -> IpForward {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|error| format!("cannot open {path} for writing: {error}"));
        IpForward { path, file }
    }

    /// Sets it to 1 unless it is; returns whether it was off.
    pub(crate) fn enable(&self) -> Result<bool, String> {
        use std::os::unix::fs::FileExt;
        let file = self.file.as_ref().map_err(Clone::clone)?;
        let mut current = [0u8; 16];
        let read = file
            .read_at(&mut current, 0)
            .map_err(|error| format!("reading {}: {error}", self.path))?;
        if current[..read].trim_ascii() == b"1" {
            return Ok(false);
        }
        file.write_at(b"1\n", 0)
            .map_err(|error| format!("writing 1 to {}: {error}", self.path))?;
        Ok(true)
    }
}

/// Turns IPv4 forwarding on (`net.ipv4.ip_forward=1`) in the network namespace of the
/// calling thread: `/proc/sys/net` shows the sysctls of the opening task's namespace, and
/// `setns` moves only the calling thread. Returns whether it was off before.
pub fn enable_ip_forwarding() -> io::Result<bool> {
    if ip_forwarding()? {
        return Ok(false);
    }
    fs::write(IP_FORWARD, "1\n")?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_protocol_75_tortie_and_leaves_an_up_to_date_file_alone() {
        let dir = std::env::temp_dir().join(format!("tortie-rt-protos-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        write_protocol_name(&dir).unwrap();
        let path = protocol_name_path(&dir);
        let written = fs::read_to_string(&path).unwrap();
        assert!(
            written.lines().any(|line| line == "75\ttortie"),
            "{written}"
        );
        let modified = fs::metadata(&path).unwrap().modified().unwrap();
        write_protocol_name(&dir).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), modified);
        fs::remove_dir_all(&dir).unwrap();
    }
}
