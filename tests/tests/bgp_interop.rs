//! tortie-bgpd against real BGP daemons: BIRD 2, FRR's bgpd and GoBGP, each in its own
//! network namespace on a test LAN (the "Tests" section).
//!
//! Every scenario is written once, for "a peer", and run against all three daemons at
//! once, one thread per daemon, each on its own LAN ([`against_every_peer`]); a failure
//! names the daemons it failed against. Timers are short (hold time 9 s where a test waits
//! for it, connect retry 2 s on the peers), and every wait polls with a generous deadline
//! and reports what it saw last; nothing sleeps for a fixed time, and nothing asserts how
//! long something took.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use ipnet::IpNet;
use tortie_tests::peers::{
    Announcement, BgpDaemon, Bird, Frr, GoBgp, Neighbor, Origin, PeerConfig, Route, SessionState,
    TortieBgpd,
};
use tortie_tests::{Lan, Netns, wait_until};

/// How long a route may take to show up or go away once the sessions are up.
const ROUTES_WITHIN: Duration = Duration::from_secs(60);
/// The hold time tests that wait for the hold timer configure on both sides.
const SHORT_HOLD_TIME: u16 = 9;
const TORTIE_AS: u32 = 64512;
const PEER_AS: u32 = 64513;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerKind {
    Bird,
    Frr,
    GoBgp,
}

const EVERY_PEER: [PeerKind; 3] = [PeerKind::Bird, PeerKind::Frr, PeerKind::GoBgp];

impl PeerKind {
    fn tag(self) -> &'static str {
        match self {
            PeerKind::Bird => "bird",
            PeerKind::Frr => "frr",
            PeerKind::GoBgp => "gobgp",
        }
    }

    #[track_caller]
    fn start(self, netns: &Netns, config: &PeerConfig) -> Box<dyn BgpDaemon> {
        match self {
            PeerKind::Bird => Box::new(Bird::start(netns, config)),
            PeerKind::Frr => Box::new(Frr::start(netns, config)),
            PeerKind::GoBgp => Box::new(GoBgp::start(netns, config)),
        }
    }
}

/// Runs `scenario` against every peer daemon in parallel, and fails naming each daemon it
/// failed against (each failure's own message is printed by its thread as it happens).
fn against_every_peer(scenario: fn(PeerKind)) {
    let failed: Vec<PeerKind> = thread::scope(|scope| {
        let running: Vec<_> = EVERY_PEER
            .iter()
            .map(|&kind| {
                let handle = thread::Builder::new()
                    .name(kind.tag().to_string())
                    .spawn_scoped(scope, move || scenario(kind))
                    .expect("a thread per peer starts");
                (kind, handle)
            })
            .collect();
        running
            .into_iter()
            .filter_map(|(kind, handle)| handle.join().is_err().then_some(kind))
            .collect()
    });
    assert!(failed.is_empty(), "failed against {failed:?} (see above)");
}

fn tortie_router_id() -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 1)
}

fn peer_router_id() -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 2)
}

fn prefix(text: &str) -> IpNet {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is not a prefix: {e}"))
}

/// A two-host LAN for a scenario: tortie on host 0, the peer on host 1.
fn lan(scenario: &str, kind: PeerKind) -> Lan {
    Lan::new(&format!("{scenario}-{}", kind.tag()), 2)
}

/// Waits until `tortie`'s session to `neighbor` has a last error containing `wanted`.
#[track_caller]
fn wait_last_error(tortie: &TortieBgpd, neighbor: IpAddr, wanted: &str, within: Duration) {
    let what = format!("tortie-bgpd's peer table shows {wanted:?} for {neighbor}");
    wait_until(within, &what, || match tortie.peer(neighbor) {
        Some(row) if row.info.contains(wanted) => Ok(row),
        other => Err(format!("peer row {other:?}")),
    });
}

