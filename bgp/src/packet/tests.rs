//! Property tests of the codec as a whole: encode ∘ decode = id for every message and
//! attribute, and a stable-toolchain fuzzer that feeds random and mutated messages to the
//! decoder.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use super::consts::{AS_TRANS, attribute_type as ty, capability_code, error_code};
use super::*;

fn ipv4_prefix() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0..=32u8).prop_map(|(address, length)| {
        Ipv4Net::new(Ipv4Addr::from(address), length)
            .map(|p| p.trunc())
            .unwrap_or_default()
    })
}

fn ipv6_prefix() -> impl Strategy<Value = Ipv6Net> {
    (any::<u128>(), 0..=128u8).prop_map(|(address, length)| {
        Ipv6Net::new(Ipv6Addr::from(address), length)
            .map(|p| p.trunc())
            .unwrap_or_default()
    })
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

/// AS numbers, often ones that need four octets.
fn asn() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u16>().prop_map(u32::from), any::<u32>()]
}

fn segment(kinds: Vec<SegmentKind>, asn: BoxedStrategy<u32>) -> impl Strategy<Value = AsSegment> {
    (
        proptest::sample::select(kinds),
        proptest::collection::vec(asn, 1..12),
    )
        .prop_map(|(kind, asns)| AsSegment { kind, asns })
}

/// Any AS path a 4-octet session can carry.
fn as_path() -> impl Strategy<Value = AsPath> {
    let kinds = vec![
        SegmentKind::Sequence,
        SegmentKind::Set,
        SegmentKind::ConfedSequence,
        SegmentKind::ConfedSet,
    ];
    proptest::collection::vec(segment(kinds, asn().boxed()), 0..5)
        .prop_map(|segments| AsPath { segments })
}

/// An AS path that survives the 2-octet form plus AS4_PATH (RFC 6793 - Section 4.2):
/// confederation segments first and with 2-octet AS numbers, since AS4_PATH leaves them
/// out and the receiver takes them from AS_PATH.
fn two_octet_as_path() -> impl Strategy<Value = AsPath> {
    let confed = segment(
        vec![SegmentKind::ConfedSequence, SegmentKind::ConfedSet],
        any::<u16>().prop_map(u32::from).boxed(),
    );
    let rest = segment(vec![SegmentKind::Sequence, SegmentKind::Set], asn().boxed());
    (
        proptest::collection::vec(confed, 0..2),
        proptest::collection::vec(rest, 0..4),
    )
        .prop_map(|(mut segments, rest)| {
            segments.extend(rest);
            AsPath { segments }
        })
}

/// Type codes this speaker does not recognize.
fn unknown_type_code() -> impl Strategy<Value = u8> {
    any::<u8>().prop_filter("recognized", |code| {
        !matches!(*code, 1..=10 | 14 | 15 | 17 | 18 | 32)
    })
}

fn path_attributes(four_octet_as: bool) -> impl Strategy<Value = PathAttributes> {
    let path = if four_octet_as {
        as_path().boxed()
    } else {
        two_octet_as_path().boxed()
    };
    // Toward a 2-octet peer an aggregator AS that fits two octets (and is not AS_TRANS)
    // tells the receiver to ignore AS4_PATH (RFC 6793 - Section 4.2.3): generate only
    // those that survive.
    let aggregator_asn = if four_octet_as {
        asn().boxed()
    } else {
        prop_oneof![Just(u32::from(AS_TRANS)), 65536..=u32::MAX].boxed()
    };
    let origin = proptest::option::of(proptest::sample::select(vec![
        Origin::Igp,
        Origin::Egp,
        Origin::Incomplete,
    ]));
    let aggregator = proptest::option::of(
        (aggregator_asn, ipv4()).prop_map(|(asn, address)| Aggregator { asn, address }),
    );
    let communities = proptest::collection::vec(any::<u32>().prop_map(Community), 0..8);
    let large_communities = proptest::collection::vec(
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c)| LargeCommunity {
            global_admin: a,
            local_data_1: b,
            local_data_2: c,
        }),
        0..4,
    );
    let unknown = proptest::collection::btree_map(
        unknown_type_code(),
        proptest::collection::vec(any::<u8>(), 0..40),
        0..3,
    )
    .prop_map(|by_type: BTreeMap<u8, Vec<u8>>| {
        by_type
            .into_iter()
            .map(|(type_code, value)| RawAttribute {
                flags: 0xE0,
                type_code,
                value,
            })
            .collect::<Vec<_>>()
    });
    (
        (
            origin,
            proptest::option::of(path),
            proptest::option::of(ipv4()),
            any::<[bool; 3]>(),
        ),
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            any::<bool>(),
        ),
        (aggregator, communities, large_communities),
        (
            proptest::option::of(ipv4()),
            proptest::collection::vec(ipv4(), 0..4),
            unknown,
        ),
    )
        .prop_map(
            |(
                (origin, as_path, next_hop, partial),
                (multi_exit_disc, local_pref, atomic_aggregate),
                (aggregator, communities, large_communities),
                (originator_id, cluster_list, unknown),
            )| {
                // The Partial bit travels with an attribute: only present ones have it.
                let partial = Partial {
                    aggregator: partial[0] && aggregator.is_some(),
                    communities: partial[1] && !communities.is_empty(),
                    large_communities: partial[2] && !large_communities.is_empty(),
                };
                PathAttributes {
                    origin,
                    as_path,
                    next_hop,
                    multi_exit_disc,
                    local_pref,
                    atomic_aggregate,
                    aggregator,
                    communities,
                    large_communities,
                    originator_id,
                    cluster_list,
                    partial,
                    unknown,
                    mp_next_hop: None,
                }
            },
        )
}

