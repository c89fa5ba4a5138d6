//! Packet captures on a namespace's interface: `tcpdump` with a BPF filter, under a
//! [`Process`] guard, one line per packet, polled while the test sends traffic. What a
//! test proves with it is what crossed the wire (encapsulated or not), so each capture
//! counts the packets its filter matched and shows them on failure.

use std::time::Duration;

use crate::{Exec, Netns, Process, wait_until};

/// A running capture. Dropping it kills `tcpdump`.
pub struct Capture {
    process: Process,
    description: String,
}

impl Capture {
    /// Starts `tcpdump -i <interface> -nn -l <filter>` in `netns` and waits until it is
    /// listening, so that nothing sent afterwards is missed.
    #[track_caller]
    pub fn start(netns: &Netns, interface: &str, filter: &str) -> Capture {
        let process = Exec::new("tcpdump")
            .args(["-i", interface, "-nn", "-l", "-p", filter])
            .spawn_in(netns);
        let capture = Capture {
            process,
            description: format!("tcpdump -i {interface} '{filter}' in {netns}"),
        };
        wait_until(
            Duration::from_secs(60),
            &format!("{} listens", capture.description),
            || {
                let stderr = capture.process.stderr_so_far();
                if stderr.contains("listening on") {
                    Ok(())
                } else if capture.process.has_exited() {
                    panic!("{} exited: {stderr}", capture.description)
                } else {
                    Err(stderr)
                }
            },
        );
        capture
    }

    /// The packets captured so far, one line each.
    pub fn packets(&self) -> Vec<String> {
        self.process
            .stdout_so_far()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Waits until at least `count` packets matched, and returns them.
    #[track_caller]
    pub fn wait_packets(&self, count: usize, within: Duration) -> Vec<String> {
        wait_until(
            within,
            &format!("{} captures {count} packets", self.description),
            || {
                let packets = self.packets();
                if packets.len() >= count {
                    Ok(packets)
                } else {
                    Err(format!("{} so far: {packets:#?}", packets.len()))
                }
            },
        )
    }

    /// Panics, showing what was captured, if any packet matched.
    #[track_caller]
    pub fn assert_none(&self, why: &str) {
        let packets = self.packets();
        assert!(
            packets.is_empty(),
            "{why}: {} captured {} packets: {packets:#?}",
            self.description,
            packets.len()
        );
    }

    pub fn description(&self) -> &str {
        &self.description
    }
}
