//! Real BGP daemons from Debian's packages — BIRD 2, FRR's bgpd and GoBGP — run inside test
//! namespaces as peers for tortie's speaker, each behind one small interface, and tortie's
//! own `tortie-bgpd` behind the same one.
//!
//! Every daemon is started from a [`PeerConfig`] (one shape for all three, rendered into
//! each one's own configuration language), runs in the foreground under a [`Process`] guard
//! with its files in a [`ScratchDir`], listens and talks only on the namespace's addresses,
//! and is queried through its own CLI (`birdc`, `vtysh`, `gobgp`) over a socket inside the
//! scratch directory or the namespace's loopback. Dropping the guard kills it.
//!
//! What the tests ask of a peer is the same whichever daemon it is: the state of a session
//! ([`BgpDaemon::state`]), the routes it learned with their attributes
//! ([`BgpDaemon::routes`]), and to announce or withdraw a prefix.
//!
//! [`Process`]: crate::Process
//! [`ScratchDir`]: crate::ScratchDir

mod bird;
mod frr;
mod gobgp;
mod tortie;

pub use bird::Bird;
pub use frr::Frr;
pub use gobgp::GoBgp;
pub use tortie::{PeerRow, TortieBgpd};

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;

use crate::wait_until;

/// How long a session between two peers on one machine may take to come up. Generous:
/// the first connect attempt may have been refused while the other side was starting, and
/// BIRD retries after its connect-retry timer (5 s at the shortest we set).
pub const ESTABLISH_WITHIN: Duration = Duration::from_secs(90);

/// One BGP speaker's configuration, the same for every daemon.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    /// The address to listen on and to source sessions from (the namespace's own).
    pub local_address: IpAddr,
    /// The other family's address to source sessions of that family from, if any.
    pub local_address6: Option<IpAddr>,
    /// The TCP port to listen on.
    pub listen_port: u16,
    pub neighbors: Vec<Neighbor>,
    /// Prefixes announced from the start.
    pub originate: Vec<Announcement>,
    /// Speak graceful restart (RFC 4724), restart time 120 s.
    pub graceful_restart: bool,
    /// Route reflector cluster id, when this speaker reflects for clients.
    pub cluster_id: Option<Ipv4Addr>,
}

impl PeerConfig {
    /// A speaker with no neighbors and nothing to announce yet.
    pub fn new(router_id: Ipv4Addr, asn: u32, local_address: IpAddr) -> PeerConfig {
        PeerConfig {
            router_id,
            asn,
            local_address,
            local_address6: None,
            listen_port: 179,
            neighbors: Vec::new(),
            originate: Vec::new(),
            graceful_restart: false,
            cluster_id: None,
        }
    }

    /// Also source sessions of the other family from `address`.
    pub fn local_address6(mut self, address: IpAddr) -> PeerConfig {
        self.local_address6 = Some(address);
        self
    }

    /// The local address of `neighbor`'s family, if this speaker has one.
    pub fn local_for(&self, neighbor: IpAddr) -> Option<IpAddr> {
        [Some(self.local_address), self.local_address6]
            .into_iter()
            .flatten()
            .find(|local| local.is_ipv4() == neighbor.is_ipv4())
    }

    /// Every local address.
    pub fn local_addresses(&self) -> Vec<IpAddr> {
        [Some(self.local_address), self.local_address6]
            .into_iter()
            .flatten()
            .collect()
    }

    pub fn neighbor(mut self, neighbor: Neighbor) -> PeerConfig {
        self.neighbors.push(neighbor);
        self
    }

    pub fn originate(mut self, announcement: Announcement) -> PeerConfig {
        self.originate.push(announcement);
        self
    }
}

/// A session to configure: the far end's address and AS, and how to talk to it.
#[derive(Debug, Clone)]
pub struct Neighbor {
    pub address: IpAddr,
    pub asn: u32,
    /// The far end's TCP port.
    pub port: u16,
    /// Only accept connections; never dial.
    pub passive: bool,
    /// TCP MD5 signature password (RFC 2385).
    pub password: Option<String>,
    /// Hold time to offer, in seconds (keepalive a third of it).
    pub hold_time: Option<u16>,
    pub route_reflector_client: bool,
}

