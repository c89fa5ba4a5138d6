//! GoBGP as a test peer: `gobgpd` with a TOML configuration, its gRPC API bound to the
//! namespace's loopback, queried and driven with the `gobgp` CLI run inside the namespace.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::{Announcement, BgpDaemon, Origin, PeerConfig, Route, SessionState, keepalive_for};
use crate::process::{Exec, Process};
use crate::scratch::ScratchDir;
use crate::{Netns, wait_until};

/// API ports handed out per instance, so two gobgpd in one namespace never collide.
static NEXT_API_PORT: AtomicU16 = AtomicU16::new(50051);

/// A running gobgpd. Dropping it kills the daemon, then removes its files.
pub struct GoBgp {
    process: Process,
    netns_name: String,
    api_port: u16,
    _scratch: ScratchDir,
}

impl GoBgp {
    /// Starts gobgpd in `netns` with `config`, announces `config.originate`, and returns
    /// once its API answers.
    #[track_caller]
    pub fn start(netns: &Netns, config: &PeerConfig) -> GoBgp {
        let scratch = ScratchDir::new(&format!("gobgp-{}", netns.name()));
        let path = scratch.write("gobgpd.toml", &render(config));
        let api_port = NEXT_API_PORT.fetch_add(1, Ordering::Relaxed);
        let process = Exec::new("gobgpd")
            .arg("-f")
            .arg(&path)
            .args(["-t", "toml", "-l", "info", "--log-plain"])
            .arg("--api-hosts")
            .arg(format!("127.0.0.1:{api_port}"))
            .spawn_in(netns);
        let gobgp = GoBgp {
            process,
            netns_name: netns.name().to_string(),
            api_port,
            _scratch: scratch,
        };
        wait_until(Duration::from_secs(60), "gobgpd answers on its API", || {
            if gobgp.process.has_exited() {
                panic!("gobgpd exited at start:\n{}", gobgp.log());
            }
            let output = gobgp.gobgp(&["global"]);
            if output.contains("AS:") {
                Ok(())
            } else {
                Err(output)
            }
        });
        for announcement in &config.originate {
            gobgp.announce(announcement);
        }
        gobgp
    }

    /// Runs the `gobgp` CLI against this daemon with `args`; returns what it printed.
    pub fn gobgp(&self, args: &[&str]) -> String {
        let port = self.api_port.to_string();
        // The API listens on the namespace's loopback, so the CLI runs in the namespace.
        let exec = Exec::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns_name,
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
            ])
            .arg(&port)
            .args(args)
            .timeout(Duration::from_secs(30));
        match exec.try_run_here() {
            Ok(output) => format!("{}{}", output.stdout, output.stderr),
            Err(timed_out) => timed_out,
        }
    }

    fn neighbor_json(&self, neighbor: IpAddr) -> Option<Value> {
        let all: Value = serde_json::from_str(&self.gobgp(&["neighbor", "-j"])).ok()?;
        all.as_array()?
            .iter()
            .find(|n| {
                n.get("conf")
                    .and_then(|c| c.get("neighbor_address"))
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    == Some(neighbor)
            })
            .cloned()
    }

    fn family_flag(prefix: &IpNet) -> &'static str {
        match prefix {
            IpNet::V4(_) => "ipv4",
            IpNet::V6(_) => "ipv6",
        }
    }
}

