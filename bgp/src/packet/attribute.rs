//! Path attributes (RFC 4271 - Section 4.3, 5) and the prefixes UPDATEs carry.
//!
//! `decode_attributes` walks the path attribute field once, classifying each malformed
//! attribute by RFC 7606; `encode_attributes` writes them back in the order RFC 7606 -
//! Section 5.1 and RFC 4271 - Section 5 ask for. Toward a 2-octet AS peer, AS_PATH and
//! AGGREGATOR are split into their 2-octet forms plus AS4_PATH and AS4_AGGREGATOR, and
//! joined again on receipt (RFC 6793 - Section 4.2), so that the rest of the speaker only
//! ever sees 4-octet AS numbers.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::Negotiated;
use super::capability::Family;
use super::consts::{AS_TRANS, afi, attribute_flag as flag, attribute_type as ty, segment_type};
use super::error::{
    AttributeError, AttributeErrorKind, EncodeError, ErrorAction, NlriError, UpdateError,
};

/// ORIGIN (RFC 4271 - Section 5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// The kind of an AS_PATH segment (RFC 4271 - Section 4.3, RFC 5065 - Section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    Set,
    Sequence,
    ConfedSequence,
    ConfedSet,
}

impl SegmentKind {
    fn code(self) -> u8 {
        match self {
            SegmentKind::Set => segment_type::AS_SET,
            SegmentKind::Sequence => segment_type::AS_SEQUENCE,
            SegmentKind::ConfedSequence => segment_type::AS_CONFED_SEQUENCE,
            SegmentKind::ConfedSet => segment_type::AS_CONFED_SET,
        }
    }

    fn from_code(code: u8) -> Option<SegmentKind> {
        match code {
            segment_type::AS_SET => Some(SegmentKind::Set),
            segment_type::AS_SEQUENCE => Some(SegmentKind::Sequence),
            segment_type::AS_CONFED_SEQUENCE => Some(SegmentKind::ConfedSequence),
            segment_type::AS_CONFED_SET => Some(SegmentKind::ConfedSet),
            _ => None,
        }
    }

    fn is_confed(self) -> bool {
        matches!(self, SegmentKind::ConfedSequence | SegmentKind::ConfedSet)
    }
}

/// One AS_PATH segment. The wire caps a segment at 255 AS numbers; a longer one is
/// written as several segments of the same kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub kind: SegmentKind,
    pub asns: Vec<u32>,
}

/// AS_PATH, always with 4-octet AS numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// The length the decision process compares (RFC 4271 - Section 9.1.2.2 (a)): a set
    /// counts one, confederation segments count nothing (RFC 5065 - Section 5.3).
    pub fn length(&self) -> usize {
        self.segments
            .iter()
            .map(|segment| match segment.kind {
                SegmentKind::Sequence => segment.asns.len(),
                SegmentKind::Set => 1,
                SegmentKind::ConfedSequence | SegmentKind::ConfedSet => 0,
            })
            .sum()
    }

    /// Whether any AS number needs four octets (RFC 6793 - Section 4.2.2).
    fn has_four_octet_asn(&self) -> bool {
        self.segments
            .iter()
            .flat_map(|s| &s.asns)
            .any(|&asn| asn > u32::from(u16::MAX))
    }
}

/// AGGREGATOR (RFC 4271 - Section 5.1.7), with a 4-octet AS number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregator {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// A standard community (RFC 1997).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

/// A large community (RFC 8092 - Section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data_1: u32,
    pub local_data_2: u32,
}

/// An attribute this speaker does not recognize, kept to be passed on. RFC 4271 - Section
/// 5: an unrecognized optional transitive attribute is propagated with the Partial bit set,
/// so the decoder sets it on receipt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    /// The upper four flag bits; the Extended Length bit is the encoder's to choose.
    pub flags: u8,
    pub type_code: u8,
    pub value: Vec<u8>,
}

/// The next hop of MP_REACH_NLRI (RFC 4760 - Section 3, RFC 2545 - Section 3 for a
/// link-local IPv6 next hop, RFC 8950 for IPv6 next hops of IPv4 routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextHop {
    V4(Ipv4Addr),
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

/// Prefixes of one address family (unicast).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Prefixes {
    V4(Vec<Ipv4Net>),
    V6(Vec<Ipv6Net>),
}

impl Prefixes {
    pub fn family(&self) -> Family {
        match self {
            Prefixes::V4(_) => Family::IPV4_UNICAST,
            Prefixes::V6(_) => Family::IPV6_UNICAST,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Prefixes::V4(prefixes) => prefixes.len(),
            Prefixes::V6(prefixes) => prefixes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// MP_REACH_NLRI (RFC 4760 - Section 3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpReach {
    pub next_hop: NextHop,
    pub nlri: Prefixes,
}

/// The path attributes of a route: everything in an UPDATE but the prefixes. Hashable,
/// so that the RIB can intern one copy per distinct set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub multi_exit_disc: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    /// Empty means absent: RFC 7606 - Section 7.8 makes an empty COMMUNITIES malformed.
    pub communities: Vec<Community>,
    /// Empty means absent (RFC 8092 - Section 5).
    pub large_communities: Vec<LargeCommunity>,
    pub originator_id: Option<Ipv4Addr>,
    /// Empty means absent (RFC 7606 - Section 7.10).
    pub cluster_list: Vec<Ipv4Addr>,
    pub unknown: Vec<RawAttribute>,
    /// Which recognized optional transitive attributes came with the Partial bit: RFC 4271
    /// - Section 5 forbids clearing it when passing them on.
    pub partial: Partial,
    /// Not a wire attribute: the next hop of a route carried in MP_REACH_NLRI, kept with
    /// its attributes in the RIB so that one interned value says where the route goes.
    /// The decoder leaves it empty (the next hop is in [`MpReach`]) and the encoder
    /// ignores it.
    pub mp_next_hop: Option<NextHop>,
}

/// The Partial bits of the recognized optional transitive attributes (RFC 4271 - Section
/// 4.3: some AS on the way did not recognize them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Partial {
    pub aggregator: bool,
    pub communities: bool,
    pub large_communities: bool,
}

impl PathAttributes {
    /// Where the route goes: the MP_REACH_NLRI next hop's global address when there is
    /// one, else NEXT_HOP.
    pub fn route_next_hop(&self) -> Option<std::net::IpAddr> {
        match self.mp_next_hop {
            Some(NextHop::V6 { global, .. }) => Some(global.into()),
            Some(NextHop::V4(address)) => Some(address.into()),
            None => self.next_hop.map(Into::into),
        }
    }
}

/// What [`decode_attributes`] found besides the path attributes themselves.
#[derive(Debug, Default)]
pub(crate) struct DecodedAttributes {
    pub attributes: PathAttributes,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<Prefixes>,
    pub errors: Vec<AttributeError>,
}

/// A malformed attribute: why, and what RFC 7606 says it costs.
type Malformed = (AttributeErrorKind, ErrorAction);

fn length_error(value: &[u8], action: ErrorAction) -> Malformed {
    (
        AttributeErrorKind::Length {
            length: value.len(),
        },
        action,
    )
}

/// The flags (Optional, Transitive) each recognized attribute must carry (RFC 4271 -
/// Section 5 and each attribute's RFC); `None` for a type this speaker does not recognize.
fn expected_category(type_code: u8) -> Option<u8> {
    match type_code {
        ty::ORIGIN | ty::AS_PATH | ty::NEXT_HOP | ty::LOCAL_PREF | ty::ATOMIC_AGGREGATE => {
            Some(flag::WELL_KNOWN)
        }
        ty::MULTI_EXIT_DISC
        | ty::ORIGINATOR_ID
        | ty::CLUSTER_LIST
        | ty::MP_REACH_NLRI
        | ty::MP_UNREACH_NLRI => Some(flag::OPTIONAL_NON_TRANSITIVE),
        ty::AGGREGATOR
        | ty::COMMUNITIES
        | ty::AS4_PATH
        | ty::AS4_AGGREGATOR
        | ty::LARGE_COMMUNITIES => Some(flag::OPTIONAL_TRANSITIVE),
        _ => None,
    }
}

