//! Path attributes (RFC 4271 - Section 4.3, 5) and the prefixes UPDATEs carry.
//!
//! [`decode_attributes`] walks the path attribute field once, classifying each malformed
//! attribute by RFC 7606; [`encode_attributes`] writes them back in the order RFC 7606 -
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

        if let Err((kind, action)) =
            decode_known(type_code, value, negotiated, &mut decoded, &mut as4)
        {
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
            if value.is_empty() || value.len() % 4 != 0 {
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
            if value.is_empty() || value.len() % 4 != 0 {
                return Err(length_error(value, TreatAsWithdraw));
            }
            attributes.cluster_list = value
                .chunks_exact(4)
                .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                .collect();
        }
        // RFC 8092 - Section 5: empty or not a multiple of 12 is treat-as-withdraw.
        ty::LARGE_COMMUNITIES => {
            if value.is_empty() || value.len() % 12 != 0 {
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
    if let Some(aggregator) = attributes.aggregator {
        put_attribute(out, flag::OPTIONAL_TRANSITIVE, ty::AGGREGATOR, |out| {
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
        put_attribute(out, flag::OPTIONAL_TRANSITIVE, ty::COMMUNITIES, |out| {
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
            flag::OPTIONAL_TRANSITIVE,
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
