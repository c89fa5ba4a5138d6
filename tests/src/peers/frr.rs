//! FRR's bgpd as a test peer: started without zebra (`-Z`) and without touching the kernel
//! (`-n`), queried and reconfigured with `vtysh` over its socket directory.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::{Announcement, BgpDaemon, Origin, PeerConfig, Route, SessionState, keepalive_for};
use crate::process::{Exec, Process};
use crate::scratch::ScratchDir;
use crate::{Netns, wait_until};

const BGPD: &str = "/usr/lib/frr/bgpd";

/// A running bgpd. Dropping it kills the daemon, then removes its files.
pub struct Frr {
    process: Process,
    config: PeerConfig,
    scratch: ScratchDir,
}

impl Frr {
    /// Starts bgpd in `netns` with `config`, and waits until vtysh reaches it.
    #[track_caller]
    pub fn start(netns: &Netns, config: &PeerConfig) -> Frr {
        let scratch = ScratchDir::new(&format!("frr-{}", netns.name()));
        let path = scratch.write("bgpd.conf", &render(config));
        let process = Exec::new(BGPD)
            // No zebra, no kernel routes, no privilege dropping, no vty TCP port.
            .args(["-Z", "-n", "-S", "-P", "0"])
            .arg("-p")
            .arg(config.listen_port.to_string())
            .arg("-f")
            .arg(&path)
            .arg("-i")
            .arg(scratch.join("bgpd.pid"))
            .arg("--vty_socket")
            .arg(scratch.path())
            .arg("--log")
            .arg(format!("file:{}", scratch.join("bgpd.log").display()))
            .spawn_in(netns);
        let frr = Frr {
            process,
            config: config.clone(),
            scratch,
        };
        wait_until(Duration::from_secs(60), "bgpd answers vtysh", || {
            if frr.process.has_exited() {
                panic!(
                    "bgpd exited at start:\n{}{}",
                    frr.process.stderr_so_far(),
                    frr.log()
                );
            }
            let output = frr.vtysh(&["show bgp summary json"]);
            if output.trim_start().starts_with('{') {
                Ok(())
            } else {
                Err(output)
            }
        });
        frr
    }

    /// Runs vtysh with each of `commands` as a `-c` line; returns what it printed.
    pub fn vtysh(&self, commands: &[&str]) -> String {
        let mut exec = Exec::new("vtysh")
            .arg("--vty_socket")
            .arg(self.scratch.path())
            .timeout(Duration::from_secs(30));
        for command in commands {
            exec = exec.arg("-c").arg(command);
        }
        match exec.try_run_here() {
            Ok(output) => format!("{}{}", output.stdout, output.stderr),
            Err(timed_out) => timed_out,
        }
    }

    fn json(&self, command: &str) -> Option<Value> {
        serde_json::from_str(&self.vtysh(&[command])).ok()
    }

    fn neighbor_json(&self, neighbor: IpAddr) -> Option<Value> {
        self.json(&format!("show bgp neighbors {neighbor} json"))?
            .get(neighbor.to_string())
            .cloned()
    }

    fn family_words(prefix: &IpNet) -> &'static str {
        match prefix {
            IpNet::V4(_) => "ipv4 unicast",
            IpNet::V6(_) => "ipv6 unicast",
        }
    }
}