/// A 256-bit set of the attribute types seen so far.
#[derive(Default)]
struct Seen([u64; 4]);

impl Seen {
    /// Marks `type_code` seen; returns whether it had been seen before.
    fn insert(&mut self, type_code: u8) -> bool {
        let (word, bit) = (usize::from(type_code / 64), type_code % 64);
        let before = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        before
    }

    fn contains(&self, type_code: u8) -> bool {
        self.0[usize::from(type_code / 64)] & (1 << (type_code % 64)) != 0
    }
}

/// The 2-octet-session attributes kept aside until the whole list is read
/// (RFC 6793 - Section 4.2.3).
#[derive(Default)]
struct As4Parts {
    as4_path: Option<AsPath>,
    as4_aggregator: Option<Aggregator>,
}

/// Decodes the path attribute field of an UPDATE.
///
/// Malformed attributes are dropped from the result and listed in `errors` with their RFC
/// 7606 action; an error that requires a session reset ends decoding with `Err`.
/// `has_nlri` says whether the UPDATE's NLRI field is non-empty, which makes NEXT_HOP
/// mandatory (RFC 4271 - Section 5, RFC 4760 - Section 3).
pub(crate) fn decode_attributes(
    mut field: &[u8],
    negotiated: &Negotiated,
    has_nlri: bool,
) -> Result<DecodedAttributes, UpdateError> {
    let mut decoded = DecodedAttributes::default();
    let mut seen = Seen::default();
    let mut as4 = As4Parts::default();

    while !field.is_empty() {
        // RFC 7606 - Section 4: fewer octets than an attribute header, or an attribute
        // whose length overruns the field, is treat-as-withdraw; the total path attribute
        // length still locates the NLRI.
        let Some((flags, type_code, header_len, value_len)) = attribute_header(field) else {
            decoded.errors.push(AttributeError {
                type_code: field.get(1).copied().unwrap_or(0),
                kind: AttributeErrorKind::Overrun,
                action: ErrorAction::TreatAsWithdraw,
                data: field.to_vec(),
            });
            break;
        };
        let whole = &field[..header_len + value_len];
        let value = &whole[header_len..];
        field = &field[header_len + value_len..];

        let error = |kind: AttributeErrorKind, action: ErrorAction| AttributeError {
            type_code,
            kind,
            action,
            data: whole.to_vec(),
        };

        // RFC 7606 - Section 3 (g): MP_REACH_NLRI or MP_UNREACH_NLRI twice resets the
        // session; any other attribute twice keeps its first copy.
        if seen.insert(type_code) {
            if matches!(type_code, ty::MP_REACH_NLRI | ty::MP_UNREACH_NLRI) {
                return Err(UpdateError::DuplicateMultiprotocol { type_code });
            }
            decoded.errors.push(error(
                AttributeErrorKind::Duplicate,
                ErrorAction::AttributeDiscard,
            ));
            continue;
        }

        let Some(category) = expected_category(type_code) else {
            if flags & flag::OPTIONAL == 0 {
                // RFC 4271 - Section 6.3: an unrecognized well-known attribute is an
                // error RFC 7606 leaves as a session reset.
                return Err(UpdateError::Attribute(error(
                    AttributeErrorKind::UnrecognizedWellKnown,
                    ErrorAction::SessionReset,
                )));
            }
            // RFC 4271 - Section 5: unrecognized optional non-transitive attributes are
            // quietly ignored; transitive ones are passed on with the Partial bit set.
            if flags & flag::TRANSITIVE != 0 {
                decoded.attributes.unknown.push(RawAttribute {
                    flags: (flags & flag::DEFINED & !flag::EXTENDED_LENGTH) | flag::PARTIAL,
                    type_code,
                    value: value.to_vec(),
                });
            }
            continue;
        };

        let flags_ok = flags & flag::CATEGORY == category;
        let is_multiprotocol = matches!(type_code, ty::MP_REACH_NLRI | ty::MP_UNREACH_NLRI);
        if !flags_ok {
            // RFC 7606 - Section 3 (c): flags in conflict with the type make the attribute
            // malformed, handled as treat-as-withdraw. The MP attributes are still parsed,
            // since the routes to withdraw are inside them.
            decoded.errors.push(error(
                AttributeErrorKind::Flags { flags },
                ErrorAction::TreatAsWithdraw,
            ));
            if !is_multiprotocol {
                continue;
            }
        }

        let outcome = decode_known(type_code, value, negotiated, &mut decoded, &mut as4);
        if outcome.is_ok() && flags & flag::PARTIAL != 0 {
            let partial = &mut decoded.attributes.partial;
            match type_code {
                ty::AGGREGATOR => partial.aggregator = true,
                ty::COMMUNITIES => partial.communities = true,
                ty::LARGE_COMMUNITIES => partial.large_communities = true,
                _ => {}
            }
        }
        if let Err((kind, action)) = outcome {
            let attribute_error = error(kind, action);
            if action == ErrorAction::SessionReset {
                return Err(UpdateError::Attribute(attribute_error));
            }
            decoded.errors.push(attribute_error);
        }
    }

    if !negotiated.four_octet_as {
        merge_as4(&mut decoded.attributes, as4);
    }

    // RFC 7606 - Section 3 (d): a missing well-known mandatory attribute is treat-as-
    // withdraw. They are mandatory only when the UPDATE announces something (RFC 4271 -
    // Section 5: an UPDATE that only withdraws needs no attributes), and NEXT_HOP only for
    // prefixes in the NLRI field (RFC 4760 - Section 3).
    let announces = has_nlri
        || decoded
            .mp_reach
            .as_ref()
            .is_some_and(|mp| !mp.nlri.is_empty());
    if announces {
        let mut mandatory = vec![ty::ORIGIN, ty::AS_PATH];
        if has_nlri {
            mandatory.push(ty::NEXT_HOP);
        }
        for type_code in mandatory {
            if !seen.contains(type_code) {
                decoded.errors.push(AttributeError {
                    type_code,
                    kind: AttributeErrorKind::Missing,
                    action: ErrorAction::TreatAsWithdraw,
                    data: Vec::new(),
                });
            }
        }
    }
    Ok(decoded)
}

/// Flags, type, header length and value length of the attribute at the front of
/// `field`, or `None` when the header or the value does not fit.
fn attribute_header(field: &[u8]) -> Option<(u8, u8, usize, usize)> {
    let (flags, type_code) = (*field.first()?, *field.get(1)?);
    let (header_len, value_len) = if flags & flag::EXTENDED_LENGTH != 0 {
        (
            4,
            usize::from(u16::from_be_bytes([*field.get(2)?, *field.get(3)?])),
        )
    } else {
        (3, usize::from(*field.get(2)?))
    };
    (field.len() >= header_len + value_len).then_some((flags, type_code, header_len, value_len))
}

fn ipv4(value: &[u8]) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = value.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

fn u32_value(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.try_into().ok()?))
}