fn prefixes() -> impl Strategy<Value = Prefixes> {
    prop_oneof![
        proptest::collection::vec(ipv4_prefix(), 0..40).prop_map(Prefixes::V4),
        proptest::collection::vec(ipv6_prefix(), 0..40).prop_map(Prefixes::V6),
    ]
}

fn next_hop_v6() -> impl Strategy<Value = NextHop> {
    (ipv6(), proptest::option::of(ipv6()))
        .prop_map(|(global, link_local)| NextHop::V6 { global, link_local })
}

fn mp_reach() -> impl Strategy<Value = MpReach> {
    prop_oneof![
        (
            prop_oneof![ipv4().prop_map(NextHop::V4), next_hop_v6()],
            prefixes_v4()
        )
            .prop_map(|(next_hop, nlri)| MpReach { next_hop, nlri }),
        (
            next_hop_v6(),
            proptest::collection::vec(ipv6_prefix(), 0..40)
        )
            .prop_map(|(next_hop, nlri)| MpReach {
                next_hop,
                nlri: Prefixes::V6(nlri)
            }),
    ]
}

fn prefixes_v4() -> impl Strategy<Value = Prefixes> {
    proptest::collection::vec(ipv4_prefix(), 0..40).prop_map(Prefixes::V4)
}

fn update(four_octet_as: bool) -> impl Strategy<Value = Update> {
    (
        proptest::collection::vec(ipv4_prefix(), 0..60),
        path_attributes(four_octet_as),
        proptest::option::of(mp_reach()),
        proptest::option::of(prefixes()),
        proptest::collection::vec(ipv4_prefix(), 0..60),
    )
        .prop_map(
            |(withdrawn, attributes, mp_reach, mp_unreach, nlri)| Update {
                withdrawn,
                attributes,
                mp_reach,
                mp_unreach,
                nlri,
            },
        )
}

fn capability() -> impl Strategy<Value = Capability> {
    let family = (any::<u16>(), any::<u8>()).prop_map(|(afi, safi)| Family { afi, safi });
    let graceful_restart = (
        any::<bool>(),
        any::<bool>(),
        0..=capability::MAX_RESTART_TIME,
        proptest::collection::vec(
            (family.clone(), any::<bool>()).prop_map(|(family, forwarding_preserved)| {
                GracefulRestartFamily {
                    family,
                    forwarding_preserved,
                }
            }),
            0..4,
        ),
    )
        .prop_map(|(restart_state, notification, restart_time, families)| {
            Capability::GracefulRestart(GracefulRestart {
                restart_state,
                notification,
                restart_time,
                families,
            })
        });
    let unknown = (
        any::<u8>().prop_filter("recognized", |code| {
            ![
                capability_code::MULTIPROTOCOL,
                capability_code::ROUTE_REFRESH,
                capability_code::GRACEFUL_RESTART,
                capability_code::FOUR_OCTET_AS,
            ]
            .contains(code)
        }),
        proptest::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(code, value)| Capability::Unknown { code, value });
    prop_oneof![
        family.prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        graceful_restart,
        any::<u32>().prop_map(Capability::FourOctetAs),
        unknown,
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        any::<u16>(),
        any::<u16>(),
        ipv4(),
        proptest::collection::vec(capability(), 0..8),
    )
        .prop_map(|(my_as, hold_time, bgp_identifier, capabilities)| Open {
            my_as,
            hold_time,
            bgp_identifier,
            capabilities,
        })
}

fn message(four_octet_as: bool) -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update(four_octet_as).prop_map(Message::Update),
        (
            any::<u8>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(
                |(code, subcode, data)| Message::Notification(Notification::new(
                    code, subcode, data
                ))
            ),
        Just(Message::Keepalive),
        (any::<u16>(), any::<u8>()).prop_map(|(afi, safi)| Message::RouteRefresh(RouteRefresh {
            family: Family { afi, safi }
        })),
    ]
}