impl BgpDaemon for GoBgp {
    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn kind(&self) -> &'static str {
        "GoBGP"
    }

    fn state(&self, neighbor: IpAddr) -> Option<SessionState> {
        let peer = self.neighbor_json(neighbor)?;
        // GoBGP's API numbers the states in RFC 4271 order, Idle = 1.
        let code = peer.get("state")?.get("session_state")?.as_u64()?;
        Some(match code {
            1 => SessionState::Idle,
            2 => SessionState::Connect,
            3 => SessionState::Active,
            4 => SessionState::OpenSent,
            5 => SessionState::OpenConfirm,
            6 => SessionState::Established,
            other => SessionState::Other(format!("session_state {other}")),
        })
    }

    fn last_error(&self, _neighbor: IpAddr) -> Option<String> {
        // GoBGP's API keeps no last error per neighbor; its log has the NOTIFICATIONs.
        None
    }

    fn routes(&self) -> Vec<Route> {
        let mut routes = Vec::new();
        for family in ["ipv4", "ipv6"] {
            let output = self.gobgp(&["global", "rib", "-a", family, "-j"]);
            let Ok(table) = serde_json::from_str::<Value>(&output) else {
                continue;
            };
            let Some(prefixes) = table.as_object() else {
                continue;
            };
            for (prefix, paths) in prefixes {
                routes.extend(parse_best_learned(prefix, paths));
            }
        }
        routes
    }

    fn announce(&self, announcement: &Announcement) {
        let prefix = announcement.prefix.to_string();
        let mut args = vec!["global", "rib", "add", "-a"];
        args.push(GoBgp::family_flag(&announcement.prefix));
        args.push(&prefix);
        let communities: Vec<String> = announcement
            .communities
            .iter()
            .map(|(a, v)| format!("{a}:{v}"))
            .collect();
        let communities = communities.join(",");
        if !communities.is_empty() {
            args.extend(["community", &communities]);
        }
        let large: Vec<String> = announcement
            .large_communities
            .iter()
            .map(|(g, l1, l2)| format!("{g}:{l1}:{l2}"))
            .collect();
        let large = large.join(",");
        if !large.is_empty() {
            args.extend(["large-community", &large]);
        }
        let med = announcement.med.map(|m| m.to_string());
        if let Some(med) = &med {
            args.extend(["med", med]);
        }
        let output = self.gobgp(&args);
        assert!(
            output.trim().is_empty(),
            "gobgp refused to announce {prefix}:\n{output}"
        );
    }

    fn withdraw(&self, prefix: IpNet) {
        let text = prefix.to_string();
        let output = self.gobgp(&[
            "global",
            "rib",
            "del",
            "-a",
            GoBgp::family_flag(&prefix),
            &text,
        ]);
        assert!(
            output.trim().is_empty(),
            "gobgp refused to withdraw {prefix}:\n{output}"
        );
    }

    fn explain(&self, prefix: IpNet) -> String {
        let text = prefix.to_string();
        self.gobgp(&["global", "rib", "-a", GoBgp::family_flag(&prefix), &text])
    }

    fn log(&self) -> String {
        format!(
            "{}{}",
            self.process.stdout_so_far(),
            self.process.stderr_so_far()
        )
    }
}

fn render(config: &PeerConfig) -> String {
    let mut out = String::new();
    out.push_str("[global.config]\n");
    let _ = writeln!(out, "  as = {}", config.asn);
    let _ = writeln!(out, "  router-id = \"{}\"", config.router_id);
    let _ = writeln!(out, "  port = {}", config.listen_port);
    let locals: Vec<String> = config
        .local_addresses()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    let _ = writeln!(out, "  local-address-list = [{}]", locals.join(", "));
    for n in &config.neighbors {
        out.push_str("\n[[neighbors]]\n  [neighbors.config]\n");
        let _ = writeln!(out, "    neighbor-address = \"{}\"", n.address);
        let _ = writeln!(out, "    peer-as = {}", n.asn);
        if let Some(password) = &n.password {
            let _ = writeln!(out, "    auth-password = \"{password}\"");
        }
        out.push_str("  [neighbors.timers.config]\n    connect-retry = 2\n");
        if let Some(hold) = n.hold_time {
            let _ = writeln!(out, "    hold-time = {hold}");
            let _ = writeln!(out, "    keepalive-interval = {}", keepalive_for(hold));
        }
        out.push_str("  [neighbors.transport.config]\n");
        if let Some(local) = config.local_for(n.address) {
            let _ = writeln!(out, "    local-address = \"{local}\"");
        }
        if n.port != 179 {
            let _ = writeln!(out, "    remote-port = {}", n.port);
        }
        if n.passive {
            out.push_str("    passive-mode = true\n");
        }
        if n.route_reflector_client {
            out.push_str("  [neighbors.route-reflector.config]\n");
            out.push_str("    route-reflector-client = true\n");
            if let Some(cluster_id) = config.cluster_id {
                let _ = writeln!(out, "    route-reflector-cluster-id = \"{cluster_id}\"");
            }
        }
        if config.graceful_restart {
            out.push_str("  [neighbors.graceful-restart.config]\n");
            out.push_str("    enabled = true\n    restart-time = 120\n");
        }
        let family = match n.address {
            IpAddr::V4(_) => "ipv4-unicast",
            IpAddr::V6(_) => "ipv6-unicast",
        };
        out.push_str("  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n");
        let _ = writeln!(out, "      afi-safi-name = \"{family}\"");
        if config.graceful_restart {
            out.push_str("    [neighbors.afi-safis.mp-graceful-restart.config]\n");
            out.push_str("      enabled = true\n");
        }
    }
    out
}

