//! The real BGP daemons the speaker's tests lean on — BIRD 2, FRR and GoBGP — brought up
//! by the harness in namespaces, peering with each other. If these fail, a failure of
//! tortie against them would say nothing about tortie.

use std::net::Ipv4Addr;
use std::time::Duration;

use tortie_tests::Lan;
use tortie_tests::peers::{
    Announcement, BgpDaemon, Bird, Frr, GoBgp, Neighbor, Origin, PeerConfig,
};

const ROUTES_WITHIN: Duration = Duration::from_secs(60);

fn router_id(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, index + 1)
}

/// BIRD (AS 64501), FRR (64502) and GoBGP (64503) on one LAN, every pair in an eBGP
/// session over IPv4 and over IPv6 (BIRD and FRR's IPv4 session with an MD5 password),
/// each announcing its own prefixes with communities.
#[test]
fn bird_frr_and_gobgp_peer_and_exchange_routes() {
    let lan = Lan::new("peers", 3);
    let asn = |index: usize| 64501 + index as u32;
    let config = |index: usize| {
        let mut config = PeerConfig::new(router_id(index as u8), asn(index), lan.v4(index))
            .local_address6(lan.v6(index));
        for other in (0..3).filter(|o| *o != index) {
            let mut v4 = Neighbor::new(lan.v4(other), asn(other));
            if index + other == 1 {
                v4 = v4.password("tortie-md5");
            }
            config = config.neighbor(v4);
            config = config.neighbor(Neighbor::new(lan.v6(other), asn(other)));
        }
        config
    };
    let mut bird_config = config(0);
    bird_config = bird_config.originate(
        Announcement::new("198.18.1.0/24")
            .community(65000, 1)
            .large_community(64501, 7, 8),
    );
    bird_config = bird_config.originate(Announcement::new("2001:db8:1001::/48"));
    let mut frr_config = config(1);
    frr_config = frr_config.originate(Announcement::new("198.18.2.0/24").community(65000, 2));
    frr_config = frr_config.originate(Announcement::new("2001:db8:1002::/48"));
    let mut gobgp_config = config(2);
    gobgp_config = gobgp_config.originate(Announcement::new("198.18.3.0/24").community(65000, 3));
    gobgp_config = gobgp_config.originate(Announcement::new("2001:db8:1003::/48"));

    let bird = Bird::start(&lan.hosts[0], &bird_config);
    let frr = Frr::start(&lan.hosts[1], &frr_config);
    let gobgp = GoBgp::start(&lan.hosts[2], &gobgp_config);
    let daemons: [&dyn BgpDaemon; 3] = [&bird, &frr, &gobgp];

    for (index, daemon) in daemons.iter().enumerate() {
        for other in (0..3).filter(|o| *o != index) {
            daemon.wait_established(lan.v4(other));
            daemon.wait_established(lan.v6(other));
        }
    }

    // Every daemon learns the other two's prefixes, with the originator's AS as the path,
    // the originator's address as next hop, and its communities.
    let own = [
        ("198.18.1.0/24", "2001:db8:1001::/48", (65000, 1)),
        ("198.18.2.0/24", "2001:db8:1002::/48", (65000, 2)),
        ("198.18.3.0/24", "2001:db8:1003::/48", (65000, 3)),
    ];
    for (index, daemon) in daemons.iter().enumerate() {
        for (origin, (v4_prefix, v6_prefix, community)) in own.iter().enumerate() {
            if origin == index {
                continue;
            }
            let route = daemon.wait_route(v4_prefix, ROUTES_WITHIN, &|r| {
                r.as_path.first() == Some(&asn(origin)) && r.communities.contains(community)
            });
            assert_eq!(
                route.as_path,
                [asn(origin)],
                "{} via {route:?}",
                daemon.kind()
            );
            assert_eq!(route.next_hop, Some(lan.v4(origin)), "{route:?}");
            if origin == 0 {
                assert_eq!(route.large_communities, [(64501, 7, 8)], "{route:?}");
                assert_eq!(route.origin, Some(Origin::Igp), "{route:?}");
            }
            let route = daemon.wait_route(v6_prefix, ROUTES_WITHIN, &|r| {
                r.as_path.first() == Some(&asn(origin))
            });
            assert_eq!(route.next_hop, Some(lan.v6(origin)), "{route:?}");
        }
    }

    // A withdrawal reaches everyone.
    frr.withdraw("198.18.2.0/24".parse().unwrap());
    bird.wait_no_route("198.18.2.0/24", ROUTES_WITHIN);
    gobgp.wait_no_route("198.18.2.0/24", ROUTES_WITHIN);
    // And a new announcement too, from each daemon's runtime interface.
    bird.announce(&Announcement::new("198.18.11.0/24").med(42));
    gobgp.announce(&Announcement::new("198.18.13.0/24").med(43));
    frr.announce(&Announcement::new("198.18.12.0/24").med(44));
    frr.wait_route("198.18.11.0/24", ROUTES_WITHIN, &|r| r.med == Some(42));
    bird.wait_route("198.18.13.0/24", ROUTES_WITHIN, &|r| r.med == Some(43));
    gobgp.wait_route("198.18.12.0/24", ROUTES_WITHIN, &|r| r.med == Some(44));
}
