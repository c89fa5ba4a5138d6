//! tortie's own speaker as a test peer: `tortie-bgpd run` with a YAML file rendered from the
//! same [`PeerConfig`] the other daemons take, queried with `tortie-bgpd show … -o json`
//! and driven with `tortie-bgpd announce|withdraw` over its control socket.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::{Announcement, BgpDaemon, Origin, PeerConfig, Route, SessionState, keepalive_for};
use crate::process::{Exec, Process};
use crate::scratch::ScratchDir;
use crate::{Netns, binary, wait_until};

/// How tortie-bgpd logs in tests: sessions and connection attempts in detail, so a failure
/// message shows what the speaker did.
const LOG_FILTER: &str = "info,tortie_bgp=debug";

/// A running tortie-bgpd. Dropping it kills the daemon, then removes its files.
pub struct TortieBgpd {
    // Declared first so the daemon dies before its directory goes.
    process: Process,
    config_path: PathBuf,
    _scratch: ScratchDir,
}

/// One row of `tortie-bgpd show peers -o json`, as far as tests read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    pub address: IpAddr,
    pub state: SessionState,
    /// Seconds since the Unix epoch at the session's last state change.
    pub since: u64,
    /// Why the session last went down; empty if it never did.
    pub info: String,
    pub received: u64,
    pub accepted: u64,
    pub advertised: u64,
}

impl TortieBgpd {
    /// Starts tortie-bgpd in `netns` with `config`, and returns once its control socket
    /// answers.
    #[track_caller]
    pub fn start(netns: &Netns, config: &PeerConfig) -> TortieBgpd {
        TortieBgpd::start_with(netns, config, None)
    }

    /// As [`TortieBgpd::start`], with graceful restart's restart time set to `seconds`
    /// (when `config.graceful_restart`), instead of the 120 s every test peer uses.
    #[track_caller]
    pub fn start_with(netns: &Netns, config: &PeerConfig, restart_time: Option<u16>) -> TortieBgpd {
        TortieBgpd::launch(
            netns,
            config,
            restart_time.unwrap_or(120),
            false,
            LOG_FILTER,
        )
    }

    /// As [`TortieBgpd::start`], as a speaker coming back from a restart with its
    /// forwarding state kept: its graceful restart capability carries the Restart State
    /// and Forwarding State bits (RFC 4724 - Section 3), so peers keep its routes, as
    /// stale, until its End-of-RIB. Needs `config.graceful_restart`.
    #[track_caller]
    pub fn start_restarting(netns: &Netns, config: &PeerConfig) -> TortieBgpd {
        assert!(
            config.graceful_restart,
            "a restarting tortie-bgpd needs graceful_restart in its PeerConfig"
        );
        TortieBgpd::launch(netns, config, 120, true, LOG_FILTER)
    }

    /// As [`TortieBgpd::start`], logging at `info` only: for benchmarks, where the debug
    /// line per best route that [`LOG_FILTER`] enables (a million for a full table) would
    /// cost the daemon time that is not ingest.
    #[track_caller]
    pub fn start_quiet(netns: &Netns, config: &PeerConfig) -> TortieBgpd {
        TortieBgpd::launch(netns, config, 120, false, "info")
    }

    #[track_caller]
    fn launch(
        netns: &Netns,
        config: &PeerConfig,
        restart_time: u16,
        restarting: bool,
        log_filter: &str,
    ) -> TortieBgpd {
        let scratch = ScratchDir::new(&format!("tortie-bgpd-{}", netns.name()));
        let socket = scratch.join("control.sock");
        let config_path = scratch.write(
            "tortie-bgpd.yaml",
            &render(config, &socket, restart_time, restarting),
        );
        let process = Exec::new(binary("tortie-bgpd"))
            .args(["run", "-c"])
            .arg(&config_path)
            .env("RUST_LOG", log_filter)
            .env("NO_COLOR", "1")
            .spawn_in(netns);
        let tortie = TortieBgpd {
            process,
            config_path,
            _scratch: scratch,
        };
        wait_until(
            Duration::from_secs(60),
            "tortie-bgpd answers on its control socket",
            || {
                if tortie.process.has_exited() {
                    panic!(
                        "tortie-bgpd exited at start:\n{}\n--- its configuration ---\n{}",
                        tortie.log(),
                        std::fs::read_to_string(&tortie.config_path).unwrap_or_default()
                    );
                }
                let output = tortie.cli(&["show", "peers", "-o", "json"]);
                match serde_json::from_str::<Value>(&output) {
                    Ok(_) => Ok(()),
                    Err(_) => Err(output),
                }
            },
        );
        tortie
    }