/// Decodes one recognized attribute into `decoded` (or, for AS4_PATH and AS4_AGGREGATOR
/// on a 2-octet session, into `as4`).
fn decode_known(
    type_code: u8,
    value: &[u8],
    negotiated: &Negotiated,
    decoded: &mut DecodedAttributes,
    as4: &mut As4Parts,
) -> Result<(), Malformed> {
    use ErrorAction::{AttributeDiscard, SessionReset, TreatAsWithdraw};
    let attributes = &mut decoded.attributes;
    match type_code {
        // RFC 7606 - Section 7.1: wrong length or an undefined value.
        ty::ORIGIN => {
            let origin = match value {
                [0] => Origin::Igp,
                [1] => Origin::Egp,
                [2] => Origin::Incomplete,
                [other] => return Err((AttributeErrorKind::OriginValue(*other), TreatAsWithdraw)),
                _ => return Err(length_error(value, TreatAsWithdraw)),
            };
            attributes.origin = Some(origin);
        }
        // RFC 7606 - Section 7.2.
        ty::AS_PATH => {
            let asn_len = if negotiated.four_octet_as { 4 } else { 2 };
            let path = decode_as_path(value, asn_len)
                .map_err(|reason| (AttributeErrorKind::AsPath(reason), TreatAsWithdraw))?;
            attributes.as_path = Some(path);
        }
        // RFC 7606 - Section 7.3 (the semantic checks need the session: not here).
        ty::NEXT_HOP => {
            attributes.next_hop =
                Some(ipv4(value).ok_or_else(|| length_error(value, TreatAsWithdraw))?);
        }
        // RFC 7606 - Section 7.4.
        ty::MULTI_EXIT_DISC => {
            attributes.multi_exit_disc =
                Some(u32_value(value).ok_or_else(|| length_error(value, TreatAsWithdraw))?);
        }
        // RFC 7606 - Section 7.5 (discarding it from external peers is the session's job).
        ty::LOCAL_PREF => {
            attributes.local_pref =
                Some(u32_value(value).ok_or_else(|| length_error(value, TreatAsWithdraw))?);
        }
        // RFC 7606 - Section 7.6: a wrong length is attribute discard.
        ty::ATOMIC_AGGREGATE => {
            if !value.is_empty() {
                return Err(length_error(value, AttributeDiscard));
            }
            attributes.atomic_aggregate = true;
        }
        // RFC 7606 - Section 7.7: the length is 6 with 2-octet AS numbers, 8 with 4; any
        // other is attribute discard.
        ty::AGGREGATOR => {
            let aggregator = match (negotiated.four_octet_as, value) {
                (false, [a, b, address @ ..]) if address.len() == 4 => {
                    ipv4(address).map(|address| Aggregator {
                        asn: u32::from(u16::from_be_bytes([*a, *b])),
                        address,
                    })
                }
                (true, [a, b, c, d, address @ ..]) if address.len() == 4 => {
                    ipv4(address).map(|address| Aggregator {
                        asn: u32::from_be_bytes([*a, *b, *c, *d]),
                        address,
                    })
                }
                _ => None,
            };
            attributes.aggregator =
                Some(aggregator.ok_or_else(|| length_error(value, AttributeDiscard))?);
        }
        // RFC 7606 - Section 7.8: empty or not a multiple of 4 is treat-as-withdraw.
        ty::COMMUNITIES => {
            if value.is_empty() || !value.len().is_multiple_of(4) {
                return Err(length_error(value, TreatAsWithdraw));
            }
            attributes.communities = value
                .chunks_exact(4)
                .map(|c| Community(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
        }
        // RFC 7606 - Section 7.9.
        ty::ORIGINATOR_ID => {
            attributes.originator_id =
                Some(ipv4(value).ok_or_else(|| length_error(value, TreatAsWithdraw))?);
        }
        // RFC 7606 - Section 7.10: empty or not a multiple of 4 is treat-as-withdraw.
        ty::CLUSTER_LIST => {
            if value.is_empty() || !value.len().is_multiple_of(4) {
                return Err(length_error(value, TreatAsWithdraw));
            }
            attributes.cluster_list = value
                .chunks_exact(4)
                .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                .collect();
        }
        // RFC 8092 - Section 5: empty or not a multiple of 12 is treat-as-withdraw.
        ty::LARGE_COMMUNITIES => {
            if value.is_empty() || !value.len().is_multiple_of(12) {
                return Err(length_error(value, TreatAsWithdraw));
            }
            attributes.large_communities = value
                .chunks_exact(12)
                .map(|c| LargeCommunity {
                    global_admin: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    local_data_1: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                    local_data_2: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                })
                .collect();
        }
        // RFC 7606 - Section 7.11: an MP_REACH_NLRI whose NLRI cannot be read leaves no
        // way to know which routes were meant, so it resets the session. A family this
        // speaker does not speak was never negotiated and is ignored.
        ty::MP_REACH_NLRI => decoded.mp_reach = decode_mp_reach(value)?,
        ty::MP_UNREACH_NLRI => decoded.mp_unreach = decode_mp_unreach(value)?,
        // RFC 6793 - Section 3: a 4-octet AS speaker never sends AS4_PATH or
        // AS4_AGGREGATOR to another; received anyway, they are discarded.
        ty::AS4_PATH | ty::AS4_AGGREGATOR if negotiated.four_octet_as => {
            return Err((AttributeErrorKind::FromFourOctetSpeaker, AttributeDiscard));
        }
        // RFC 6793 - Section 6: a malformed AS4_PATH is discarded; so is one carrying
        // confederation segments, which never leave the confederation.
        ty::AS4_PATH => {
            let path = decode_as_path(value, 4)
                .map_err(|reason| (AttributeErrorKind::AsPath(reason), AttributeDiscard))?;
            if path.segments.iter().any(|s| s.kind.is_confed()) {
                return Err((
                    AttributeErrorKind::AsPath("AS4_PATH carries a confederation segment"),
                    AttributeDiscard,
                ));
            }
            as4.as4_path = Some(path);
        }
        // RFC 6793 - Section 6: a wrong length is attribute discard.
        ty::AS4_AGGREGATOR => {
            let aggregator = match value {
                [a, b, c, d, address @ ..] => ipv4(address).map(|address| Aggregator {
                    asn: u32::from_be_bytes([*a, *b, *c, *d]),
                    address,
                }),
                _ => None,
            };
            as4.as4_aggregator =
                Some(aggregator.ok_or_else(|| length_error(value, AttributeDiscard))?);
        }
        _ => return Err((AttributeErrorKind::UnrecognizedWellKnown, SessionReset)),
    }
    Ok(())
}

/// Reads AS_PATH segments with `asn_len`-octet AS numbers. RFC 7606 - Section 7.2 names
/// the malformations: an unknown segment type, a segment that overruns the attribute, a
/// lone octet after the last segment, a segment of length zero.
fn decode_as_path(mut value: &[u8], asn_len: usize) -> Result<AsPath, &'static str> {
    let mut segments = Vec::new();
    while !value.is_empty() {
        let [code, count, rest @ ..] = value else {
            return Err("one octet left after the last segment");
        };
        let kind = SegmentKind::from_code(*code).ok_or("unknown segment type")?;
        if *count == 0 {
            return Err("segment of length zero");
        }
        let octets = usize::from(*count) * asn_len;
        if rest.len() < octets {
            return Err("segment overruns the attribute");
        }
        let asns = if asn_len == 4 {
            rest[..octets]
                .chunks_exact(4)
                .map(|a| u32::from_be_bytes([a[0], a[1], a[2], a[3]]))
                .collect()
        } else {
            rest[..octets]
                .chunks_exact(2)
                .map(|a| u32::from(u16::from_be_bytes([a[0], a[1]])))
                .collect()
        };
        segments.push(AsSegment { kind, asns });
        value = &rest[octets..];
    }
    Ok(AsPath { segments })
}

/// RFC 6793 - Section 4.2.3: rebuilds the 4-octet AS path and aggregator from what a
/// 2-octet AS peer sent.
fn merge_as4(attributes: &mut PathAttributes, as4: As4Parts) {
    // "If the AGGREGATOR attribute contains an AS number other than AS_TRANS, then ... the
    // AS4_AGGREGATOR attribute and the AS4_PATH attribute (if present) MUST be ignored."
    if let Some(aggregator) = attributes.aggregator {
        if aggregator.asn != u32::from(AS_TRANS) {
            return;
        }
        if let Some(as4_aggregator) = as4.as4_aggregator {
            attributes.aggregator = Some(as4_aggregator);
        }
    }
    let (Some(as_path), Some(as4_path)) = (attributes.as_path.as_mut(), as4.as4_path) else {
        return;
    };
    // "if the number of AS numbers in the AS_PATH attribute is less than the number of AS
    // numbers in the AS4_PATH attribute, then the AS4_PATH attribute SHALL be ignored".
    let (total, tail) = (as_path.length(), as4_path.length());
    if total < tail {
        return;
    }
    // Otherwise the leading AS numbers of AS_PATH (with the confederation segments, which
    // count nothing), then AS4_PATH.
    let mut needed = total - tail;
    let mut merged = Vec::with_capacity(as_path.segments.len() + as4_path.segments.len());
    for segment in std::mem::take(&mut as_path.segments) {
        match segment.kind {
            SegmentKind::ConfedSequence | SegmentKind::ConfedSet => merged.push(segment),
            _ if needed == 0 => break,
            SegmentKind::Set => {
                needed -= 1;
                merged.push(segment);
            }
            SegmentKind::Sequence => {
                let take = needed.min(segment.asns.len());
                needed -= take;
                let mut asns = segment.asns;
                asns.truncate(take);
                merged.push(AsSegment {
                    kind: SegmentKind::Sequence,
                    asns,
                });
            }
        }
    }
    merged.extend(as4_path.segments);
    as_path.segments = merged;
}

/// MP_REACH_NLRI (RFC 4760 - Section 3): AFI, SAFI, next hop length and next hop, a
/// reserved octet, NLRI. `Ok(None)` for a family this speaker does not speak.
fn decode_mp_reach(value: &[u8]) -> Result<Option<MpReach>, Malformed> {
    use ErrorAction::{AttributeDiscard, SessionReset};
    let [a0, a1, safi, next_hop_len, rest @ ..] = value else {
        return Err(length_error(value, SessionReset));
    };
    let family = Family {
        afi: u16::from_be_bytes([*a0, *a1]),
        safi: *safi,
    };
    if family != Family::IPV4_UNICAST && family != Family::IPV6_UNICAST {
        return Err((
            AttributeErrorKind::UnsupportedFamily {
                afi: family.afi,
                safi: family.safi,
            },
            AttributeDiscard,
        ));
    }
    let next_hop_len = usize::from(*next_hop_len);
    // The next hop and the reserved octet must fit.
    if rest.len() < next_hop_len + 1 {
        return Err(length_error(value, SessionReset));
    }
    let (next_hop, rest) = rest.split_at(next_hop_len);
    let nlri = &rest[1..];
    let v6 = |octets: &[u8]| -> Option<Ipv6Addr> {
        Some(Ipv6Addr::from(<[u8; 16]>::try_from(octets).ok()?))
    };
    let next_hop = match (family.afi, next_hop.len()) {
        (afi::IPV4, 4) => ipv4(next_hop).map(NextHop::V4),
        (_, 16) => v6(next_hop).map(|global| NextHop::V6 {
            global,
            link_local: None,
        }),
        (_, 32) => v6(&next_hop[..16])
            .zip(v6(&next_hop[16..]))
            .map(|(global, link_local)| NextHop::V6 {
                global,
                link_local: Some(link_local),
            }),
        _ => None,
    };
    let next_hop = next_hop.ok_or((
        AttributeErrorKind::NextHopLength {
            afi: family.afi,
            length: next_hop_len,
        },
        SessionReset,
    ))?;
    let nlri = decode_prefixes(family, nlri)
        .map_err(|error| (AttributeErrorKind::Nlri(error), SessionReset))?;
    Ok(Some(MpReach { next_hop, nlri }))
}

/// MP_UNREACH_NLRI (RFC 4760 - Section 4): AFI, SAFI, withdrawn routes.
fn decode_mp_unreach(value: &[u8]) -> Result<Option<Prefixes>, Malformed> {
    let [a0, a1, safi, withdrawn @ ..] = value else {
        return Err(length_error(value, ErrorAction::SessionReset));
    };
    let family = Family {
        afi: u16::from_be_bytes([*a0, *a1]),
        safi: *safi,
    };
    if family != Family::IPV4_UNICAST && family != Family::IPV6_UNICAST {
        return Err((
            AttributeErrorKind::UnsupportedFamily {
                afi: family.afi,
                safi: family.safi,
            },
            ErrorAction::AttributeDiscard,
        ));
    }
    let withdrawn = decode_prefixes(family, withdrawn)
        .map_err(|error| (AttributeErrorKind::Nlri(error), ErrorAction::SessionReset))?;
    Ok(Some(withdrawn))
}

fn decode_prefixes(family: Family, field: &[u8]) -> Result<Prefixes, NlriError> {
    if family.afi == afi::IPV4 {
        let mut prefixes = Vec::new();
        decode_ipv4_prefixes(field, &mut prefixes)?;
        Ok(Prefixes::V4(prefixes))
    } else {
        let mut prefixes = Vec::new();
        decode_ipv6_prefixes(field, &mut prefixes)?;
        Ok(Prefixes::V6(prefixes))
    }
}

/// Reads IPv4 prefixes (RFC 4271 - Section 4.3: a length in bits, then just enough
/// octets). Bits past the length are "irrelevant" and cleared, so equal prefixes compare
/// equal. This is the hot loop of route ingest: no allocation per prefix beyond `out`.
pub fn decode_ipv4_prefixes(mut field: &[u8], out: &mut Vec<Ipv4Net>) -> Result<(), NlriError> {
    // A /24 takes four octets, the commonest case: reserve for that.
    out.reserve(field.len() / 4);
    while let [length, rest @ ..] = field {
        let length = *length;
        if length > 32 {
            return Err(NlriError::PrefixTooLong { length, max: 32 });
        }
        let octets = usize::from(length).div_ceil(8);
        let Some(bytes) = rest.get(..octets) else {
            return Err(NlriError::Truncated { length });
        };
        let mut address = [0u8; 4];
        address[..octets].copy_from_slice(bytes);
        let mask = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
        let address = Ipv4Addr::from(u32::from_be_bytes(address) & mask);
        let prefix = Ipv4Net::new(address, length)
            .map_err(|_| NlriError::PrefixTooLong { length, max: 32 })?;
        out.push(prefix);
        field = &rest[octets..];
    }
    Ok(())
}

/// Reads IPv6 prefixes, as [`decode_ipv4_prefixes`] does IPv4 ones.
pub fn decode_ipv6_prefixes(mut field: &[u8], out: &mut Vec<Ipv6Net>) -> Result<(), NlriError> {
    while let [length, rest @ ..] = field {
        let length = *length;
        if length > 128 {
            return Err(NlriError::PrefixTooLong { length, max: 128 });
        }
        let octets = usize::from(length).div_ceil(8);
        let Some(bytes) = rest.get(..octets) else {
            return Err(NlriError::Truncated { length });
        };
        let mut address = [0u8; 16];
        address[..octets].copy_from_slice(bytes);
        let mask = u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0);
        let address = Ipv6Addr::from(u128::from_be_bytes(address) & mask);
        let prefix = Ipv6Net::new(address, length)
            .map_err(|_| NlriError::PrefixTooLong { length, max: 128 })?;
        out.push(prefix);
        field = &rest[octets..];
    }
    Ok(())
}