/// Waits until the route for `prefix` in `daemon` exists with `as_path`, and returns it.
#[track_caller]
fn wait_route_with_path(daemon: &dyn BgpDaemon, prefix: &str, as_path: &[u32]) -> Route {
    daemon.wait_route(prefix, ROUTES_WITHIN, &|r| r.as_path == as_path)
}

// ---- Sessions, routes and their attributes, withdrawals ----

/// One session per family between tortie (AS 64512) and the peer (AS 64513 for eBGP,
/// 64512 for iBGP). tortie dials the IPv4 session and only listens on the IPv6 one for
/// eBGP, and the other way round for iBGP, so both roles run over both families across
/// the two tests. Routes go both ways with communities, large communities and MED, and
/// arrive with the right AS path, next hop and (iBGP) LOCAL_PREF; withdrawals and later
/// announcements propagate.
fn exchange(kind: PeerKind, internal: bool) {
    let lan = lan(if internal { "ibgp" } else { "ebgp" }, kind);
    let peer_as = if internal { TORTIE_AS } else { PEER_AS };
    let tortie_dials_v4 = !internal;
    let side = |neighbor: Neighbor, passive: bool| {
        if passive {
            neighbor.passive()
        } else {
            neighbor
        }
    };
    let tortie_config = PeerConfig::new(tortie_router_id(), TORTIE_AS, lan.v4(0))
        .local_address6(lan.v6(0))
        .neighbor(side(Neighbor::new(lan.v4(1), peer_as), !tortie_dials_v4))
        .neighbor(side(Neighbor::new(lan.v6(1), peer_as), tortie_dials_v4))
        .originate(
            Announcement::new("198.18.10.0/24")
                .community(64512, 1)
                .large_community(64512, 2, 3)
                .med(10),
        )
        .originate(Announcement::new("2001:db8:a0::/48").community(64512, 6))
        .originate(Announcement::new("198.18.12.0/24"));
    let peer_config = PeerConfig::new(peer_router_id(), peer_as, lan.v4(1))
        .local_address6(lan.v6(1))
        .neighbor(side(Neighbor::new(lan.v4(0), TORTIE_AS), tortie_dials_v4))
        .neighbor(side(Neighbor::new(lan.v6(0), TORTIE_AS), !tortie_dials_v4))
        .originate(
            Announcement::new("198.18.20.0/24")
                .community(65000, 20)
                .large_community(64513, 4, 5)
                .med(20),
        )
        .originate(
            Announcement::new("2001:db8:b0::/48")
                .community(65000, 21)
                .large_community(64513, 6, 7),
        );
    let tortie = TortieBgpd::start(&lan.hosts[0], &tortie_config);
    let peer = kind.start(&lan.hosts[1], &peer_config);
    let peer = peer.as_ref();

    for (tortie_side, peer_side) in [(lan.v4(1), lan.v4(0)), (lan.v6(1), lan.v6(0))] {
        tortie.wait_established(tortie_side);
        peer.wait_established(peer_side);
    }

    // What the peer learned from tortie.
    let path: &[u32] = if internal { &[] } else { &[TORTIE_AS] };
    let local_pref = internal.then_some(100);
    let route = wait_route_with_path(peer, "198.18.10.0/24", path);
    assert_eq!(route.next_hop, Some(lan.v4(0)), "{route:?}");
    assert_eq!(route.origin, Some(Origin::Igp), "{route:?}");
    assert_eq!(route.communities, [(64512, 1)], "{route:?}");
    assert_eq!(route.large_communities, [(64512, 2, 3)], "{route:?}");
    assert_eq!(route.med, Some(10), "{route:?}");
    if internal {
        assert_eq!(route.local_pref, local_pref, "{route:?}");
    }
    let route = wait_route_with_path(peer, "2001:db8:a0::/48", path);
    assert_eq!(route.next_hop, Some(lan.v6(0)), "{route:?}");
    assert_eq!(route.communities, [(64512, 6)], "{route:?}");

    // What tortie learned from the peer.
    let path: &[u32] = if internal { &[] } else { &[PEER_AS] };
    let route = wait_route_with_path(&tortie, "198.18.20.0/24", path);
    assert_eq!(route.next_hop, Some(lan.v4(1)), "{route:?}");
    assert_eq!(route.communities, [(65000, 20)], "{route:?}");
    assert_eq!(route.large_communities, [(64513, 4, 5)], "{route:?}");
    // BIRD 2.0.12 sends this static route (communities, large community and bgp_med
    // set in its config from the start) without MED on eBGP: GoBGP in tortie's place
    // receives none either. On iBGP the MED arrives. (tests/peers.rs sees a MED from
    // BIRD on eBGP for a route with only bgp_med, added by reconfiguration.)
    let med = if kind == PeerKind::Bird && !internal {
        None
    } else {
        Some(20)
    };
    assert_eq!(route.med, med, "{route:?}");
    assert_eq!(route.local_pref, local_pref, "{route:?}");
    let route = wait_route_with_path(&tortie, "2001:db8:b0::/48", path);
    assert_eq!(route.next_hop, Some(lan.v6(1)), "{route:?}");
    assert_eq!(route.communities, [(65000, 21)], "{route:?}");
    assert_eq!(route.large_communities, [(64513, 6, 7)], "{route:?}");
    assert_eq!(route.local_pref, local_pref, "{route:?}");

    // Withdrawals, both ways and both families.
    tortie.withdraw(prefix("198.18.10.0/24"));
    tortie.withdraw(prefix("2001:db8:a0::/48"));
    peer.wait_no_route("198.18.10.0/24", ROUTES_WITHIN);
    peer.wait_no_route("2001:db8:a0::/48", ROUTES_WITHIN);
    peer.withdraw(prefix("198.18.20.0/24"));
    peer.withdraw(prefix("2001:db8:b0::/48"));
    tortie.wait_no_route("198.18.20.0/24", ROUTES_WITHIN);
    tortie.wait_no_route("2001:db8:b0::/48", ROUTES_WITHIN);
    // The withdrawals took only what they named.
    wait_route_with_path(
        peer,
        "198.18.12.0/24",
        if internal { &[] } else { &[TORTIE_AS] },
    );

    // Announcements made while the sessions run, also both ways.
    tortie.announce(
        &Announcement::new("198.18.11.0/24")
            .med(7)
            .community(64512, 9),
    );
    peer.announce(&Announcement::new("2001:db8:b1::/48").community(65000, 22));
    let route = peer.wait_route("198.18.11.0/24", ROUTES_WITHIN, &|r| r.med == Some(7));
    assert_eq!(route.communities, [(64512, 9)], "{route:?}");
    let route = tortie.wait_route("2001:db8:b1::/48", ROUTES_WITHIN, &|r| {
        r.communities == [(65000, 22)]
    });
    assert_eq!(route.next_hop, Some(lan.v6(1)), "{route:?}");
}

