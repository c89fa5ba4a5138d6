//! BIRD 2 as a test peer: `bird -f` in the namespace, queried with `birdc` over its socket.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use ipnet::IpNet;

use super::{Announcement, BgpDaemon, Origin, PeerConfig, Route, SessionState, keepalive_for};
use crate::process::{Exec, Process};
use crate::scratch::ScratchDir;
use crate::{Netns, wait_until};

/// A running BIRD. Dropping it kills the daemon, then removes its files.
pub struct Bird {
    // Declared first so the daemon dies before its directory goes.
    process: Process,
    config: PeerConfig,
    originated: Mutex<Vec<Announcement>>,
    scratch: ScratchDir,
}

impl Bird {
    /// Starts BIRD in `netns` with `config`, and waits until its control socket answers.
    #[track_caller]
    pub fn start(netns: &Netns, config: &PeerConfig) -> Bird {
        let scratch = ScratchDir::new(&format!("bird-{}", netns.name()));
        let path = scratch.write("bird.conf", &render(config, &config.originate, &scratch));
        let socket = scratch.join("bird.ctl");
        let process = Exec::new("bird")
            .arg("-f")
            .arg("-c")
            .arg(&path)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(scratch.join("bird.pid"))
            .spawn_in(netns);
        let bird = Bird {
            process,
            config: config.clone(),
            originated: Mutex::new(config.originate.clone()),
            scratch,
        };
        wait_until(
            Duration::from_secs(60),
            "BIRD answers on its control socket",
            || {
                if bird.process.has_exited() {
                    panic!(
                        "BIRD exited at start:\n{}{}",
                        bird.process.stderr_so_far(),
                        bird.log()
                    );
                }
                let output = bird.birdc(&["show", "status"]);
                if output.contains("Daemon is up and running") {
                    Ok(())
                } else {
                    Err(output)
                }
            },
        );
        bird
    }

    /// Runs `birdc` with `args` and returns what it printed (or why it could not run).
    pub fn birdc(&self, args: &[&str]) -> String {
        let socket = self.scratch.join("bird.ctl");
        match Exec::new("birdc")
            .arg("-s")
            .arg(&socket)
            .args(args)
            .timeout(Duration::from_secs(30))
            .try_run_here()
        {
            Ok(output) => format!("{}{}", output.stdout, output.stderr),
            Err(timed_out) => timed_out,
        }
    }

    fn protocol_of(&self, neighbor: IpAddr) -> Option<String> {
        self.config
            .neighbors
            .iter()
            .position(|n| n.address == neighbor)
            .map(|index| format!("n{index}"))
    }

    fn reconfigure(&self, originated: &[Announcement]) {
        self.scratch.write(
            "bird.conf",
            &render(&self.config, originated, &self.scratch),
        );
        let output = self.birdc(&["configure"]);
        assert!(
            output.contains("Reconfigured") || output.contains("Reconfiguration in progress"),
            "BIRD refused its new configuration:\n{output}"
        );
    }
}

impl BgpDaemon for Bird {
    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn kind(&self) -> &'static str {
        "BIRD"
    }

    fn state(&self, neighbor: IpAddr) -> Option<SessionState> {
        let protocol = self.protocol_of(neighbor)?;
        let output = self.birdc(&["show", "protocols", "all", &protocol]);
        field(&output, "BGP state:").map(|state| SessionState::parse(&state))
    }

    fn last_error(&self, neighbor: IpAddr) -> Option<String> {
        let protocol = self.protocol_of(neighbor)?;
        field(
            &self.birdc(&["show", "protocols", "all", &protocol]),
            "Last error:",
        )
    }

    fn routes(&self) -> Vec<Route> {
        parse_routes(&self.birdc(&[
            "show", "route", "where", "source", "=", "RTS_BGP", "primary", "all",
        ]))
    }

    fn announce(&self, announcement: &Announcement) {
        let mut originated = self.originated.lock().unwrap_or_else(|e| e.into_inner());
        originated.retain(|a| a.prefix != announcement.prefix);
        originated.push(announcement.clone());
        self.reconfigure(&originated);
    }

    fn withdraw(&self, prefix: IpNet) {
        let mut originated = self.originated.lock().unwrap_or_else(|e| e.into_inner());
        originated.retain(|a| a.prefix != prefix);
        self.reconfigure(&originated);
    }

    fn log(&self) -> String {
        self.scratch.read_lossy("bird.log")
    }

    fn explain(&self, prefix: IpNet) -> String {
        self.birdc(&["show", "route", "for", &prefix.to_string(), "all"])
    }
}