pub fn encode_ipv4_prefix(prefix: &Ipv4Net, out: &mut Vec<u8>) {
    let length = prefix.prefix_len();
    out.push(length);
    let octets = usize::from(length).div_ceil(8);
    out.extend_from_slice(&prefix.network().octets()[..octets]);
}

pub fn encode_ipv6_prefix(prefix: &Ipv6Net, out: &mut Vec<u8>) {
    let length = prefix.prefix_len();
    out.push(length);
    let octets = usize::from(length).div_ceil(8);
    out.extend_from_slice(&prefix.network().octets()[..octets]);
}

fn encode_prefixes(prefixes: &Prefixes, out: &mut Vec<u8>) {
    match prefixes {
        Prefixes::V4(prefixes) => prefixes.iter().for_each(|p| encode_ipv4_prefix(p, out)),
        Prefixes::V6(prefixes) => prefixes.iter().for_each(|p| encode_ipv6_prefix(p, out)),
    }
}

/// Writes one attribute: flags, type, length (one octet, or two with the Extended Length
/// bit when the value needs it) and the value `write` appends.
fn put_attribute(
    out: &mut Vec<u8>,
    flags: u8,
    type_code: u8,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[flags & !flag::EXTENDED_LENGTH, type_code, 0]);
    write(out)?;
    let length = out.len() - start - 3;
    if let Ok(short) = u8::try_from(length) {
        out[start + 2] = short;
        return Ok(());
    }
    let Ok(long) = u16::try_from(length) else {
        out.truncate(start);
        return Err(EncodeError::AttributeTooLong { type_code, length });
    };
    out[start] |= flag::EXTENDED_LENGTH;
    let [high, low] = long.to_be_bytes();
    out[start + 2] = high;
    out.insert(start + 3, low);
    Ok(())
}