#[test]
fn ebgp_sessions_exchange_routes_with_their_attributes() {
    against_every_peer(|kind| exchange(kind, false));
}

#[test]
fn ibgp_sessions_exchange_routes_with_their_attributes() {
    against_every_peer(|kind| exchange(kind, true));
}

// ---- Failure: a peer that stops answering ----

/// The peer is frozen (SIGSTOP): its kernel still holds the TCP session, but no
/// KEEPALIVE comes. tortie's hold timer (9 s) ends the session and takes the peer's
/// routes away, and the peer table says why.
fn silent_peer(kind: PeerKind) {
    let lan = lan("hold", kind);
    let tortie_config = PeerConfig::new(tortie_router_id(), TORTIE_AS, lan.v4(0))
        .neighbor(Neighbor::new(lan.v4(1), PEER_AS).hold_time(SHORT_HOLD_TIME));
    let peer_config = PeerConfig::new(peer_router_id(), PEER_AS, lan.v4(1))
        .neighbor(Neighbor::new(lan.v4(0), TORTIE_AS).hold_time(SHORT_HOLD_TIME))
        .originate(Announcement::new("198.18.30.0/24"));
    let tortie = TortieBgpd::start(&lan.hosts[0], &tortie_config);
    let peer = kind.start(&lan.hosts[1], &peer_config);
    tortie.wait_established(lan.v4(1));
    wait_route_with_path(&tortie, "198.18.30.0/24", &[PEER_AS]);

    let pid = libc::pid_t::try_from(peer.pid()).expect("a pid fits pid_t");
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child's, which
    // its guard has not reaped yet.
    let stopped = unsafe { libc::kill(pid, libc::SIGSTOP) };
    assert_eq!(stopped, 0, "SIGSTOP to {} ({pid}) failed", kind.tag());

    tortie.wait_no_route("198.18.30.0/24", ROUTES_WITHIN);
    wait_last_error(&tortie, lan.v4(1), "hold timer expired", ROUTES_WITHIN);
    let row = tortie.peer(lan.v4(1));
    assert!(
        row.as_ref()
            .is_some_and(|r| r.state != SessionState::Established),
        "{row:?}"
    );
    // The guard's SIGKILL ends the stopped daemon too.
}