impl BgpDaemon for Frr {
    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn kind(&self) -> &'static str {
        "FRR"
    }

    fn state(&self, neighbor: IpAddr) -> Option<SessionState> {
        let peer = self.neighbor_json(neighbor)?;
        peer.get("bgpState")
            .and_then(Value::as_str)
            .map(SessionState::parse)
    }

    fn last_error(&self, neighbor: IpAddr) -> Option<String> {
        let peer = self.neighbor_json(neighbor)?;
        [
            "lastNotificationReason",
            "lastErrorCodeSubcode",
            "lastResetDueTo",
        ]
        .iter()
        .filter_map(|key| peer.get(*key))
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        })
        .reduce(|a, b| format!("{a}; {b}"))
    }

    fn routes(&self) -> Vec<Route> {
        let mut routes = Vec::new();
        for family in ["ipv4 unicast", "ipv6 unicast"] {
            let Some(table) = self.json(&format!("show bgp {family} json")) else {
                continue;
            };
            let Some(prefixes) = table.get("routes").and_then(Value::as_object) else {
                continue;
            };
            for prefix in prefixes.keys() {
                // The table view lacks communities and reflection attributes; the
                // per-prefix view has them all.
                let Some(detail) = self.json(&format!("show bgp {family} {prefix} json")) else {
                    continue;
                };
                routes.extend(parse_best_learned(prefix, &detail));
            }
        }
        routes
    }

    fn announce(&self, announcement: &Announcement) {
        let prefix = announcement.prefix;
        let map = route_map_name(&prefix);
        let mut commands = vec!["configure terminal".to_string()];
        commands.extend(route_map(announcement).lines().map(str::to_string));
        commands.push(format!("router bgp {}", self.config.asn));
        commands.push(format!("address-family {}", Frr::family_words(&prefix)));
        commands.push(format!("network {prefix} route-map {map}"));
        let refs: Vec<&str> = commands.iter().map(String::as_str).collect();
        let output = self.vtysh(&refs);
        assert!(
            !output.contains('%'),
            "bgpd refused to announce {prefix}:\n{output}"
        );
    }

    fn withdraw(&self, prefix: IpNet) {
        let output = self.vtysh(&[
            "configure terminal",
            &format!("router bgp {}", self.config.asn),
            &format!("address-family {}", Frr::family_words(&prefix)),
            &format!("no network {prefix}"),
        ]);
        assert!(
            !output.contains('%'),
            "bgpd refused to withdraw {prefix}:\n{output}"
        );
    }

    fn log(&self) -> String {
        self.scratch.read_lossy("bgpd.log")
    }

    fn explain(&self, prefix: IpNet) -> String {
        let family = Frr::family_words(&prefix);
        self.vtysh(&[
            &format!("show bgp {family} {prefix}"),
            &format!("show bgp {family} summary"),
        ])
    }
}

fn route_map_name(prefix: &IpNet) -> String {
    format!(
        "ANNOUNCE-{}",
        prefix.to_string().replace(['/', ':', '.'], "-")
    )
}

/// A route map setting the announcement's attributes (FRR attaches attributes to a
/// `network` statement through one).
fn route_map(announcement: &Announcement) -> String {
    let mut out = format!(
        "route-map {} permit 10\n",
        route_map_name(&announcement.prefix)
    );
    if !announcement.communities.is_empty() {
        let list: Vec<String> = announcement
            .communities
            .iter()
            .map(|(a, v)| format!("{a}:{v}"))
            .collect();
        let _ = writeln!(out, " set community {}", list.join(" "));
    }
    if !announcement.large_communities.is_empty() {
        let list: Vec<String> = announcement
            .large_communities
            .iter()
            .map(|(g, l1, l2)| format!("{g}:{l1}:{l2}"))
            .collect();
        let _ = writeln!(out, " set large-community {}", list.join(" "));
    }
    if let Some(med) = announcement.med {
        let _ = writeln!(out, " set metric {med}");
    }
    out.push_str("exit\n");
    out
}