/// The first line starting (after indentation) with `label`, without it.
fn field(output: &str, label: &str) -> Option<String> {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|value| value.trim().to_string())
}

fn render(config: &PeerConfig, originated: &[Announcement], scratch: &ScratchDir) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "log \"{}\" all;", scratch.join("bird.log").display());
    let _ = writeln!(out, "router id {};", config.router_id);
    let _ = writeln!(out, "protocol device {{ }}");
    for (name, v4) in [("static4", true), ("static6", false)] {
        let _ = writeln!(out, "protocol static {name} {{");
        let _ = writeln!(out, "  {};", if v4 { "ipv4" } else { "ipv6" });
        for a in originated
            .iter()
            .filter(|a| matches!(a.prefix, IpNet::V4(_)) == v4)
        {
            let mut attributes = String::new();
            for (asn, value) in &a.communities {
                let _ = write!(attributes, " bgp_community.add(({asn},{value}));");
            }
            for (g, l1, l2) in &a.large_communities {
                let _ = write!(attributes, " bgp_large_community.add(({g},{l1},{l2}));");
            }
            if let Some(med) = a.med {
                let _ = write!(attributes, " bgp_med = {med};");
            }
            let _ = writeln!(out, "  route {} blackhole {{{attributes} }};", a.prefix);
        }
        let _ = writeln!(out, "}}");
    }
    for (index, n) in config.neighbors.iter().enumerate() {
        let internal = n.asn == config.asn;
        let _ = writeln!(out, "protocol bgp n{index} {{");
        let local = config
            .local_for(n.address)
            .map(|a| format!("{a} "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  local {local}port {} as {};",
            config.listen_port, config.asn
        );
        let _ = writeln!(
            out,
            "  neighbor {} port {} as {};",
            n.address, n.port, n.asn
        );
        // BIRD takes iBGP neighbors as multihop unless told otherwise; test peers share
        // the LAN, and `gateway direct` below needs a direct session.
        if internal {
            let _ = writeln!(out, "  direct;");
        }
        // Retry soon after a refused connect or an error, so tests do not wait out BIRD's
        // defaults (120 s connect retry, 60 s error wait).
        let _ = writeln!(out, "  connect retry time 2;");
        let _ = writeln!(out, "  error wait time 1, 5;");
        if n.passive {
            let _ = writeln!(out, "  passive on;");
        }
        if let Some(password) = &n.password {
            let _ = writeln!(out, "  password \"{password}\";");
        }
        if let Some(hold) = n.hold_time {
            let _ = writeln!(out, "  hold time {hold};");
            let _ = writeln!(out, "  keepalive time {};", keepalive_for(hold));
        }
        if n.route_reflector_client {
            let _ = writeln!(out, "  rr client;");
        }
        if let Some(cluster_id) = config.cluster_id {
            let _ = writeln!(out, "  rr cluster id {cluster_id};");
        }
        if config.graceful_restart {
            let _ = writeln!(out, "  graceful restart on;");
            let _ = writeln!(out, "  graceful restart time 120;");
        }
        let channel = match n.address {
            IpAddr::V4(_) => "ipv4",
            IpAddr::V6(_) => "ipv6",
        };
        // Test peers are directly connected; iBGP next hops then resolve on the link
        // without an IGP.
        let gateway = if internal { " gateway direct;" } else { "" };
        let _ = writeln!(out, "  {channel} {{ import all; export all;{gateway} }};");
        let _ = writeln!(out, "}}");
    }
    out
}