/// Writes AS path segments with 2- or 4-octet AS numbers, splitting segments longer than
/// the 255 AS numbers a segment can hold. With 2 octets, an AS number that needs 4 is
/// written as AS_TRANS (RFC 6793 - Section 4.2.2).
fn put_as_path(path: &AsPath, four_octet: bool, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    for segment in &path.segments {
        if segment.asns.is_empty() {
            return Err(EncodeError::EmptyAsPathSegment);
        }
        for chunk in segment.asns.chunks(255) {
            out.push(segment.kind.code());
            out.push(chunk.len() as u8);
            for &asn in chunk {
                if four_octet {
                    out.extend_from_slice(&asn.to_be_bytes());
                } else {
                    let short = u16::try_from(asn).unwrap_or(AS_TRANS);
                    out.extend_from_slice(&short.to_be_bytes());
                }
            }
        }
    }
    Ok(())
}

/// Writes the path attributes of an UPDATE, MP_UNREACH_NLRI and MP_REACH_NLRI first (RFC
/// 7606 - Section 5.1), the rest in ascending type order (RFC 4271 - Section 5).
pub(crate) fn encode_attributes(
    attributes: &PathAttributes,
    mp_reach: Option<&MpReach>,
    mp_unreach: Option<&Prefixes>,
    negotiated: &Negotiated,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let four_octet = negotiated.four_octet_as;
    if let Some(withdrawn) = mp_unreach {
        put_attribute(
            out,
            flag::OPTIONAL_NON_TRANSITIVE,
            ty::MP_UNREACH_NLRI,
            |out| {
                let family = withdrawn.family();
                out.extend_from_slice(&family.afi.to_be_bytes());
                out.push(family.safi);
                encode_prefixes(withdrawn, out);
                Ok(())
            },
        )?;
    }
    if let Some(reach) = mp_reach {
        put_attribute(
            out,
            flag::OPTIONAL_NON_TRANSITIVE,
            ty::MP_REACH_NLRI,
            |out| {
                let family = reach.nlri.family();
                out.extend_from_slice(&family.afi.to_be_bytes());
                out.push(family.safi);
                match reach.next_hop {
                    NextHop::V4(address) => {
                        out.push(4);
                        out.extend_from_slice(&address.octets());
                    }
                    NextHop::V6 {
                        global,
                        link_local: None,
                    } => {
                        out.push(16);
                        out.extend_from_slice(&global.octets());
                    }
                    NextHop::V6 {
                        global,
                        link_local: Some(link_local),
                    } => {
                        out.push(32);
                        out.extend_from_slice(&global.octets());
                        out.extend_from_slice(&link_local.octets());
                    }
                }
                out.push(0);
                encode_prefixes(&reach.nlri, out);
                Ok(())
            },
        )?;
    }
    if let Some(origin) = attributes.origin {
        put_attribute(out, flag::WELL_KNOWN, ty::ORIGIN, |out| {
            out.push(origin as u8);
            Ok(())
        })?;
    }
    if let Some(path) = &attributes.as_path {
        put_attribute(out, flag::WELL_KNOWN, ty::AS_PATH, |out| {
            put_as_path(path, four_octet, out)
        })?;
    }
    if let Some(next_hop) = attributes.next_hop {
        put_attribute(out, flag::WELL_KNOWN, ty::NEXT_HOP, |out| {
            out.extend_from_slice(&next_hop.octets());
            Ok(())
        })?;
    }
    if let Some(med) = attributes.multi_exit_disc {
        put_attribute(
            out,
            flag::OPTIONAL_NON_TRANSITIVE,
            ty::MULTI_EXIT_DISC,
            |out| {
                out.extend_from_slice(&med.to_be_bytes());
                Ok(())
            },
        )?;
    }
    if let Some(local_pref) = attributes.local_pref {
        put_attribute(out, flag::WELL_KNOWN, ty::LOCAL_PREF, |out| {
            out.extend_from_slice(&local_pref.to_be_bytes());
            Ok(())
        })?;
    }
    if attributes.atomic_aggregate {
        put_attribute(out, flag::WELL_KNOWN, ty::ATOMIC_AGGREGATE, |_| Ok(()))?;
    }
    let partial = |set: bool| if set { flag::PARTIAL } else { 0 };
    if let Some(aggregator) = attributes.aggregator {
        let flags = flag::OPTIONAL_TRANSITIVE | partial(attributes.partial.aggregator);
        put_attribute(out, flags, ty::AGGREGATOR, |out| {
            if four_octet {
                out.extend_from_slice(&aggregator.asn.to_be_bytes());
            } else {
                out.extend_from_slice(
                    &u16::try_from(aggregator.asn)
                        .unwrap_or(AS_TRANS)
                        .to_be_bytes(),
                );
            }
            out.extend_from_slice(&aggregator.address.octets());
            Ok(())
        })?;
    }
    if !attributes.communities.is_empty() {
        let flags = flag::OPTIONAL_TRANSITIVE | partial(attributes.partial.communities);
        put_attribute(out, flags, ty::COMMUNITIES, |out| {
            attributes
                .communities
                .iter()
                .for_each(|c| out.extend_from_slice(&c.0.to_be_bytes()));
            Ok(())
        })?;
    }
    if let Some(originator_id) = attributes.originator_id {
        put_attribute(
            out,
            flag::OPTIONAL_NON_TRANSITIVE,
            ty::ORIGINATOR_ID,
            |out| {
                out.extend_from_slice(&originator_id.octets());
                Ok(())
            },
        )?;
    }
    if !attributes.cluster_list.is_empty() {
        put_attribute(
            out,
            flag::OPTIONAL_NON_TRANSITIVE,
            ty::CLUSTER_LIST,
            |out| {
                attributes
                    .cluster_list
                    .iter()
                    .for_each(|id| out.extend_from_slice(&id.octets()));
                Ok(())
            },
        )?;
    }
    // RFC 6793 - Section 4.2.2: toward a 2-octet AS peer, the path goes in AS4_PATH too
    // when some AS number needs four octets (leaving out confederation segments, Section
    // 6), and an aggregator AS that needs four octets goes in AS4_AGGREGATOR.
    if !four_octet {
        if let Some(path) = attributes
            .as_path
            .as_ref()
            .filter(|path| path.has_four_octet_asn())
        {
            let without_confed = AsPath {
                segments: path
                    .segments
                    .iter()
                    .filter(|s| !s.kind.is_confed())
                    .cloned()
                    .collect(),
            };
            put_attribute(out, flag::OPTIONAL_TRANSITIVE, ty::AS4_PATH, |out| {
                put_as_path(&without_confed, true, out)
            })?;
        }
        if let Some(aggregator) = attributes
            .aggregator
            .filter(|a| a.asn > u32::from(u16::MAX))
        {
            put_attribute(out, flag::OPTIONAL_TRANSITIVE, ty::AS4_AGGREGATOR, |out| {
                out.extend_from_slice(&aggregator.asn.to_be_bytes());
                out.extend_from_slice(&aggregator.address.octets());
                Ok(())
            })?;
        }
    }
    if !attributes.large_communities.is_empty() {
        put_attribute(
            out,
            flag::OPTIONAL_TRANSITIVE | partial(attributes.partial.large_communities),
            ty::LARGE_COMMUNITIES,
            |out| {
                for c in &attributes.large_communities {
                    out.extend_from_slice(&c.global_admin.to_be_bytes());
                    out.extend_from_slice(&c.local_data_1.to_be_bytes());
                    out.extend_from_slice(&c.local_data_2.to_be_bytes());
                }
                Ok(())
            },
        )?;
    }
    for raw in &attributes.unknown {
        put_attribute(out, raw.flags, raw.type_code, |out| {
            out.extend_from_slice(&raw.value);
            Ok(())
        })?;
    }
    Ok(())
}