fn render(config: &PeerConfig) -> String {
    let mut out = String::new();
    out.push_str("frr defaults traditional\n");
    for a in &config.originate {
        out.push_str(&route_map(a));
    }
    let _ = writeln!(out, "router bgp {}", config.asn);
    let _ = writeln!(out, " bgp router-id {}", config.router_id);
    out.push_str(" no bgp ebgp-requires-policy\n");
    // Without zebra no route is ever "in the RIB": announce networks regardless.
    out.push_str(" no bgp network import-check\n");
    out.push_str(" no bgp default ipv4-unicast\n");
    if config.graceful_restart {
        out.push_str(" bgp graceful-restart\n bgp graceful-restart restart-time 120\n");
    }
    if let Some(cluster_id) = config.cluster_id {
        let _ = writeln!(out, " bgp cluster-id {cluster_id}");
    }
    for n in &config.neighbors {
        let a = n.address;
        let _ = writeln!(out, " neighbor {a} remote-as {}", n.asn);
        if let Some(local) = config.local_for(a) {
            let _ = writeln!(out, " neighbor {a} update-source {local}");
        }
        if n.port != 179 {
            let _ = writeln!(out, " neighbor {a} port {}", n.port);
        }
        if n.passive {
            let _ = writeln!(out, " neighbor {a} passive");
        }
        if let Some(password) = &n.password {
            let _ = writeln!(out, " neighbor {a} password {password}");
        }
        if let Some(hold) = n.hold_time {
            let _ = writeln!(out, " neighbor {a} timers {} {hold}", keepalive_for(hold));
        }
        // Retry soon after a refused connect (the default is 120 s).
        let _ = writeln!(out, " neighbor {a} timers connect 2");
    }
    for (family, v4) in [("ipv4 unicast", true), ("ipv6 unicast", false)] {
        let _ = writeln!(out, " address-family {family}");
        for n in config
            .neighbors
            .iter()
            .filter(|n| n.address.is_ipv4() == v4)
        {
            let _ = writeln!(out, "  neighbor {} activate", n.address);
            if n.route_reflector_client {
                let _ = writeln!(out, "  neighbor {} route-reflector-client", n.address);
            }
        }
        for a in config
            .originate
            .iter()
            .filter(|a| matches!(a.prefix, IpNet::V4(_)) == v4)
        {
            let _ = writeln!(
                out,
                "  network {} route-map {}",
                a.prefix,
                route_map_name(&a.prefix)
            );
        }
        out.push_str(" exit-address-family\n");
    }
    out
}

/// The best path of one prefix's detail view, if it was learned from a neighbor.
fn parse_best_learned(prefix: &str, detail: &Value) -> Option<Route> {
    let paths = detail.get("paths")?.as_array()?;
    let best = paths.iter().find(|p| {
        p.get("bestpath")
            .and_then(|b| b.get("overall"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    })?;
    let peer = best.get("peer")?.get("peerId")?.as_str()?;
    if peer.parse::<IpAddr>().is_err() {
        // "(unspec)": this daemon's own route.
        return None;
    }
    let mut route = Route::new(prefix.parse().ok()?);
    route.origin = best
        .get("origin")
        .and_then(Value::as_str)
        .and_then(Origin::parse);
    route.as_path = best
        .get("aspath")
        .and_then(|a| a.get("segments"))
        .and_then(Value::as_array)
        .map(|segments| {
            segments
                .iter()
                .filter_map(|s| s.get("list").and_then(Value::as_array))
                .flatten()
                .filter_map(Value::as_u64)
                .filter_map(|n| u32::try_from(n).ok())
                .collect()
        })
        .unwrap_or_default();
    route.next_hop = best
        .get("nexthops")
        .and_then(Value::as_array)
        .and_then(|hops| hops.first())
        .and_then(|hop| hop.get("ip"))
        .and_then(Value::as_str)
        .and_then(|ip| ip.parse().ok());
    let number = |key: &str| {
        best.get(key)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    route.med = number("metric");
    route.local_pref = number("locPrf").or_else(|| number("localpref"));
    let list = |key: &str| -> Vec<String> {
        best.get(key)
            .and_then(|c| c.get("list"))
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    route.communities = list("community")
        .iter()
        .filter_map(|c| {
            let (a, v) = c.split_once(':')?;
            Some((a.parse().ok()?, v.parse().ok()?))
        })
        .collect();
    route.large_communities = list("largeCommunity")
        .iter()
        .filter_map(|c| {
            let mut parts = c.split(':').map(|p| p.parse().ok());
            Some((parts.next()??, parts.next()??, parts.next()??))
        })
        .collect();
    route.originator_id = best
        .get("originatorId")
        .and_then(Value::as_str)
        .and_then(|a| a.parse().ok());
    route.cluster_list = list("clusterList")
        .iter()
        .chain(list("cluster").iter())
        .filter_map(|a| a.parse().ok())
        .collect();
    Some(route)
}
