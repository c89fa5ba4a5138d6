//! The protocol's own rules for taking routes in and passing them on, before and after any
//! user policy: loop checks and attribute hygiene on import (RFC 4271 - Section 9.1.2,
//! RFC 7606, RFC 4456 - Section 8), and on export split horizon, route reflection and the
//! attribute rewriting each kind of peer is owed (RFC 4271 - Sections 5.1 and 9.1.3, RFC
//! 4456 - Sections 6 and 8).
//!
//! Pure functions of plain values: the speaker calls them per UPDATE and per peer.

use std::net::{IpAddr, Ipv4Addr};

use crate::packet::{AsSegment, Family, NextHop, PathAttributes, SegmentKind};
use crate::rib::DEFAULT_LOCAL_PREF;

/// This speaker, as the rules need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSpeaker {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Set when this speaker is a route reflector (RFC 4456 - Section 7: the router id
    /// unless configured otherwise).
    pub cluster_id: Option<Ipv4Addr>,
}

/// One session, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionView {
    pub peer_asn: u32,
    pub peer_router_id: Ipv4Addr,
    /// This speaker's address on the session: the next hop it announces as itself.
    pub local_address: IpAddr,
    /// A client of this route reflector (RFC 4456 - Section 4).
    pub route_reflector_client: bool,
    /// Announce this speaker as next hop on iBGP too (RFC 4271 - Section 5.1.3 allows it
    /// when configured).
    pub next_hop_self: bool,
}

impl SessionView {
    pub fn is_internal(&self, local: &LocalSpeaker) -> bool {
        self.peer_asn == local.asn
    }
}

/// Why a received route is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// RFC 4271 - Section 9.1.2: a path through our own AS is a loop.
    #[error("AS path contains our AS {0}")]
    AsPathLoop(u32),
    /// RFC 7606 - Section 7.2 (the check of RFC 4271 - Section 6.3): treat-as-withdraw.
    #[error("AS path does not start with the peer's AS {peer_asn}")]
    FirstAsMismatch { peer_asn: u32 },
    /// RFC 4456 - Section 8: our own route, reflected back to us.
    #[error("ORIGINATOR_ID is our router id")]
    OriginatorLoop,
    /// RFC 4456 - Section 8: the route went round the cluster.
    #[error("CLUSTER_LIST contains our cluster id {0}")]
    ClusterLoop(Ipv4Addr),
    /// RFC 4271 - Section 5.1.3 and RFC 7606 - Section 7.3: a next hop that is this
    /// speaker's own address cannot be used.
    #[error("next hop {0} is this speaker's own address")]
    NextHopIsSelf(IpAddr),
}

/// Checks a received route and tidies its attributes; `Err` means: treat as withdrawn.
pub fn import(
    mut attributes: PathAttributes,
    session: &SessionView,
    local: &LocalSpeaker,
) -> Result<PathAttributes, Rejection> {
    let internal = session.is_internal(local);
    if let Some(path) = &attributes.as_path {
        // Confederation members carry our member AS legitimately; they are not checked.
        let mut asns = path
            .segments
            .iter()
            .filter(|s| matches!(s.kind, SegmentKind::Sequence | SegmentKind::Set))
            .flat_map(|s| &s.asns);
        if asns.any(|&asn| asn == local.asn) {
            return Err(Rejection::AsPathLoop(local.asn));
        }
        if !internal {
            let first = path
                .segments
                .first()
                .filter(|s| s.kind == SegmentKind::Sequence);
            if first.and_then(|s| s.asns.first()) != Some(&session.peer_asn) {
                return Err(Rejection::FirstAsMismatch {
                    peer_asn: session.peer_asn,
                });
            }
        }
    }
    if attributes.originator_id == Some(local.router_id) {
        return Err(Rejection::OriginatorLoop);
    }
    if let Some(cluster_id) = local.cluster_id
        && attributes.cluster_list.contains(&cluster_id)
    {
        return Err(Rejection::ClusterLoop(cluster_id));
    }
    if let Some(next_hop) = attributes.next_hop
        && IpAddr::V4(next_hop) == session.local_address
    {
        return Err(Rejection::NextHopIsSelf(session.local_address));
    }
    if !internal {
        // RFC 7606 - Section 7.5: LOCAL_PREF from an external peer is discarded; so are
        // the reflection attributes, which never leave an AS (RFC 4456 - Section 8).
        attributes.local_pref = None;
        attributes.originator_id = None;
        attributes.cluster_list.clear();
    }
    Ok(attributes)
}

