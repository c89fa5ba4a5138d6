//! TCP throughput between two namespaces with iperf3: a one-shot server in one, the client
//! in the other, the result read from the client's JSON report.

use std::time::Duration;

use crate::{Exec, Netns, run_in, wait_until};

/// iperf3's default port; each measurement has namespaces of its own, so no clash.
const PORT: u16 = 5201;

/// How long the server may take to listen (generous: the machine may be compiling).
const LISTEN_WAIT: Duration = Duration::from_secs(30);

/// Sends TCP from `client` to `server_address` (an address of `server`) for `seconds` and
/// returns what the server received, in bits per second. Panics, with iperf3's output,
/// when the transfer fails.
#[track_caller]
pub fn throughput(server: &Netns, server_address: &str, client: &Netns, seconds: u32) -> f64 {
    let port = PORT.to_string();
    // `-1`: the server serves this one client and exits, so nothing lingers between runs.
    let listener = Exec::new("iperf3")
        .args(["-s", "-1", "-J", "-B", server_address, "-p", &port])
        .spawn_in(server);
    wait_listening(server, server_address, PORT);
    let client_run = Exec::new("iperf3")
        .args([
            "-c",
            server_address,
            "-p",
            &port,
            "-t",
            &seconds.to_string(),
            "-J",
        ])
        .timeout(Duration::from_secs(u64::from(seconds) + 60))
        .run_in(client);
    let report: serde_json::Value = serde_json::from_str(&client_run.stdout)
        .unwrap_or_else(|e| panic!("iperf3's report does not parse ({e}): {client_run}"));
    let received = report["end"]["sum_received"]["bits_per_second"].as_f64();
    match received {
        Some(bits) if client_run.success() => {
            // The server ends by itself once its one client is done.
            listener.wait(Duration::from_secs(30));
            bits
        }
        _ => panic!(
            "iperf3 {} -> {server_address} failed: {}; server: {}",
            client.name(),
            report["error"],
            listener.stderr_so_far()
        ),
    }
}

/// Waits until a TCP socket listens on `address:port` in `netns` (`ss -ltn`).
#[track_caller]
fn wait_listening(netns: &Netns, address: &str, port: u16) {
    let local = format!("{address}:{port}");
    wait_until(
        LISTEN_WAIT,
        &format!("iperf3 listens on {local} in {}", netns.name()),
        || {
            let sockets = run_in(netns, "ss", ["-ltnH"], &[]);
            let listening = sockets
                .stdout
                .lines()
                .any(|line| line.split_whitespace().any(|field| field == local));
            if listening { Ok(()) } else { Err(sockets) }
        },
    );
}

/// The MTU of `link` in `netns`, from `ip -o link show`.
#[track_caller]
pub fn link_mtu(netns: &Netns, link: &str) -> u32 {
    let output = run_in(netns, "ip", ["-o", "link", "show", "dev", link], &[]).expect_success();
    let mut fields = output.stdout.split_whitespace();
    fields
        .by_ref()
        .find(|field| *field == "mtu")
        .and_then(|_| fields.next())
        .and_then(|mtu| mtu.parse().ok())
        .unwrap_or_else(|| panic!("no MTU for {link} in {}: {}", netns.name(), output.stdout))
}