/// RFC 7606 error classes, one hand-built malformed UPDATE each.
#[cfg(test)]
mod tests {
    use super::super::consts::{error_code, update_subcode};
    use super::super::{DecodeError, Decoded, Message, UpdateField};
    use super::*;

    const FOUR: Negotiated = Negotiated {
        four_octet_as: true,
    };
    const TWO: Negotiated = Negotiated {
        four_octet_as: false,
    };

    /// ORIGIN IGP, AS_PATH [65001] (4-octet), NEXT_HOP 192.0.2.1: a valid set to add to.
    const VALID: [&[u8]; 3] = [
        &[0x40, 1, 1, 0],
        &[0x40, 2, 6, 2, 1, 0, 0, 0xFD, 0xE9],
        &[0x40, 3, 4, 192, 0, 2, 1],
    ];
    /// 198.51.100.0/24.
    const NLRI: &[u8] = &[24, 198, 51, 100];

    fn update(attributes: &[&[u8]], nlri: &[u8]) -> Vec<u8> {
        let attributes: Vec<u8> = attributes.concat();
        let mut wire = vec![0xFF; 16];
        let length = 19 + 2 + 2 + attributes.len() + nlri.len();
        wire.extend_from_slice(&(length as u16).to_be_bytes());
        wire.push(2);
        wire.extend_from_slice(&[0, 0]);
        wire.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
        wire.extend_from_slice(&attributes);
        wire.extend_from_slice(nlri);
        wire
    }

    /// The valid set with `replace` standing in for the attribute at `index` (or added).
    fn with(index: usize, replace: &[u8]) -> Vec<u8> {
        let mut attributes = VALID.to_vec();
        if index < attributes.len() {
            attributes[index] = replace;
        } else {
            attributes.push(replace);
        }
        update(&attributes, NLRI)
    }

    fn decode(wire: &[u8], negotiated: &Negotiated) -> Decoded {
        match Message::decode(wire, negotiated) {
            Ok(decoded) => decoded,
            Err(error) => panic!("expected a usable UPDATE, got {error}"),
        }
    }

    fn attributes(decoded: &Decoded) -> &PathAttributes {
        match &decoded.message {
            Message::Update(update) => &update.attributes,
            other => panic!("expected an UPDATE, got {other:?}"),
        }
    }

    fn session_reset(wire: &[u8], negotiated: &Negotiated) -> DecodeError {
        match Message::decode(wire, negotiated) {
            Ok(decoded) => panic!("expected a session reset, got {decoded:?}"),
            Err(error) => error,
        }
    }

    /// Decodes and checks the one error and the action it implies.
    fn single_error(
        wire: &[u8],
        type_code: u8,
        kind: AttributeErrorKind,
        action: ErrorAction,
    ) -> Decoded {
        let decoded = decode(wire, &FOUR);
        assert_eq!(decoded.errors.len(), 1, "{:?}", decoded.errors);
        assert_eq!(decoded.errors[0].type_code, type_code);
        assert_eq!(decoded.errors[0].kind, kind);
        assert_eq!(decoded.errors[0].action, action);
        assert_eq!(decoded.action(), Some(action));
        decoded
    }

    #[test]
    fn the_valid_base_decodes_without_errors() {
        let decoded = decode(&update(&VALID, NLRI), &FOUR);
        assert!(decoded.errors.is_empty());
        assert_eq!(attributes(&decoded).origin, Some(Origin::Igp));
        assert_eq!(
            attributes(&decoded).next_hop,
            Some(Ipv4Addr::new(192, 0, 2, 1))
        );
    }

    #[test]
    fn origin_with_an_undefined_value_or_wrong_length_is_treat_as_withdraw() {
        let decoded = single_error(
            &with(0, &[0x40, 1, 1, 3]),
            1,
            AttributeErrorKind::OriginValue(3),
            ErrorAction::TreatAsWithdraw,
        );
        assert!(decoded.treat_as_withdraw());
        assert_eq!(attributes(&decoded).origin, None);
        single_error(
            &with(0, &[0x40, 1, 2, 0, 0]),
            1,
            AttributeErrorKind::Length { length: 2 },
            ErrorAction::TreatAsWithdraw,
        );
        // Data for a NOTIFICATION, should the operator prefer one: the whole attribute.
        let error = &decode(&with(0, &[0x40, 1, 1, 3]), &FOUR).errors[0];
        assert_eq!(
            error.notification().subcode,
            update_subcode::INVALID_ORIGIN_ATTRIBUTE
        );
        assert_eq!(error.notification().data, vec![0x40, 1, 1, 3]);
    }

    #[test]
    fn malformed_as_paths_are_treat_as_withdraw() {
        let cases: [(&[u8], &str); 4] = [
            (&[0x40, 2, 2, 2, 0], "segment of length zero"),
            (
                &[0x40, 2, 6, 9, 1, 0, 0, 0xFD, 0xE9],
                "unknown segment type",
            ),
            (
                &[0x40, 2, 6, 2, 2, 0, 0, 0xFD, 0xE9],
                "segment overruns the attribute",
            ),
            (
                &[0x40, 2, 7, 2, 1, 0, 0, 0xFD, 0xE9, 2],
                "one octet left after the last segment",
            ),
        ];
        for (attribute, reason) in cases {
            single_error(
                &with(1, attribute),
                2,
                AttributeErrorKind::AsPath(reason),
                ErrorAction::TreatAsWithdraw,
            );
        }
    }

    #[test]
    fn fixed_length_attributes_of_the_wrong_length_are_treat_as_withdraw() {
        let cases: [(usize, &[u8], u8, usize); 7] = [
            (2, &[0x40, 3, 5, 192, 0, 2, 1, 0], 3, 5),
            (3, &[0x80, 4, 3, 0, 0, 1], 4, 3),
            (3, &[0x40, 5, 0], 5, 0),
            (3, &[0x80, 9, 3, 192, 0, 2], 9, 3),
            (3, &[0xC0, 8, 0], 8, 0),
            (3, &[0xC0, 8, 5, 0, 0, 0, 1, 2], 8, 5),
            (3, &[0x80, 10, 6, 192, 0, 2, 1, 0, 0], 10, 6),
        ];
        for (index, attribute, type_code, length) in cases {
            single_error(
                &with(index, attribute),
                type_code,
                AttributeErrorKind::Length { length },
                ErrorAction::TreatAsWithdraw,
            );
        }
        let large = [&[0xC0, 32, 11][..], &[0; 11][..]].concat();
        single_error(
            &with(3, &large),
            32,
            AttributeErrorKind::Length { length: 11 },
            ErrorAction::TreatAsWithdraw,
        );
    }