/// Where a best path came from, as export needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Originated by this speaker.
    Local,
    /// Learned over the session `view` (and that peer's id, to avoid sending it back).
    Peer {
        view: SessionView,
        peer: crate::rib::PeerId,
    },
}

/// What `to` is sent for a best path with `attributes` from `source`, or `None` when the
/// rules say it is not sent at all.
///
/// `family` is the route's: the next hop this speaker announces as itself is the session's
/// local address, which must be of the same family (a route of the other family is not
/// sent where this speaker would have to be its next hop).
pub fn export(
    attributes: &PathAttributes,
    source: &Source,
    to: &SessionView,
    to_peer: crate::rib::PeerId,
    local: &LocalSpeaker,
    family: Family,
) -> Option<PathAttributes> {
    let to_internal = to.is_internal(local);
    let mut out = attributes.clone();
    let (from_internal, from_client, from_router_id) = match source {
        Source::Local => (false, false, local.router_id),
        Source::Peer { view, peer } => {
            // Never back to the peer it came from.
            if *peer == to_peer {
                return None;
            }
            (
                view.is_internal(local),
                view.route_reflector_client,
                view.peer_router_id,
            )
        }
    };
    let locally_originated = matches!(source, Source::Local);

    if to_internal {
        if from_internal {
            // RFC 4271 - Section 9.1.3 forbids passing iBGP routes to iBGP peers (the full
            // mesh has them already) unless this speaker reflects (RFC 4456 - Section 6): a
            // client's route goes to everyone, a non-client's to clients only.
            let cluster_id = local.cluster_id?;
            if !from_client && !to.route_reflector_client {
                return None;
            }
            // RFC 4456 - Section 8: ORIGINATOR_ID names the route's first iBGP speaker;
            // the cluster id goes in front of CLUSTER_LIST.
            out.originator_id.get_or_insert(from_router_id);
            out.cluster_list.insert(0, cluster_id);
        }
        // RFC 4271 - Section 5.1.5: LOCAL_PREF goes to every internal peer.
        out.local_pref.get_or_insert(DEFAULT_LOCAL_PREF);
        // RFC 4271 - Section 5.1.3: the next hop is left alone on iBGP unless the route
        // is ours or next-hop-self is configured.
        if (locally_originated || to.next_hop_self)
            && !set_next_hop(&mut out, to.local_address, family)
        {
            return None;
        }
    } else {
        // RFC 4271 - Section 5.1.2: prepend our AS toward an external peer.
        prepend(&mut out, local.asn);
        // RFC 4271 - Section 5.1.3: toward an external peer the next hop is ourselves.
        if !set_next_hop(&mut out, to.local_address, family) {
            return None;
        }
        // RFC 4271 - Section 5.1.5: no LOCAL_PREF to external peers; Section 5.1.4: a
        // MED learned from another AS does not travel to a third.
        out.local_pref = None;
        if !locally_originated {
            out.multi_exit_disc = None;
        }
        out.originator_id = None;
        out.cluster_list.clear();
    }
    Some(out)
}

/// Makes `address` the route's next hop: NEXT_HOP for IPv4, the MP_REACH_NLRI next hop
/// for IPv6. `false` when the address is not of the route's family.
fn set_next_hop(attributes: &mut PathAttributes, address: IpAddr, family: Family) -> bool {
    match (family, address) {
        (Family::IPV4_UNICAST, IpAddr::V4(address)) => {
            attributes.next_hop = Some(address);
            true
        }
        (Family::IPV6_UNICAST, IpAddr::V6(global)) => {
            attributes.mp_next_hop = Some(NextHop::V6 {
                global,
                link_local: None,
            });
            true
        }
        _ => false,
    }
}