impl Neighbor {
    pub fn new(address: IpAddr, asn: u32) -> Neighbor {
        Neighbor {
            address,
            asn,
            port: 179,
            passive: false,
            password: None,
            hold_time: None,
            route_reflector_client: false,
        }
    }

    pub fn passive(mut self) -> Neighbor {
        self.passive = true;
        self
    }

    pub fn password(mut self, password: &str) -> Neighbor {
        self.password = Some(password.to_string());
        self
    }

    pub fn hold_time(mut self, seconds: u16) -> Neighbor {
        self.hold_time = Some(seconds);
        self
    }

    pub fn port(mut self, port: u16) -> Neighbor {
        self.port = port;
        self
    }

    pub fn route_reflector_client(mut self) -> Neighbor {
        self.route_reflector_client = true;
        self
    }
}

/// A prefix to announce, with the attributes to set on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub prefix: IpNet,
    pub communities: Vec<(u16, u16)>,
    pub large_communities: Vec<(u32, u32, u32)>,
    pub med: Option<u32>,
}

impl Announcement {
    #[track_caller]
    pub fn new(prefix: &str) -> Announcement {
        Announcement {
            prefix: prefix
                .parse()
                .unwrap_or_else(|e| panic!("{prefix:?} is not a prefix: {e}")),
            communities: Vec::new(),
            large_communities: Vec::new(),
            med: None,
        }
    }

    pub fn community(mut self, asn: u16, value: u16) -> Announcement {
        self.communities.push((asn, value));
        self
    }

    pub fn large_community(mut self, global: u32, local1: u32, local2: u32) -> Announcement {
        self.large_communities.push((global, local1, local2));
        self
    }

    pub fn med(mut self, med: u32) -> Announcement {
        self.med = Some(med);
        self
    }
}

/// RFC 4271 §8.2.2's session states, as every daemon reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
    /// Something the daemon said that is none of the above (kept for messages).
    Other(String),
}

impl SessionState {
    /// Reads a state name in any daemon's spelling (`Established`, `ESTABLISHED`,
    /// `OpenSent`, `opensent`, ...).
    pub fn parse(text: &str) -> SessionState {
        match text
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_', ' '], "")
            .as_str()
        {
            "idle" => SessionState::Idle,
            "connect" => SessionState::Connect,
            "active" => SessionState::Active,
            "opensent" => SessionState::OpenSent,
            "openconfirm" => SessionState::OpenConfirm,
            "established" => SessionState::Established,
            _ => SessionState::Other(text.trim().to_string()),
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionState::Other(text) => write!(f, "{text:?}"),
            state => fmt::Debug::fmt(state, f),
        }
    }
}

/// RFC 4271 §5.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

impl Origin {
    fn parse(text: &str) -> Option<Origin> {
        match text.trim().to_ascii_lowercase().as_str() {
            "igp" | "i" | "0" => Some(Origin::Igp),
            "egp" | "e" | "1" => Some(Origin::Egp),
            "incomplete" | "?" | "2" => Some(Origin::Incomplete),
            _ => None,
        }
    }
}

/// A best route a daemon learned from a BGP neighbor, with its attributes as the daemon
/// reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: IpNet,
    pub next_hop: Option<IpAddr>,
    pub origin: Option<Origin>,
    /// The AS numbers of the path in order (sets flattened).
    pub as_path: Vec<u32>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<(u16, u16)>,
    pub large_communities: Vec<(u32, u32, u32)>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
}

impl Route {
    fn new(prefix: IpNet) -> Route {
        Route {
            prefix,
            next_hop: None,
            origin: None,
            as_path: Vec::new(),
            med: None,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            originator_id: None,
            cluster_list: Vec::new(),
        }
    }
}

/// What tests ask of a running BGP daemon.
pub trait BgpDaemon {
    /// The daemon's name for messages: "BIRD", "FRR", "GoBGP".
    fn kind(&self) -> &'static str;

    /// The daemon's process id (the daemon itself, not a wrapper), to signal it: SIGSTOP
    /// makes a peer that stops answering.
    fn pid(&self) -> u32;