    #[test]
    fn atomic_aggregate_and_aggregator_of_the_wrong_length_are_discarded() {
        let decoded = single_error(
            &with(3, &[0x40, 6, 1, 0]),
            6,
            AttributeErrorKind::Length { length: 1 },
            ErrorAction::AttributeDiscard,
        );
        assert!(!decoded.treat_as_withdraw());
        assert!(!attributes(&decoded).atomic_aggregate);
        assert_eq!(attributes(&decoded).origin, Some(Origin::Igp));
        // Six octets is the 2-octet form: wrong on a 4-octet session.
        let aggregator = [0xC0, 7, 6, 0xFD, 0xE9, 192, 0, 2, 9];
        single_error(
            &with(3, &aggregator),
            7,
            AttributeErrorKind::Length { length: 6 },
            ErrorAction::AttributeDiscard,
        );
        let decoded = decode(&with(3, &aggregator), &TWO);
        assert_eq!(
            attributes(&decoded).aggregator,
            Some(Aggregator {
                asn: 65001,
                address: Ipv4Addr::new(192, 0, 2, 9)
            })
        );
    }

    #[test]
    fn flags_that_conflict_with_the_type_are_treat_as_withdraw() {
        // ORIGIN marked optional.
        single_error(
            &with(0, &[0xC0, 1, 1, 0]),
            1,
            AttributeErrorKind::Flags { flags: 0xC0 },
            ErrorAction::TreatAsWithdraw,
        );
        // MED marked transitive.
        single_error(
            &with(3, &[0xC0, 4, 4, 0, 0, 0, 1]),
            4,
            AttributeErrorKind::Flags { flags: 0xC0 },
            ErrorAction::TreatAsWithdraw,
        );
        // The Partial and Extended Length bits are not part of the check.
        let decoded = decode(&with(3, &[0xB0, 4, 0, 4, 0, 0, 0, 1]), &FOUR);
        assert!(decoded.errors.is_empty());
        assert_eq!(attributes(&decoded).multi_exit_disc, Some(1));
    }

    #[test]
    fn a_repeated_attribute_keeps_its_first_copy() {
        let wire = update(
            &[
                VALID[0],
                VALID[1],
                VALID[2],
                &[0x80, 4, 4, 0, 0, 0, 1],
                &[0x80, 4, 4, 0, 0, 0, 2],
            ],
            NLRI,
        );
        let decoded = single_error(
            &wire,
            4,
            AttributeErrorKind::Duplicate,
            ErrorAction::AttributeDiscard,
        );
        assert_eq!(attributes(&decoded).multi_exit_disc, Some(1));
    }

    #[test]
    fn a_repeated_mp_attribute_resets_the_session() {
        let unreach: &[u8] = &[0x80, 15, 3, 0, 2, 1];
        let error = session_reset(&update(&[unreach, unreach], &[]), &FOUR);
        assert_eq!(
            error,
            DecodeError::Update(UpdateError::DuplicateMultiprotocol { type_code: 15 })
        );
        let notification = error.notification();
        assert_eq!(
            (notification.code, notification.subcode),
            (
                error_code::UPDATE_MESSAGE,
                update_subcode::MALFORMED_ATTRIBUTE_LIST
            )
        );
    }

    #[test]
    fn an_unrecognized_well_known_attribute_resets_the_session() {
        let unknown: &[u8] = &[0x40, 100, 2, 7, 7];
        let error = session_reset(&with(3, unknown), &FOUR);
        let notification = error.notification();
        assert_eq!(
            notification.subcode,
            update_subcode::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE
        );
        assert_eq!(notification.data, unknown.to_vec());
    }

    #[test]
    fn unrecognized_optional_attributes_are_passed_on_or_ignored_by_transitivity() {
        let wire = update(
            &[
                VALID[0],
                VALID[1],
                VALID[2],
                &[0xC0, 99, 1, 5],
                &[0x80, 98, 1, 6],
            ],
            NLRI,
        );
        let decoded = decode(&wire, &FOUR);
        assert!(decoded.errors.is_empty());
        assert_eq!(
            attributes(&decoded).unknown,
            vec![RawAttribute {
                flags: 0xE0,
                type_code: 99,
                value: vec![5]
            }]
        );
    }

    #[test]
    fn an_attribute_that_overruns_the_field_is_treat_as_withdraw_and_the_nlri_still_found() {
        // MED declares 9 octets; 4 remain in the attribute field.
        let decoded = single_error(
            &with(3, &[0x80, 4, 9, 0, 0, 0, 1]),
            4,
            AttributeErrorKind::Overrun,
            ErrorAction::TreatAsWithdraw,
        );
        let Message::Update(update) = &decoded.message else {
            panic!("an UPDATE")
        };
        assert_eq!(
            update.nlri,
            vec!["198.51.100.0/24".parse::<Ipv4Net>().expect("literal")]
        );
        // Two octets cannot even hold an attribute header.
        single_error(
            &with(3, &[0x80, 4]),
            4,
            AttributeErrorKind::Overrun,
            ErrorAction::TreatAsWithdraw,
        );
    }

    #[test]
    fn missing_mandatory_attributes_are_treat_as_withdraw_only_when_routes_are_announced() {
        let wire = update(&[VALID[1], VALID[2]], NLRI);
        let decoded = single_error(
            &wire,
            1,
            AttributeErrorKind::Missing,
            ErrorAction::TreatAsWithdraw,
        );
        assert_eq!(decoded.errors[0].notification().data, vec![1]);
        // A withdrawal needs no attributes.
        assert!(decode(&update(&[], &[]), &FOUR).errors.is_empty());
        // NEXT_HOP is not needed when the routes are in MP_REACH_NLRI (RFC 4760 - Section 3).
        let reach: &[u8] = &[
            0x80, 14, 22, 0, 2, 1, 16, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            0, 32, 0x20, 0x01, 0x0d, 0xb8,
        ];
        let mut reach = reach.to_vec();
        reach[2] = (reach.len() - 3) as u8;
        let decoded = decode(&update(&[VALID[0], VALID[1], &reach], &[]), &FOUR);
        assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    }

    #[test]
    fn lengths_that_overrun_the_message_reset_the_session() {
        let mut wire = update(&VALID, NLRI);
        wire[19..21].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(
            session_reset(&wire, &FOUR),
            DecodeError::Update(UpdateError::FieldOverrun {
                field: UpdateField::WithdrawnRoutes
            })
        );
        let mut wire = update(&VALID, NLRI);
        wire[21..23].copy_from_slice(&200u16.to_be_bytes());
        let error = session_reset(&wire, &FOUR);
        assert_eq!(
            error,
            DecodeError::Update(UpdateError::FieldOverrun {
                field: UpdateField::PathAttributes
            })
        );
        assert_eq!(
            error.notification().subcode,
            update_subcode::MALFORMED_ATTRIBUTE_LIST
        );
    }

    #[test]
    fn unparsable_nlri_resets_the_session() {
        let error = session_reset(&update(&VALID, &[33, 1, 2, 3, 4, 5]), &FOUR);
        assert_eq!(
            error.notification().subcode,
            update_subcode::INVALID_NETWORK_FIELD
        );
        let error = session_reset(&update(&VALID, &[24, 1, 2]), &FOUR);
        assert_eq!(
            error,
            DecodeError::Update(UpdateError::InvalidNetworkField {
                field: UpdateField::Nlri,
                error: NlriError::Truncated { length: 24 }
            })
        );
    }