/// Parses `show route ... all` output: a header line per route, then indented attributes.
fn parse_routes(output: &str) -> Vec<Route> {
    let mut routes = Vec::new();
    let mut current: Option<Route> = None;
    for line in output.lines() {
        if line.is_empty() || line.starts_with("BIRD ") || line.starts_with("Table ") {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            routes.extend(current.take());
            let prefix = line.split_whitespace().next().and_then(|p| p.parse().ok());
            current = prefix.map(Route::new);
            continue;
        }
        let Some(route) = current.as_mut() else {
            continue;
        };
        let Some((name, value)) = line.trim().split_once(": ") else {
            continue;
        };
        let numbers = || -> Vec<u32> {
            value
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .filter_map(|s| s.parse().ok())
                .collect()
        };
        match name {
            "BGP.origin" => route.origin = Origin::parse(value),
            "BGP.as_path" => route.as_path = numbers(),
            "BGP.next_hop" => {
                route.next_hop = value.split_whitespace().next().and_then(|a| a.parse().ok())
            }
            "BGP.med" => route.med = value.trim().parse().ok(),
            "BGP.local_pref" => route.local_pref = value.trim().parse().ok(),
            "BGP.community" => {
                route.communities = numbers()
                    .chunks_exact(2)
                    .filter_map(|c| Some((u16::try_from(c[0]).ok()?, u16::try_from(c[1]).ok()?)))
                    .collect()
            }
            "BGP.large_community" => {
                route.large_communities = numbers()
                    .chunks_exact(3)
                    .map(|c| (c[0], c[1], c[2]))
                    .collect()
            }
            "BGP.originator_id" => route.originator_id = value.trim().parse().ok(),
            "BGP.cluster_list" => {
                route.cluster_list = value
                    .split_whitespace()
                    .filter_map(|a| a.parse().ok())
                    .collect()
            }
            _ => {}
        }
    }
    routes.extend(current);
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_with_their_attributes() {
        let output = "BIRD 2.0.12 ready.
Table master4:
198.18.0.0/24        unicast [n0 13:01:59.666] * (100) [AS64502i]
\tvia 198.51.100.2 on e1
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 64502 64510
\tBGP.next_hop: 198.51.100.2
\tBGP.med: 5
\tBGP.local_pref: 100
\tBGP.community: (65000,7) (65000,8)
\tBGP.large_community: (64501, 1, 2)
\tBGP.originator_id: 192.0.2.7
\tBGP.cluster_list: 192.0.2.1 192.0.2.2

Table master6:
2001:db8:20::/48     unicast [n1 13:01:59.666] * (100) [AS64502i]
\tvia 2001:db8:1::2 on e1
\tBGP.origin: Incomplete
\tBGP.as_path: 64502
\tBGP.next_hop: 2001:db8:1::2 fe80::1
";
        let routes = parse_routes(output);
        assert_eq!(routes.len(), 2, "{routes:?}");
        let r = &routes[0];
        assert_eq!(r.prefix.to_string(), "198.18.0.0/24");
        assert_eq!(r.origin, Some(Origin::Igp));
        assert_eq!(r.as_path, [64502, 64510]);
        assert_eq!(r.next_hop, Some("198.51.100.2".parse().unwrap()));
        assert_eq!(r.med, Some(5));
        assert_eq!(r.local_pref, Some(100));
        assert_eq!(r.communities, [(65000, 7), (65000, 8)]);
        assert_eq!(r.large_communities, [(64501, 1, 2)]);
        assert_eq!(r.originator_id, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(r.cluster_list.len(), 2);
        let r = &routes[1];
        assert_eq!(r.next_hop, Some("2001:db8:1::2".parse().unwrap()));
        assert_eq!(r.origin, Some(Origin::Incomplete));
    }
}