/// Puts `asn` in front of the AS path, in a new AS_SEQUENCE when the path starts with
/// anything else (RFC 4271 - Section 5.1.2).
pub(crate) fn prepend(attributes: &mut PathAttributes, asn: u32) {
    let path = attributes.as_path.get_or_insert_with(Default::default);
    match path.segments.first_mut() {
        Some(segment) if segment.kind == SegmentKind::Sequence && segment.asns.len() < 255 => {
            segment.asns.insert(0, asn);
        }
        _ => path.segments.insert(
            0,
            AsSegment {
                kind: SegmentKind::Sequence,
                asns: vec![asn],
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::AsPath;
    use crate::rib::PeerId;

    const LOCAL: LocalSpeaker = LocalSpeaker {
        asn: 64512,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        cluster_id: None,
    };
    const REFLECTOR: LocalSpeaker = LocalSpeaker {
        cluster_id: Some(Ipv4Addr::new(192, 0, 2, 1)),
        ..LOCAL
    };

    fn session(peer_asn: u32, last_octet: u8) -> SessionView {
        SessionView {
            peer_asn,
            peer_router_id: Ipv4Addr::new(198, 51, 100, last_octet),
            local_address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            route_reflector_client: false,
            next_hop_self: false,
        }
    }

    fn client(last_octet: u8) -> SessionView {
        SessionView {
            route_reflector_client: true,
            ..session(64512, last_octet)
        }
    }

    fn route(asns: &[u32]) -> PathAttributes {
        crate::testing::path_through(asns, Ipv4Addr::new(198, 51, 100, 7))
    }

    fn from(view: SessionView, peer: u32) -> Source {
        Source::Peer {
            view,
            peer: PeerId(peer),
        }
    }

    #[test]
    fn import_rejects_loops_and_wrong_first_as() {
        let external = session(64513, 2);
        assert_eq!(
            import(route(&[64513, 64512]), &external, &LOCAL),
            Err(Rejection::AsPathLoop(64512))
        );
        assert_eq!(
            import(route(&[64514]), &external, &LOCAL),
            Err(Rejection::FirstAsMismatch { peer_asn: 64513 })
        );
        let mine = PathAttributes {
            originator_id: Some(LOCAL.router_id),
            ..route(&[])
        };
        assert_eq!(
            import(mine, &session(64512, 3), &LOCAL),
            Err(Rejection::OriginatorLoop)
        );
        let looped = PathAttributes {
            cluster_list: vec![Ipv4Addr::new(192, 0, 2, 1)],
            ..route(&[])
        };
        assert_eq!(
            import(looped, &client(3), &REFLECTOR),
            Err(Rejection::ClusterLoop(Ipv4Addr::new(192, 0, 2, 1)))
        );
        let to_self = PathAttributes {
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..route(&[64513])
        };
        assert!(matches!(
            import(to_self, &external, &LOCAL),
            Err(Rejection::NextHopIsSelf(_))
        ));
        // A confederation segment may hold our member AS.
        let confed = PathAttributes {
            as_path: Some(AsPath {
                segments: vec![AsSegment {
                    kind: SegmentKind::ConfedSequence,
                    asns: vec![64512],
                }],
            }),
            ..route(&[])
        };
        assert!(import(confed, &session(64512, 3), &LOCAL).is_ok());
    }

    #[test]
    fn import_drops_what_external_peers_must_not_set() {
        let sent = PathAttributes {
            local_pref: Some(500),
            originator_id: Some(Ipv4Addr::new(203, 0, 113, 1)),
            cluster_list: vec![Ipv4Addr::new(203, 0, 113, 2)],
            ..route(&[64513])
        };
        let taken = import(sent.clone(), &session(64513, 2), &LOCAL).expect("accepted");
        assert_eq!(
            (
                taken.local_pref,
                taken.originator_id,
                taken.cluster_list.len()
            ),
            (None, None, 0)
        );
        let internal = import(sent.clone(), &session(64512, 3), &LOCAL).expect("accepted");
        assert_eq!(internal, sent);
    }

    #[test]
    fn toward_external_peers_we_prepend_set_next_hop_and_strip_internal_attributes() {
        let learned = PathAttributes {
            local_pref: Some(200),
            multi_exit_disc: Some(5),
            ..route(&[64514])
        };
        let out = export(
            &learned,
            &from(session(64512, 3), 3),
            &session(64513, 2),
            PeerId(2),
            &LOCAL,
            Family::IPV4_UNICAST,
        )
        .expect("sent");
        assert_eq!(
            out.as_path.map(|p| p.segments[0].asns.clone()),
            Some(vec![64512, 64514])
        );
        assert_eq!(out.next_hop, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!((out.local_pref, out.multi_exit_disc), (None, None));
        // Our own route keeps the MED we set, and gets a sequence even from an empty path.
        let own = PathAttributes {
            multi_exit_disc: Some(5),
            ..route(&[])
        };
        let out = export(
            &own,
            &Source::Local,
            &session(64513, 2),
            PeerId(2),
            &LOCAL,
            Family::IPV4_UNICAST,
        )
        .expect("sent");
        assert_eq!(out.multi_exit_disc, Some(5));
        assert_eq!(
            out.as_path.map(|p| p.segments),
            Some(vec![AsSegment {
                kind: SegmentKind::Sequence,
                asns: vec![64512]
            }])
        );
        // A path starting with a set gets a new sequence in front.
        let set = PathAttributes {
            as_path: Some(AsPath {
                segments: vec![AsSegment {
                    kind: SegmentKind::Set,
                    asns: vec![64514, 64515],
                }],
            }),
            ..route(&[])
        };
        let out = export(
            &set,
            &from(session(64514, 4), 4),
            &session(64513, 2),
            PeerId(2),
            &LOCAL,
            Family::IPV4_UNICAST,
        )
        .expect("sent");
        assert_eq!(out.as_path.map(|p| p.segments.len()), Some(2));
    }

    #[test]
    fn toward_internal_peers_local_pref_is_set_and_the_next_hop_kept_unless_ours() {
        let external_route = route(&[64513]);
        let out = export(
            &external_route,
            &from(session(64513, 2), 2),
            &session(64512, 3),
            PeerId(3),
            &LOCAL,
            Family::IPV4_UNICAST,
        )
        .expect("sent");
        assert_eq!(out.local_pref, Some(DEFAULT_LOCAL_PREF));
        assert_eq!(out.next_hop, Some(Ipv4Addr::new(198, 51, 100, 7)));
        assert_eq!(out.as_path, external_route.as_path);
        let self_next_hop = SessionView {
            next_hop_self: true,
            ..session(64512, 3)
        };
        let out = export(
            &external_route,
            &from(session(64513, 2), 2),
            &self_next_hop,
            PeerId(3),
            &LOCAL,
            Family::IPV4_UNICAST,
        )
        .expect("sent");
        assert_eq!(out.next_hop, Some(Ipv4Addr::new(192, 0, 2, 1)));
        // A node's own block: next hop is the node.
        let out = export(
            &route(&[]),
            &Source::Local,
            &session(64512, 3),
            PeerId(3),
            &LOCAL,
            Family::IPV4_UNICAST,
        )
        .expect("sent");
        assert_eq!(out.next_hop, Some(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn a_route_is_never_sent_back_to_its_peer_and_ibgp_is_not_passed_on_in_a_full_mesh() {
        assert_eq!(
            export(
                &route(&[64513]),
                &from(session(64513, 2), 2),
                &session(64513, 2),
                PeerId(2),
                &LOCAL,
                Family::IPV4_UNICAST
            ),
            None
        );
        assert_eq!(
            export(
                &route(&[]),
                &from(session(64512, 3), 3),
                &session(64512, 4),
                PeerId(4),
                &LOCAL,
                Family::IPV4_UNICAST
            ),
            None
        );
    }

    #[test]
    fn a_reflector_reflects_client_routes_to_all_and_others_to_clients() {
        let reflected = export(
            &route(&[]),
            &from(client(3), 3),
            &session(64512, 4),
            PeerId(4),
            &REFLECTOR,
            Family::IPV4_UNICAST,
        )
        .expect("client route to a non-client");
        assert_eq!(
            reflected.originator_id,
            Some(Ipv4Addr::new(198, 51, 100, 3))
        );
        assert_eq!(reflected.cluster_list, vec![Ipv4Addr::new(192, 0, 2, 1)]);
        assert!(
            export(
                &route(&[]),
                &from(client(3), 3),
                &client(5),
                PeerId(5),
                &REFLECTOR,
                Family::IPV4_UNICAST
            )
            .is_some()
        );
        assert!(
            export(
                &route(&[]),
                &from(session(64512, 4), 4),
                &client(5),
                PeerId(5),
                &REFLECTOR,
                Family::IPV4_UNICAST
            )
            .is_some()
        );
        assert_eq!(
            export(
                &route(&[]),
                &from(session(64512, 4), 4),
                &session(64512, 6),
                PeerId(6),
                &REFLECTOR,
                Family::IPV4_UNICAST
            ),
            None
        );
        // An ORIGINATOR_ID already set is kept; the cluster id goes in front.
        let twice = PathAttributes {
            originator_id: Some(Ipv4Addr::new(203, 0, 113, 9)),
            cluster_list: vec![Ipv4Addr::new(203, 0, 113, 1)],
            ..route(&[])
        };
        let out = export(
            &twice,
            &from(client(3), 3),
            &client(5),
            PeerId(5),
            &REFLECTOR,
            Family::IPV4_UNICAST,
        )
        .expect("reflected");
        assert_eq!(out.originator_id, Some(Ipv4Addr::new(203, 0, 113, 9)));
        assert_eq!(
            out.cluster_list,
            vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(203, 0, 113, 1)]
        );
    }
}