    /// Runs `tortie-bgpd ARGS -c CONFIG` and returns what it printed (or why it could
    /// not run). The control socket is a file, so the client runs in the test's own
    /// namespace.
    pub fn cli(&self, args: &[&str]) -> String {
        let exec = Exec::new(binary("tortie-bgpd"))
            .args(args)
            .arg("-c")
            .arg(&self.config_path)
            .timeout(Duration::from_secs(30));
        match exec.try_run_here() {
            Ok(output) if output.success() => output.stdout,
            Ok(output) => format!("{}{}", output.stdout, output.stderr),
            Err(timed_out) => timed_out,
        }
    }

    /// The peer table, or the reason it could not be read.
    pub fn peers(&self) -> Result<Vec<PeerRow>, String> {
        let output = self.cli(&["show", "peers", "-o", "json"]);
        let rows: Value = serde_json::from_str(&output).map_err(|_| output.clone())?;
        let rows = rows.as_array().ok_or_else(|| output.clone())?;
        Ok(rows.iter().filter_map(parse_peer_row).collect())
    }

    /// The row for `neighbor`, if the daemon answered and has one.
    pub fn peer(&self, neighbor: IpAddr) -> Option<PeerRow> {
        self.peers()
            .ok()?
            .into_iter()
            .find(|row| row.address == neighbor)
    }

    /// Every best route, the daemon's own included (`from` is `None` for those).
    pub fn all_routes(&self) -> Vec<(Route, Option<IpAddr>)> {
        let output = self.cli(&["show", "rib", "-o", "json"]);
        let Ok(Value::Array(rows)) = serde_json::from_str::<Value>(&output) else {
            return Vec::new();
        };
        rows.iter().filter_map(parse_route_row).collect()
    }
}

impl TortieBgpd {
    /// Whether the best route for `prefix` is stale (kept from a gracefully restarting
    /// peer, not yet refreshed); `None` if there is no route or the daemon did not answer.
    pub fn is_stale(&self, prefix: IpNet) -> Option<bool> {
        let output = self.cli(&["show", "rib", "-o", "json"]);
        let Ok(Value::Array(rows)) = serde_json::from_str::<Value>(&output) else {
            return None;
        };
        rows.iter()
            .find(|row| {
                row.get("prefix")
                    .and_then(Value::as_str)
                    .and_then(|p| p.parse::<IpNet>().ok())
                    == Some(prefix)
            })
            .and_then(|row| row.get("stale"))
            .and_then(Value::as_bool)
    }
}