#[test]
fn a_peer_that_stops_answering_loses_its_routes_at_the_hold_time() {
    against_every_peer(silent_peer);
}

// ---- Graceful restart: tortie as the helper ----

/// Both sides offer graceful restart. The peer is killed (no NOTIFICATION, just a closed
/// connection): tortie keeps its routes, as stale, while the session is down. The peer
/// comes back announcing one of them with a new MED and not the other: after its
/// End-of-RIB tortie has the new MED, and the route it did not announce again is gone.
fn graceful_restart(kind: PeerKind) {
    let lan = lan("gr", kind);
    let mut tortie_config = PeerConfig::new(tortie_router_id(), TORTIE_AS, lan.v4(0))
        .neighbor(Neighbor::new(lan.v4(1), PEER_AS));
    tortie_config.graceful_restart = true;
    let mut peer_config = PeerConfig::new(peer_router_id(), PEER_AS, lan.v4(1))
        .neighbor(Neighbor::new(lan.v4(0), TORTIE_AS));
    peer_config.graceful_restart = true;
    let before = peer_config
        .clone()
        .originate(Announcement::new("198.18.40.0/24").med(1))
        .originate(Announcement::new("198.18.41.0/24"));
    let after = peer_config.originate(Announcement::new("198.18.40.0/24").med(2));

    let tortie = TortieBgpd::start(&lan.hosts[0], &tortie_config);
    let peer = kind.start(&lan.hosts[1], &before);
    tortie.wait_established(lan.v4(1));
    tortie.wait_route("198.18.40.0/24", ROUTES_WITHIN, &|r| r.med == Some(1));
    wait_route_with_path(&tortie, "198.18.41.0/24", &[PEER_AS]);

    drop(peer);
    wait_until(
        ROUTES_WITHIN,
        "tortie-bgpd sees the killed peer's session down",
        || match tortie.peer(lan.v4(1)) {
            Some(row) if row.state != SessionState::Established => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // Down, and the routes still there: kept, marked stale, for the peer's restart time.
    for kept in ["198.18.40.0/24", "198.18.41.0/24"] {
        assert_eq!(
            tortie.is_stale(prefix(kept)),
            Some(true),
            "{kept} not kept as stale while the peer restarts:\n{}",
            tortie.explain(prefix(kept))
        );
    }

    let peer = kind.start(&lan.hosts[1], &after);
    tortie.wait_established(lan.v4(1));
    tortie.wait_route("198.18.40.0/24", ROUTES_WITHIN, &|r| r.med == Some(2));
    tortie.wait_no_route("198.18.41.0/24", ROUTES_WITHIN);
    assert_eq!(
        tortie.is_stale(prefix("198.18.40.0/24")),
        Some(false),
        "refreshed, yet still stale:\n{}",
        tortie.explain(prefix("198.18.40.0/24"))
    );
    peer.wait_established(lan.v4(0));
}

#[test]
fn a_restarting_peer_with_graceful_restart_keeps_its_routes_until_it_refreshes_them() {
    against_every_peer(graceful_restart);
}

// ---- Graceful restart: tortie as the restarting speaker ----

/// Both sides offer graceful restart. tortie is killed: the peer keeps tortie's routes
/// while the session is down. tortie comes back restarting (Restart State and Forwarding
/// State set), announcing one of them with a MED and not the other: after tortie's
/// End-of-RIB the peer has the MED, and the route tortie did not announce again is gone.
fn tortie_restarts(kind: PeerKind) {
    let lan = lan("trs", kind);
    let mut tortie_config = PeerConfig::new(tortie_router_id(), TORTIE_AS, lan.v4(0))
        .neighbor(Neighbor::new(lan.v4(1), PEER_AS));
    tortie_config.graceful_restart = true;
    let before = tortie_config
        .clone()
        .originate(Announcement::new("198.18.80.0/24"))
        .originate(Announcement::new("198.18.81.0/24"));
    let after = tortie_config.originate(Announcement::new("198.18.80.0/24").med(5));
    let mut peer_config = PeerConfig::new(peer_router_id(), PEER_AS, lan.v4(1))
        .neighbor(Neighbor::new(lan.v4(0), TORTIE_AS));
    peer_config.graceful_restart = true;

    let tortie = TortieBgpd::start(&lan.hosts[0], &before);
    let peer = kind.start(&lan.hosts[1], &peer_config);
    peer.wait_established(lan.v4(0));
    wait_route_with_path(peer.as_ref(), "198.18.80.0/24", &[TORTIE_AS]);
    wait_route_with_path(peer.as_ref(), "198.18.81.0/24", &[TORTIE_AS]);

    drop(tortie);
    let what = format!("{} sees tortie's session down", kind.tag());
    wait_until(ROUTES_WITHIN, &what, || match peer.state(lan.v4(0)) {
        Some(SessionState::Established) | None => Err(format!("{:?}", peer.state(lan.v4(0)))),
        Some(_) => Ok(()),
    });
    let routes = peer.routes();
    for kept in ["198.18.80.0/24", "198.18.81.0/24"] {
        assert!(
            routes.iter().any(|r| r.prefix == prefix(kept)),
            "{} dropped {kept} while tortie restarts: {routes:?}\n{}",
            kind.tag(),
            peer.explain(prefix(kept))
        );
    }

    let _tortie = TortieBgpd::start_restarting(&lan.hosts[0], &after);
    peer.wait_established(lan.v4(0));
    peer.wait_route("198.18.80.0/24", ROUTES_WITHIN, &|r| r.med == Some(5));
    peer.wait_no_route("198.18.81.0/24", ROUTES_WITHIN);
}

#[test]
fn a_restarting_tortie_keeps_its_routes_at_the_peer_until_it_refreshes_them() {
    against_every_peer(tortie_restarts);
}

// ---- A new connection from a peer whose session is Established ----

/// Opens a TCP connection to tortie (host 0) from the peer's host, as the peer would
/// after a restart tortie has not noticed, and returns what tortie sends on it before
/// closing it or within 30 s: up to one message header.
fn connect_as_the_peer(lan: &Lan) -> Vec<u8> {
    let tortie = SocketAddr::new(lan.v4(0), 179);
    lan.hosts[1]
        .spawn_thread(move || {
            let mut stream = TcpStream::connect_timeout(&tortie, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("connecting to tortie at {tortie}: {e}"));
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("read timeout set");
            // RFC 4271 - Section 4.1: a message header is 19 octets.
            let mut received = Vec::new();
            while received.len() < 19 {
                let mut chunk = [0u8; 19];
                match stream.read(&mut chunk[..19 - received.len()]) {
                    Ok(0) => break,
                    Ok(read) => received.extend_from_slice(&chunk[..read]),
                    Err(e) => panic!("reading from tortie: {e} (after {received:?})"),
                }
            }
            received
        })
        .join()
        .expect("the connecting thread does not panic")
}

/// A second connection from the peer's address while the session is Established. With
/// graceful restart negotiated (RFC 4724 - Section 4.2) tortie takes it as the peer's
/// restart: it answers with an OPEN and keeps the old session's routes as stale until
/// the real peer is back. Without it (RFC 4271 - Section 6.8) tortie closes the new
/// connection and the session stays up, untouched.
fn new_connection_while_established(kind: PeerKind, graceful: bool) {
    let lan = lan(if graceful { "grnew" } else { "new" }, kind);
    let mut tortie_config = PeerConfig::new(tortie_router_id(), TORTIE_AS, lan.v4(0))
        .neighbor(Neighbor::new(lan.v4(1), PEER_AS));
    tortie_config.graceful_restart = graceful;
    let mut peer_config = PeerConfig::new(peer_router_id(), PEER_AS, lan.v4(1))
        .neighbor(Neighbor::new(lan.v4(0), TORTIE_AS))
        .originate(Announcement::new("198.18.70.0/24"));
    peer_config.graceful_restart = graceful;
    let tortie = TortieBgpd::start(&lan.hosts[0], &tortie_config);
    let peer = kind.start(&lan.hosts[1], &peer_config);
    tortie.wait_established(lan.v4(1));
    wait_route_with_path(&tortie, "198.18.70.0/24", &[PEER_AS]);
    let before = tortie.peer(lan.v4(1)).expect("the peer has a row");

    let received = connect_as_the_peer(&lan);
    let header_type = (received.len() == 19 && received[..16] == [0xff; 16]).then(|| received[18]);
    if graceful {
        // RFC 4271 - Section 4.1: message type 1 is OPEN.
        assert_eq!(
            header_type,
            Some(1),
            "no OPEN on the new connection: {received:?}\n{}",
            tortie.log()
        );
        // The old session ended; its routes wait, stale, for the real peer, which comes
        // back (tortie closed its connection) and refreshes them.
        wait_until(
            ROUTES_WITHIN,
            "tortie-bgpd has the real peer's session back with fresh routes",
            || match (
                tortie.state(lan.v4(1)),
                tortie.is_stale(prefix("198.18.70.0/24")),
            ) {
                (Some(SessionState::Established), Some(false)) => {
                    let row = tortie.peer(lan.v4(1));
                    match row {
                        Some(row) if row.since != before.since || row.info != before.info => Ok(()),
                        other => Err(format!("the old session still: {other:?}")),
                    }
                }
                other => Err(format!("state and staleness {other:?}")),
            },
        );
        peer.wait_established(lan.v4(0));
    } else {
        assert!(
            received.is_empty(),
            "tortie sent {received:?} on a new connection instead of closing it"
        );
        let after = tortie.peer(lan.v4(1)).expect("the peer has a row");
        assert_eq!(after.state, SessionState::Established, "{after:?}");
        assert_eq!(after.since, before.since, "the session flapped: {after:?}");
        assert_eq!(tortie.is_stale(prefix("198.18.70.0/24")), Some(false));
        assert_eq!(peer.state(lan.v4(0)), Some(SessionState::Established));
    }
}

#[test]
fn without_graceful_restart_a_new_connection_from_an_established_peer_is_closed() {
    against_every_peer(|kind| new_connection_while_established(kind, false));
}

#[test]
fn with_graceful_restart_a_new_connection_from_an_established_peer_is_its_restart() {
    against_every_peer(|kind| new_connection_while_established(kind, true));
}

// ---- Errors: wrong AS, TCP MD5 ----

/// tortie expects AS 64999 but the peer is 64513: tortie answers the peer's OPEN with a
/// NOTIFICATION (OPEN Message Error, Bad Peer AS), the peer table says so, and the peer
/// hears it.
fn wrong_as(kind: PeerKind) {
    let lan = lan("as", kind);
    let tortie_config = PeerConfig::new(tortie_router_id(), TORTIE_AS, lan.v4(0))
        .neighbor(Neighbor::new(lan.v4(1), 64999));
    let peer_config = PeerConfig::new(peer_router_id(), PEER_AS, lan.v4(1))
        .neighbor(Neighbor::new(lan.v4(0), TORTIE_AS));
    let tortie = TortieBgpd::start(&lan.hosts[0], &tortie_config);
    let peer = kind.start(&lan.hosts[1], &peer_config);

    wait_last_error(&tortie, lan.v4(1), "sent NOTIFICATION", ROUTES_WITHIN);
    let row = tortie.peer(lan.v4(1)).expect("the peer has a row");
    assert!(
        row.info.contains("64513") && row.info.contains("64999"),
        "the error names neither AS: {row:?}"
    );
    assert!(
        tortie.log().contains("sending NOTIFICATION"),
        "{}",
        tortie.log()
    );
    // The peer received it: BIRD's and FRR's last error (or log) name it; GoBGP keeps
    // only a count of the NOTIFICATIONs it received.
    let what = format!("{} reports the NOTIFICATION it received", kind.tag());
    wait_until(ROUTES_WITHIN, &what, || {
        let error = peer.last_error(lan.v4(0)).unwrap_or_default();
        let log = peer.log();
        let seen = format!("{error}\n{log}").to_ascii_lowercase();
        let reported = match kind {
            PeerKind::GoBgp => error.contains("received") && error.contains("NOTIFICATION"),
            PeerKind::Bird | PeerKind::Frr => {
                seen.contains("bad peer as") || seen.contains("bad peer-as")
            }
        };
        if reported {
            Ok(())
        } else {
            Err(format!(
                "last error {error:?}, state {:?}\n--- log ---\n{log}",
                peer.state(lan.v4(0))
            ))
        }
    });
    assert_ne!(peer.state(lan.v4(0)), Some(SessionState::Established));
}

#[test]
fn a_wrong_peer_as_gets_a_notification_and_shows_in_the_peer_table() {
    against_every_peer(wrong_as);
}

/// Two sessions between tortie and the peer: IPv4 with the same TCP MD5 password on both
/// sides, IPv6 with different ones. The first comes up. The second never does: once the
/// first is Established and tortie has given up on at least one connection attempt of
/// the second (its SYNs go unanswered, as the peer's kernel drops them), neither side
/// reports it Established.
fn md5(kind: PeerKind) {
    let lan = lan("md5", kind);
    let tortie_config = PeerConfig::new(tortie_router_id(), TORTIE_AS, lan.v4(0))
        .local_address6(lan.v6(0))
        .neighbor(Neighbor::new(lan.v4(1), PEER_AS).password("tortie-md5-right"))
        .neighbor(Neighbor::new(lan.v6(1), PEER_AS).password("tortie-md5-wrong"));
    let peer_config = PeerConfig::new(peer_router_id(), PEER_AS, lan.v4(1))
        .local_address6(lan.v6(1))
        .neighbor(Neighbor::new(lan.v4(0), TORTIE_AS).password("tortie-md5-right"))
        .neighbor(Neighbor::new(lan.v6(0), TORTIE_AS).password("tortie-md5-right"))
        .originate(Announcement::new("198.18.50.0/24"));
    let tortie = TortieBgpd::start(&lan.hosts[0], &tortie_config);
    let peer = kind.start(&lan.hosts[1], &peer_config);

    tortie.wait_established(lan.v4(1));
    peer.wait_established(lan.v4(0));
    wait_route_with_path(&tortie, "198.18.50.0/24", &[PEER_AS]);

    let mismatched = lan.v6(1).to_string();
    wait_until(
        ROUTES_WITHIN,
        "tortie-bgpd gives up on a connection attempt to the peer with the wrong password",
        || {
            let log = tortie.log();
            let given_up = log
                .lines()
                .filter(|line| line.contains(&mismatched))
                .any(|line| line.contains("connection attempt"));
            if given_up { Ok(()) } else { Err(log) }
        },
    );
    let row = tortie.peer(lan.v6(1));
    assert!(
        row.as_ref()
            .is_some_and(|r| r.state != SessionState::Established),
        "the session with mismatched passwords: {row:?}"
    );
    let state = peer.state(lan.v6(0));
    assert_ne!(
        state,
        Some(SessionState::Established),
        "{} has the session with mismatched passwords up",
        kind.tag()
    );
}

#[test]
fn md5_passwords_that_match_establish_and_ones_that_do_not_never_do() {
    against_every_peer(md5);
}

// ---- Route reflection ----

/// tortie reflects for three iBGP clients, two tortie-bgpd and one BIRD, which have no
/// sessions with each other. Each client originates a prefix; every client learns every
/// other client's, with ORIGINATOR_ID the originating client's router id, CLUSTER_LIST
/// the reflector's cluster id, and the next hop left as the originating client's address.
#[test]
fn tortie_reflects_routes_between_its_clients() {
    let lan = Lan::new("rr", 4);
    let cluster_id = Ipv4Addr::new(192, 0, 2, 100);
    let client_id = |index: usize| Ipv4Addr::new(192, 0, 2, 10 + index as u8);
    let client_prefix = |index: usize| format!("198.18.{}.0/24", 60 + index);

    let mut reflector_config = PeerConfig::new(tortie_router_id(), TORTIE_AS, lan.v4(0));
    reflector_config.cluster_id = Some(cluster_id);
    for index in 1..=3 {
        reflector_config = reflector_config
            .neighbor(Neighbor::new(lan.v4(index), TORTIE_AS).route_reflector_client());
    }
    let client_config = |index: usize| {
        PeerConfig::new(client_id(index), TORTIE_AS, lan.v4(index))
            .neighbor(Neighbor::new(lan.v4(0), TORTIE_AS))
            .originate(Announcement::new(&client_prefix(index)).community(64512, index as u16))
    };
    let reflector = TortieBgpd::start(&lan.hosts[0], &reflector_config);
    let first = TortieBgpd::start(&lan.hosts[1], &client_config(1));
    let second = TortieBgpd::start(&lan.hosts[2], &client_config(2));
    let third = Bird::start(&lan.hosts[3], &client_config(3));
    let clients: [&dyn BgpDaemon; 3] = [&first, &second, &third];

    for (offset, client) in clients.iter().enumerate() {
        reflector.wait_established(lan.v4(offset + 1));
        client.wait_established(lan.v4(0));
    }
    for (offset, client) in clients.iter().enumerate() {
        let index = offset + 1;
        for other in (1..=3).filter(|o| *o != index) {
            let route = wait_route_with_path(*client, &client_prefix(other), &[]);
            let context = format!("{} client {index} on {route:?}", client.kind());
            assert_eq!(route.originator_id, Some(client_id(other)), "{context}");
            assert_eq!(route.cluster_list, [cluster_id], "{context}");
            assert_eq!(route.next_hop, Some(lan.v4(other)), "{context}");
            assert_eq!(route.local_pref, Some(100), "{context}");
            assert_eq!(route.communities, [(64512, other as u16)], "{context}");
        }
    }
    // A withdrawal is reflected too.
    third.withdraw(prefix(&client_prefix(3)));
    first.wait_no_route(&client_prefix(3), ROUTES_WITHIN);
    second.wait_no_route(&client_prefix(3), ROUTES_WITHIN);
}