    #[test]
    fn a_malformed_mp_reach_resets_the_session_but_an_unknown_family_is_ignored() {
        // IPv6 with an 8-octet next hop.
        let reach: &[u8] = &[0x80, 14, 13, 0, 2, 1, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let error = session_reset(&update(&[VALID[0], VALID[1], reach], &[]), &FOUR);
        let DecodeError::Update(UpdateError::Attribute(error)) = error else {
            panic!("{error:?}")
        };
        assert_eq!(
            error.kind,
            AttributeErrorKind::NextHopLength { afi: 2, length: 8 }
        );
        // IPv6 with a prefix length of 129.
        let reach: &[u8] = &[
            0x80, 14, 23, 0, 2, 1, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 129, 0,
        ];
        assert!(matches!(
            session_reset(&update(&[VALID[0], VALID[1], reach], &[]), &FOUR),
            DecodeError::Update(UpdateError::Attribute(_))
        ));
        // AFI 1 SAFI 128 (VPN): never negotiated, dropped.
        let reach: &[u8] = &[0x80, 14, 10, 0, 1, 128, 4, 192, 0, 2, 1, 0, 0];
        single_error(
            &with(3, reach),
            14,
            AttributeErrorKind::UnsupportedFamily { afi: 1, safi: 128 },
            ErrorAction::AttributeDiscard,
        );
    }

    #[test]
    fn as4_attributes_from_a_four_octet_speaker_are_discarded() {
        let as4_path: &[u8] = &[0xC0, 17, 6, 2, 1, 0, 1, 0x11, 0x70];
        single_error(
            &with(3, as4_path),
            17,
            AttributeErrorKind::FromFourOctetSpeaker,
            ErrorAction::AttributeDiscard,
        );
    }

    /// A 2-octet peer's AS_PATH [64500 AS_TRANS] and AS4_PATH [64500 70000].
    const TWO_OCTET_PATH: &[u8] = &[0x40, 2, 6, 2, 2, 0xFB, 0xF4, 0x5B, 0xA0];
    const AS4_PATH: &[u8] = &[0xC0, 17, 10, 2, 2, 0, 0, 0xFB, 0xF4, 0, 1, 0x11, 0x70];

    #[test]
    fn a_two_octet_peers_path_is_rebuilt_from_as4_path() {
        let decoded = decode(
            &update(&[VALID[0], TWO_OCTET_PATH, VALID[2], AS4_PATH], NLRI),
            &TWO,
        );
        assert!(decoded.errors.is_empty());
        let expected = AsPath {
            segments: vec![AsSegment {
                kind: SegmentKind::Sequence,
                asns: vec![64500, 70000],
            }],
        };
        assert_eq!(attributes(&decoded).as_path, Some(expected));
        // A 2-octet peer that prepended itself: its AS number leads, from AS_PATH.
        let longer: &[u8] = &[0x40, 2, 8, 2, 3, 0x00, 0x64, 0xFB, 0xF4, 0x5B, 0xA0];
        let decoded = decode(&update(&[VALID[0], longer, VALID[2], AS4_PATH], NLRI), &TWO);
        let expected = AsPath {
            segments: vec![
                AsSegment {
                    kind: SegmentKind::Sequence,
                    asns: vec![100],
                },
                AsSegment {
                    kind: SegmentKind::Sequence,
                    asns: vec![64500, 70000],
                },
            ],
        };
        assert_eq!(attributes(&decoded).as_path, Some(expected));
    }

    #[test]
    fn as4_path_is_ignored_when_an_old_speaker_aggregated_or_it_is_longer() {
        // AGGREGATOR from AS 100, not AS_TRANS: RFC 6793 - Section 4.2.3.
        let aggregator: &[u8] = &[0xC0, 7, 6, 0, 100, 192, 0, 2, 9];
        let decoded = decode(
            &update(
                &[VALID[0], TWO_OCTET_PATH, VALID[2], aggregator, AS4_PATH],
                NLRI,
            ),
            &TWO,
        );
        let path = attributes(&decoded).as_path.clone().expect("present");
        assert_eq!(path.segments[0].asns, vec![64500, u32::from(AS_TRANS)]);
        // AS4_PATH with more AS numbers than AS_PATH.
        let short: &[u8] = &[0x40, 2, 4, 2, 1, 0x5B, 0xA0];
        let decoded = decode(&update(&[VALID[0], short, VALID[2], AS4_PATH], NLRI), &TWO);
        let path = attributes(&decoded).as_path.clone().expect("present");
        assert_eq!(path.segments[0].asns, vec![u32::from(AS_TRANS)]);
    }

    #[test]
    fn as4_aggregator_replaces_an_as_trans_aggregator() {
        let aggregator: &[u8] = &[0xC0, 7, 6, 0x5B, 0xA0, 192, 0, 2, 9];
        let as4_aggregator: &[u8] = &[0xC0, 18, 8, 0, 1, 0x11, 0x70, 192, 0, 2, 9];
        let decoded = decode(
            &update(
                &[
                    VALID[0],
                    TWO_OCTET_PATH,
                    VALID[2],
                    aggregator,
                    as4_aggregator,
                ],
                NLRI,
            ),
            &TWO,
        );
        assert_eq!(
            attributes(&decoded).aggregator,
            Some(Aggregator {
                asn: 70000,
                address: Ipv4Addr::new(192, 0, 2, 9)
            })
        );
        // A malformed AS4_AGGREGATOR is discarded (RFC 6793 - Section 6).
        let bad: &[u8] = &[0xC0, 18, 6, 0, 1, 0x11, 0x70, 192, 0];
        let decoded = decode(
            &update(&[VALID[0], TWO_OCTET_PATH, VALID[2], aggregator, bad], NLRI),
            &TWO,
        );
        assert_eq!(decoded.action(), Some(ErrorAction::AttributeDiscard));
        assert_eq!(
            attributes(&decoded).aggregator.map(|a| a.asn),
            Some(u32::from(AS_TRANS))
        );
    }

    #[test]
    fn toward_a_two_octet_peer_four_octet_numbers_travel_in_as4_attributes() {
        let attributes = PathAttributes {
            as_path: Some(AsPath {
                segments: vec![AsSegment {
                    kind: SegmentKind::Sequence,
                    asns: vec![64500, 70000],
                }],
            }),
            aggregator: Some(Aggregator {
                asn: 70000,
                address: Ipv4Addr::new(192, 0, 2, 9),
            }),
            ..PathAttributes::default()
        };
        let mut wire = Vec::new();
        encode_attributes(&attributes, None, None, &TWO, &mut wire).expect("encodes");
        let expected = [
            TWO_OCTET_PATH,
            &[0xC0, 7, 6, 0x5B, 0xA0, 192, 0, 2, 9],
            AS4_PATH,
            &[0xC0, 18, 8, 0, 1, 0x11, 0x70, 192, 0, 2, 9],
        ]
        .concat();
        assert_eq!(wire, expected);
    }

    #[test]
    fn a_partial_bit_on_a_recognized_transitive_attribute_is_kept_for_passing_on() {
        let decoded = decode(&with(3, &[0xE0, 8, 4, 0xFD, 0xE8, 0, 7]), &FOUR);
        assert!(decoded.errors.is_empty());
        let attributes = attributes(&decoded).clone();
        assert_eq!(
            attributes.partial,
            Partial {
                communities: true,
                ..Partial::default()
            }
        );
        let mut wire = Vec::new();
        encode_attributes(&attributes, None, None, &FOUR, &mut wire).expect("encodes");
        assert!(
            wire.windows(3).any(|w| w == [0xE0, 8, 4]),
            "COMMUNITIES sent without its Partial bit"
        );
    }
}