/// The attribute errors an UPDATE built by the encoder must decode with: only the
/// well-known mandatory attributes it lacks (RFC 7606 - Section 3 (d)).
fn expected_missing(update: &Update) -> Vec<u8> {
    let announces = !update.nlri.is_empty()
        || update
            .mp_reach
            .as_ref()
            .is_some_and(|mp| !mp.nlri.is_empty());
    let mut missing = Vec::new();
    if announces {
        if update.attributes.origin.is_none() {
            missing.push(ty::ORIGIN);
        }
        if update.attributes.as_path.is_none() {
            missing.push(ty::AS_PATH);
        }
        if !update.nlri.is_empty() && update.attributes.next_hop.is_none() {
            missing.push(ty::NEXT_HOP);
        }
    }
    missing
}

fn round_trip(message: &Message, negotiated: &Negotiated) -> Result<(), TestCaseError> {
    let mut wire = Vec::new();
    message
        .encode(negotiated, &mut wire)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(message_length(&wire), Ok(Some(wire.len())));
    let decoded =
        Message::decode(&wire, negotiated).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&decoded.message, message);
    let missing: Vec<u8> = decoded.errors.iter().map(|e| e.type_code).collect();
    let expected = match message {
        Message::Update(update) => expected_missing(update),
        _ => Vec::new(),
    };
    prop_assert_eq!(missing, expected);
    prop_assert!(
        decoded
            .errors
            .iter()
            .all(|e| e.kind == AttributeErrorKind::Missing)
    );
    Ok(())
}

const FOUR_OCTET: Negotiated = Negotiated {
    four_octet_as: true,
};
const TWO_OCTET: Negotiated = Negotiated {
    four_octet_as: false,
};

proptest! {
    #[test]
    fn every_message_round_trips_on_a_four_octet_session(message in message(true)) {
        round_trip(&message, &FOUR_OCTET)?;
    }

    #[test]
    fn every_message_round_trips_on_a_two_octet_session(message in message(false)) {
        round_trip(&message, &TWO_OCTET)?;
    }

    /// Each attribute alone, so that a failure names the attribute.
    #[test]
    fn every_attribute_round_trips_alone(attributes in path_attributes(true), pick in 0usize..12) {
        let mut only = PathAttributes::default();
        match pick {
            0 => only.origin = attributes.origin,
            1 => only.as_path = attributes.as_path,
            2 => only.next_hop = attributes.next_hop,
            3 => only.multi_exit_disc = attributes.multi_exit_disc,
            4 => only.local_pref = attributes.local_pref,
            5 => only.atomic_aggregate = attributes.atomic_aggregate,
            6 => only.aggregator = attributes.aggregator,
            7 => only.communities = attributes.communities,
            8 => only.large_communities = attributes.large_communities,
            9 => only.originator_id = attributes.originator_id,
            10 => only.cluster_list = attributes.cluster_list,
            _ => only.unknown = attributes.unknown,
        }
        for negotiated in [FOUR_OCTET, TWO_OCTET] {
            let update = Update { attributes: only.clone(), ..Update::default() };
            if negotiated == TWO_OCTET && pick == 1 {
                continue; // covered by the two-octet message round trip with its own paths
            }
            round_trip(&Message::Update(update), &negotiated)?;
        }
    }

    /// The packer's messages decode to the prefixes it was given, in order.
    #[test]
    fn packed_updates_carry_every_prefix(
        attributes in path_attributes(true),
        prefixes in proptest::collection::vec(ipv4_prefix(), 0..3000),
    ) {
        let mut wire = Vec::new();
        let count = Update::encode_ipv4_packed(&attributes, &prefixes, &FOUR_OCTET, &mut wire)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut rest = &wire[..];
        let mut seen = Vec::new();
        let mut messages = 0;
        while let Some(length) = message_length(rest).map_err(|e| TestCaseError::fail(e.to_string()))? {
            let decoded = Message::decode(&rest[..length], &FOUR_OCTET)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let Message::Update(update) = decoded.message else {
                return Err(TestCaseError::fail("not an UPDATE"));
            };
            prop_assert_eq!(&update.attributes, &attributes);
            seen.extend(update.nlri);
            rest = &rest[length..];
            messages += 1;
        }
        prop_assert!(rest.is_empty());
        prop_assert_eq!(messages, count);
        prop_assert_eq!(seen, prefixes);
    }
}