/// The best path among `paths` (GoBGP's JSON for one prefix), if learned from a neighbor.
fn parse_best_learned(prefix: &str, paths: &Value) -> Option<Route> {
    let best = paths
        .as_array()?
        .iter()
        .find(|p| p.get("best").and_then(Value::as_bool).unwrap_or(false))?;
    // Locally originated paths carry no neighbor address.
    let neighbor = best.get("neighbor-ip").and_then(Value::as_str)?;
    if neighbor
        .parse::<IpAddr>()
        .map_or(true, |a| a.is_unspecified())
    {
        return None;
    }
    let mut route = Route::new(prefix.parse().ok()?);
    for attribute in best.get("attrs")?.as_array()? {
        let number = |key: &str| {
            attribute
                .get(key)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        let address = |key: &str| {
            attribute
                .get(key)
                .and_then(Value::as_str)
                .and_then(|a| a.parse().ok())
        };
        // RFC 4271 §5 / RFC 4456 / RFC 8092 attribute type codes.
        match attribute.get("type").and_then(Value::as_u64) {
            Some(1) => route.origin = number("value").and_then(|o| Origin::parse(&o.to_string())),
            Some(2) => {
                route.as_path = attribute
                    .get("as_paths")
                    .and_then(Value::as_array)
                    .map(|segments| {
                        segments
                            .iter()
                            .filter_map(|s| s.get("asns").and_then(Value::as_array))
                            .flatten()
                            .filter_map(Value::as_u64)
                            .filter_map(|n| u32::try_from(n).ok())
                            .collect()
                    })
                    .unwrap_or_default()
            }
            Some(3) | Some(14) => {
                if let Some(next_hop) = address("nexthop") {
                    route.next_hop = Some(next_hop);
                }
            }
            Some(4) => route.med = number("metric"),
            Some(5) => route.local_pref = number("value"),
            Some(8) => {
                route.communities = attribute
                    .get("communities")
                    .and_then(Value::as_array)
                    .map(|list| {
                        list.iter()
                            .filter_map(Value::as_u64)
                            .map(|c| ((c >> 16) as u16, (c & 0xffff) as u16))
                            .collect()
                    })
                    .unwrap_or_default()
            }
            Some(9) => {
                route.originator_id = attribute
                    .get("value")
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse().ok())
            }
            Some(10) => {
                route.cluster_list = attribute
                    .get("value")
                    .and_then(Value::as_array)
                    .map(|list| {
                        list.iter()
                            .filter_map(Value::as_str)
                            .filter_map(|a| a.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default()
            }
            Some(32) => {
                route.large_communities = attribute
                    .get("value")
                    .and_then(Value::as_array)
                    .map(|list| {
                        list.iter()
                            .filter_map(|c| {
                                let field = |k: &str| {
                                    c.get(k)
                                        .and_then(Value::as_u64)
                                        .and_then(|n| u32::try_from(n).ok())
                                };
                                Some((field("ASN")?, field("LocalData1")?, field("LocalData2")?))
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            }
            _ => {}
        }
    }
    Some(route)
}