impl BgpDaemon for TortieBgpd {
    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn kind(&self) -> &'static str {
        "tortie-bgpd"
    }

    fn state(&self, neighbor: IpAddr) -> Option<SessionState> {
        self.peer(neighbor).map(|row| row.state)
    }

    fn last_error(&self, neighbor: IpAddr) -> Option<String> {
        self.peer(neighbor)
            .map(|row| row.info)
            .filter(|info| !info.is_empty())
    }

    fn routes(&self) -> Vec<Route> {
        self.all_routes()
            .into_iter()
            .filter(|(_, from)| from.is_some())
            .map(|(route, _)| route)
            .collect()
    }

    fn announce(&self, announcement: &Announcement) {
        let prefix = announcement.prefix.to_string();
        let mut args = vec!["announce".to_string(), prefix.clone()];
        for (asn, value) in &announcement.communities {
            args.extend(["--community".to_string(), format!("{asn}:{value}")]);
        }
        for (global, local1, local2) in &announcement.large_communities {
            args.extend([
                "--large-community".to_string(),
                format!("{global}:{local1}:{local2}"),
            ]);
        }
        if let Some(med) = announcement.med {
            args.extend(["--med".to_string(), med.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.cli(&args);
        assert!(
            output.trim().is_empty(),
            "tortie-bgpd refused to announce {prefix}:\n{output}"
        );
    }

    fn withdraw(&self, prefix: IpNet) {
        let text = prefix.to_string();
        let output = self.cli(&["withdraw", &text]);
        assert!(
            output.trim().is_empty(),
            "tortie-bgpd refused to withdraw {prefix}:\n{output}"
        );
    }

    fn log(&self) -> String {
        format!(
            "{}{}",
            self.process.stdout_so_far(),
            self.process.stderr_so_far()
        )
    }

    fn explain(&self, prefix: IpNet) -> String {
        let rib = self.cli(&["show", "rib"]);
        let wanted = prefix.to_string();
        let lines: Vec<&str> = rib
            .lines()
            .enumerate()
            .filter(|(index, line)| *index == 0 || line.starts_with(&wanted))
            .map(|(_, line)| line)
            .collect();
        format!(
            "{}\n--- peers ---\n{}",
            lines.join("\n"),
            self.cli(&["show", "peers"])
        )
    }
}

/// The YAML configuration for `config`, with the control socket at `socket`.
fn render(
    config: &PeerConfig,
    socket: &std::path::Path,
    restart_time: u16,
    restarting: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "asn: {}", config.asn);
    let _ = writeln!(out, "router_id: {}", config.router_id);
    // One listener: on the IPv6 wildcard (which takes IPv4 connections too) when the
    // speaker has addresses of both families, else on its one address.
    let listen = if config.local_addresses().iter().any(IpAddr::is_ipv6) {
        "\"::\"".to_string()
    } else {
        format!("\"{}\"", config.local_address)
    };
    let _ = writeln!(out, "listen: {listen}");
    let _ = writeln!(out, "port: {}", config.listen_port);
    let _ = writeln!(out, "control_socket: {:?}", socket.display().to_string());
    if let Some(cluster_id) = config.cluster_id {
        let _ = writeln!(out, "cluster_id: {cluster_id}");
    }
    if config.graceful_restart {
        let _ = writeln!(out, "graceful_restart:\n  restart_time: {restart_time}");
        if restarting {
            out.push_str("  restarting: true\n");
        }
    }
    out.push_str("peers:\n");
    for n in &config.neighbors {
        let _ = writeln!(out, "  - address: \"{}\"", n.address);
        let _ = writeln!(out, "    asn: {}", n.asn);
        let _ = writeln!(out, "    port: {}", n.port);
        if n.passive {
            out.push_str("    passive: true\n");
        }
        if let Some(password) = &n.password {
            let _ = writeln!(out, "    password: {password:?}");
        }
        if let Some(hold) = n.hold_time {
            let _ = writeln!(out, "    hold_time: {hold}");
            let _ = writeln!(out, "    keepalive_time: {}", keepalive_for(hold));
        }
        if n.route_reflector_client {
            out.push_str("    route_reflector_client: true\n");
        }
        if let Some(local) = config.local_for(n.address) {
            let _ = writeln!(out, "    local_address: \"{local}\"");
        }
    }
    if !config.originate.is_empty() {
        out.push_str("originate:\n");
    }
    for a in &config.originate {
        let _ = writeln!(out, "  - prefix: \"{}\"", a.prefix);
        let communities: Vec<String> = a
            .communities
            .iter()
            .map(|(asn, value)| format!("\"{asn}:{value}\""))
            .collect();
        let _ = writeln!(out, "    communities: [{}]", communities.join(", "));
        let large: Vec<String> = a
            .large_communities
            .iter()
            .map(|(g, l1, l2)| format!("\"{g}:{l1}:{l2}\""))
            .collect();
        let _ = writeln!(out, "    large_communities: [{}]", large.join(", "));
        if let Some(med) = a.med {
            let _ = writeln!(out, "    med: {med}");
        }
    }
    out
}

fn parse_peer_row(row: &Value) -> Option<PeerRow> {
    let count = |key: &str| row.get(key).and_then(Value::as_u64).unwrap_or(0);
    Some(PeerRow {
        address: row.get("address")?.as_str()?.parse().ok()?,
        state: SessionState::parse(row.get("state")?.as_str()?),
        since: count("since"),
        info: row
            .get("info")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        received: count("received"),
        accepted: count("accepted"),
        advertised: count("advertised"),
    })
}

/// One row of `show rib -o json` as a [`Route`], with the peer it came from.
fn parse_route_row(row: &Value) -> Option<(Route, Option<IpAddr>)> {
    let text = |key: &str| row.get(key).and_then(Value::as_str);
    let strings = |key: &str| -> Vec<&str> {
        row.get(key)
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let number = |key: &str| {
        row.get(key)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let mut route = Route::new(text("prefix")?.parse().ok()?);
    route.next_hop = text("next_hop").and_then(|a| a.parse().ok());
    route.origin = text("origin").and_then(Origin::parse);
    route.as_path = text("as_path")
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    route.med = number("med");
    route.local_pref = number("local_pref");
    route.communities = strings("communities")
        .into_iter()
        .filter_map(|c| {
            let (high, low) = c.split_once(':')?;
            Some((high.parse().ok()?, low.parse().ok()?))
        })
        .collect();
    route.large_communities = strings("large_communities")
        .into_iter()
        .filter_map(|c| {
            let parts: Vec<u32> = c.split(':').filter_map(|p| p.parse().ok()).collect();
            match parts[..] {
                [global, local1, local2] => Some((global, local1, local2)),
                _ => None,
            }
        })
        .collect();
    route.originator_id = text("originator_id").and_then(|a| a.parse().ok());
    route.cluster_list = strings("cluster_list")
        .into_iter()
        .filter_map(|a| a.parse::<Ipv4Addr>().ok())
        .collect();
    let from = match text("from") {
        Some("local") | None => None,
        Some(address) => address.parse().ok(),
    };
    Some((route, from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::Neighbor;

    #[test]
    fn rib_rows_parse_with_their_attributes() {
        let row: Value = serde_json::from_str(
            r#"{"prefix":"198.18.0.0/24","next_hop":"198.51.100.11","as_path":"64502 {64510 64511}",
                "origin":"igp","local_pref":100,"med":5,"communities":["65000:7"],
                "large_communities":["64501:1:2"],"originator_id":"192.0.2.7",
                "cluster_list":["192.0.2.1"],"from":"198.51.100.11","paths":1}"#,
        )
        .expect("literal");
        let (route, from) = parse_route_row(&row).expect("parses");
        assert_eq!(from, Some("198.51.100.11".parse().expect("literal")));
        assert_eq!(route.as_path, [64502, 64510, 64511]);
        assert_eq!(route.origin, Some(Origin::Igp));
        assert_eq!(route.med, Some(5));
        assert_eq!(route.local_pref, Some(100));
        assert_eq!(route.communities, [(65000, 7)]);
        assert_eq!(route.large_communities, [(64501, 1, 2)]);
        assert_eq!(route.originator_id, Some(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(route.cluster_list, [Ipv4Addr::new(192, 0, 2, 1)]);
        let local: Value = serde_json::from_str(
            r#"{"prefix":"2001:db8::/48","as_path":"","origin":"igp","from":"local"}"#,
        )
        .expect("literal");
        assert_eq!(parse_route_row(&local).expect("parses").1, None);
    }

    #[test]
    fn the_configuration_names_every_setting() {
        let config = PeerConfig::new(
            Ipv4Addr::new(192, 0, 2, 1),
            64512,
            "198.51.100.10".parse().expect("literal"),
        )
        .local_address6("2001:db8:100::10".parse().expect("literal"))
        .neighbor(
            Neighbor::new("2001:db8:100::11".parse().expect("literal"), 64513)
                .passive()
                .password("pw")
                .hold_time(9),
        )
        .originate(
            Announcement::new("198.18.0.0/24")
                .community(1, 2)
                .large_community(3, 4, 5)
                .med(6),
        );
        let text = render(&config, std::path::Path::new("/tmp/x.sock"), 120, false);
        for expected in [
            "listen: \"::\"",
            "address: \"2001:db8:100::11\"",
            "passive: true",
            "password: \"pw\"",
            "hold_time: 9",
            "keepalive_time: 3",
            "local_address: \"2001:db8:100::10\"",
            "communities: [\"1:2\"]",
            "large_communities: [\"3:4:5\"]",
            "med: 6",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
    }
}