proptest! {
    /// The IPv6 packer's messages decode to its prefixes, in order, in MP_REACH_NLRI.
    #[test]
    fn packed_ipv6_updates_carry_every_prefix(
        attributes in path_attributes(true),
        next_hop in next_hop_v6(),
        prefixes in proptest::collection::vec(ipv6_prefix(), 0..1500),
    ) {
        let mut wire = Vec::new();
        let count = Update::encode_ipv6_packed(&attributes, next_hop, &prefixes, &FOUR_OCTET, &mut wire)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut rest = &wire[..];
        let mut seen = Vec::new();
        let mut messages = 0;
        while let Some(length) = message_length(rest).map_err(|e| TestCaseError::fail(e.to_string()))? {
            let decoded = Message::decode(&rest[..length], &FOUR_OCTET)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let Message::Update(update) = decoded.message else {
                return Err(TestCaseError::fail("not an UPDATE"));
            };
            prop_assert_eq!(&update.attributes, &attributes);
            let Some(MpReach { next_hop: carried, nlri: Prefixes::V6(carried_prefixes) }) = update.mp_reach else {
                return Err(TestCaseError::fail("no IPv6 MP_REACH_NLRI"));
            };
            prop_assert_eq!(carried, next_hop);
            seen.extend(carried_prefixes);
            rest = &rest[length..];
            messages += 1;
        }
        prop_assert_eq!(messages, count);
        prop_assert_eq!(seen, prefixes);
    }
}

/// One way to damage a message.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, value: u8 },
    Truncate { at: usize },
    Insert { at: usize, value: u8 },
    Remove { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, 1..=u8::MAX).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (at, any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        at.prop_map(|at| Mutation::Truncate { at }),
        (at, any::<u8>()).prop_map(|(at, value)| Mutation::Insert { at, value }),
        at.prop_map(|at| Mutation::Remove { at }),
    ]
}

fn mutate(wire: &mut Vec<u8>, mutation: &Mutation) {
    if wire.is_empty() {
        return;
    }
    // Past the marker, so most mutations reach the body rather than the framing.
    let at = |at: usize| 16 + at % wire.len().saturating_sub(16).max(1);
    match *mutation {
        Mutation::Flip { at: i, mask } => {
            let i = at(i).min(wire.len() - 1);
            wire[i] ^= mask;
        }
        Mutation::Set { at: i, value } => {
            let i = at(i).min(wire.len() - 1);
            wire[i] = value;
        }
        Mutation::Truncate { at: i } => wire.truncate(at(i)),
        Mutation::Insert { at: i, value } => {
            let i = at(i).min(wire.len());
            wire.insert(i, value);
        }
        Mutation::Remove { at: i } => {
            let i = at(i).min(wire.len() - 1);
            wire.remove(i);
        }
    }
}

/// What must hold for any input: no panic (the test harness catches one), session-reset
/// errors only as `Err`, and a message decoded without errors on a 4-octet session
/// survives being encoded and decoded again unchanged.
fn check_decoder(frame: &[u8]) -> Result<(), TestCaseError> {
    for negotiated in [FOUR_OCTET, TWO_OCTET] {
        // The framing entry point sees the same bytes as a stream would hand it.
        let _ = message_length(frame);
        match Message::decode(frame, &negotiated) {
            Ok(decoded) => {
                prop_assert!(
                    decoded
                        .errors
                        .iter()
                        .all(|e| e.action != ErrorAction::SessionReset)
                );
                if decoded.errors.is_empty() && negotiated == FOUR_OCTET {
                    let mut again = Vec::new();
                    decoded
                        .message
                        .encode(&negotiated, &mut again)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let twice = Message::decode(&again, &negotiated)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(twice.message, decoded.message);
                }
            }
            Err(error) => {
                // Every session reset names a NOTIFICATION to send.
                let notification = error.notification();
                prop_assert!(
                    (error_code::MESSAGE_HEADER..=error_code::UPDATE_MESSAGE)
                        .contains(&notification.code)
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// The stable-toolchain fuzzer: valid messages with a few mutations, with the header
    /// length fixed up half the time so that the damage reaches the body.
    #[test]
    fn mutated_messages_never_break_the_decoder(
        message in message(true),
        mutations in proptest::collection::vec(mutation(), 1..4),
        fix_length in any::<bool>(),
    ) {
        let mut wire = Vec::new();
        message.encode(&FOUR_OCTET, &mut wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for mutation in &mutations {
            mutate(&mut wire, mutation);
        }
        if fix_length && wire.len() >= 19 {
            let length = u16::try_from(wire.len()).unwrap_or(u16::MAX);
            wire[16..18].copy_from_slice(&length.to_be_bytes());
        }
        check_decoder(&wire)?;
    }

    /// Random bodies behind a valid header of each type.
    #[test]
    fn random_bodies_never_break_the_decoder(
        message_type in 1u8..=5,
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut wire = vec![0xFF; 16];
        let length = u16::try_from(19 + body.len()).unwrap_or(u16::MAX);
        wire.extend_from_slice(&length.to_be_bytes());
        wire.push(message_type);
        wire.extend_from_slice(&body);
        check_decoder(&wire)?;
    }

    /// Plain random bytes.
    #[test]
    fn random_bytes_never_break_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_decoder(&bytes)?;
    }
}