    /// The session's state toward `neighbor`, or `None` if the daemon does not report one
    /// (not configured, or its control socket is not up yet).
    fn state(&self, neighbor: IpAddr) -> Option<SessionState>;

    /// The last error the daemon reports for the session toward `neighbor`, if any.
    fn last_error(&self, neighbor: IpAddr) -> Option<String>;

    /// The best routes learned from BGP neighbors (not the daemon's own), both families.
    fn routes(&self) -> Vec<Route>;

    /// Starts announcing `announcement`.
    fn announce(&self, announcement: &Announcement);

    /// Stops announcing `prefix`.
    fn withdraw(&self, prefix: IpNet);

    /// The daemon's log so far, for failure messages.
    fn log(&self) -> String;

    /// Everything the daemon says about `prefix` (every path, not only the best), in its
    /// own words, for failure messages.
    fn explain(&self, prefix: IpNet) -> String;

    /// Waits until the session toward `neighbor` is Established.
    #[track_caller]
    fn wait_established(&self, neighbor: IpAddr) {
        let what = format!("{} has its session to {neighbor} Established", self.kind());
        wait_until(ESTABLISH_WITHIN, &what, || match self.state(neighbor) {
            Some(SessionState::Established) => Ok(()),
            other => Err(format!(
                "state {other:?}, last error {:?}\n--- {} log ---\n{}",
                self.last_error(neighbor),
                self.kind(),
                tail(&self.log(), 30)
            )),
        });
    }

    /// Waits until a learned route for `prefix` satisfies `check`, and returns it.
    #[track_caller]
    fn wait_route(&self, prefix: &str, within: Duration, check: &dyn Fn(&Route) -> bool) -> Route {
        let prefix: IpNet = prefix
            .parse()
            .unwrap_or_else(|e| panic!("{prefix:?} is not a prefix: {e}"));
        let what = format!("{} has a matching route for {prefix}", self.kind());
        wait_until(within, &what, || {
            let routes = self.routes();
            match routes.iter().find(|r| r.prefix == prefix) {
                Some(route) if check(route) => Ok(route.clone()),
                Some(route) => Err(format!(
                    "the best route does not match: {route:?}\n--- {} on {prefix} ---\n{}",
                    self.kind(),
                    self.explain(prefix)
                )),
                None => Err(format!("no route; it has {routes:?}")),
            }
        })
    }

    /// Waits until no learned route for `prefix` remains.
    #[track_caller]
    fn wait_no_route(&self, prefix: &str, within: Duration) {
        let prefix: IpNet = prefix
            .parse()
            .unwrap_or_else(|e| panic!("{prefix:?} is not a prefix: {e}"));
        let what = format!("{} has no route for {prefix}", self.kind());
        wait_until(within, &what, || {
            match self.routes().into_iter().find(|r| r.prefix == prefix) {
                Some(route) => Err(format!("still has {route:?}")),
                None => Ok(()),
            }
        })
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// BIRD and FRR spell a neighbor's hold timer as hold and keepalive; a third is the
/// RFC 4271 §10 suggestion.
fn keepalive_for(hold_time: u16) -> u16 {
    (hold_time / 3).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_in_every_daemons_spelling() {
        assert_eq!(
            SessionState::parse("Established"),
            SessionState::Established
        );
        assert_eq!(
            SessionState::parse("ESTABLISHED"),
            SessionState::Established
        );
        assert_eq!(SessionState::parse("OpenSent"), SessionState::OpenSent);
        assert_eq!(
            SessionState::parse("open_confirm"),
            SessionState::OpenConfirm
        );
        assert_eq!(SessionState::parse(" active "), SessionState::Active);
        assert_eq!(
            SessionState::parse("Clearing"),
            SessionState::Other("Clearing".into())
        );
    }

    #[test]
    fn origins_parse_as_words_letters_and_codes() {
        assert_eq!(Origin::parse("IGP"), Some(Origin::Igp));
        assert_eq!(Origin::parse("incomplete"), Some(Origin::Incomplete));
        assert_eq!(Origin::parse("1"), Some(Origin::Egp));
        assert_eq!(Origin::parse("x"), None);
    }
}
