//! BGP messages (RFC 4271 - Section 4) and the framing of a byte stream into them.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::{Ipv4Net, Ipv6Net};

use super::Negotiated;
use super::attribute::{
    MpReach, NextHop, PathAttributes, Prefixes, decode_attributes, decode_ipv4_prefixes,
    encode_attributes, encode_ipv4_prefix,
};
use super::capability::{Capability, Family, decode_capabilities};
use super::consts::{
    AS_TRANS, BGP_VERSION, HEADER_LEN, MAX_MESSAGE_LEN, NOTIFICATION_MIN_LEN, OPEN_MIN_LEN,
    OPT_PARAM_CAPABILITIES, ROUTE_REFRESH_LEN, UPDATE_MIN_LEN, message_type,
};
use super::error::{
    AttributeError, DecodeError, EncodeError, ErrorAction, OpenError, UpdateError, UpdateField,
};

/// OPEN (RFC 4271 - Section 4.2), with its optional parameters reduced to the
/// capabilities they carry (RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field: AS_TRANS when the AS needs 4 octets
    /// (RFC 6793 - Section 4.1); [`Open::asn`] gives the real one.
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_identifier: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN for `asn` that advertises the 4-octet AS capability, as RFC 6793 - Section
    /// 4.1 asks of every speaker that supports it, followed by `capabilities`.
    pub fn new(
        asn: u32,
        hold_time: u16,
        bgp_identifier: Ipv4Addr,
        capabilities: Vec<Capability>,
    ) -> Open {
        let mut all = Vec::with_capacity(capabilities.len() + 1);
        all.push(Capability::FourOctetAs(asn));
        all.extend(
            capabilities
                .into_iter()
                .filter(|c| !matches!(c, Capability::FourOctetAs(_))),
        );
        Open {
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_identifier,
            capabilities: all,
        }
    }

    /// The sender's AS: from the 4-octet AS capability when present (RFC 6793 - Section
    /// 4.1), else the 2-octet field.
    pub fn asn(&self) -> u32 {
        self.four_octet_asn().unwrap_or(u32::from(self.my_as))
    }

    /// The AS number in the 4-octet AS capability, if the sender advertised one.
    pub fn four_octet_asn(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }

    fn decode(body: &[u8]) -> Result<Open, OpenError> {
        let [
            version,
            as0,
            as1,
            hold0,
            hold1,
            id0,
            id1,
            id2,
            id3,
            params_len,
            params @ ..,
        ] = body
        else {
            // The header check guarantees the fixed part; this is for direct callers.
            return Err(OpenError::OptionalParametersLength {
                declared: 0,
                available: 0,
            });
        };
        // RFC 4271 - Section 6.2.
        if *version != BGP_VERSION {
            return Err(OpenError::UnsupportedVersion(*version));
        }
        if usize::from(*params_len) != params.len() {
            return Err(OpenError::OptionalParametersLength {
                declared: usize::from(*params_len),
                available: params.len(),
            });
        }
        let mut capabilities = Vec::new();
        let mut rest = params;
        while !rest.is_empty() {
            let [param_type, length, tail @ ..] = rest else {
                return Err(OpenError::OptionalParameterOverrun);
            };
            let Some(value) = tail.get(..usize::from(*length)) else {
                return Err(OpenError::OptionalParameterOverrun);
            };
            // RFC 5492 - Section 4 replaced every other optional parameter with
            // capabilities; RFC 4271 - Section 6.2 names the error for the rest.
            if *param_type != OPT_PARAM_CAPABILITIES {
                return Err(OpenError::UnsupportedOptionalParameter(*param_type));
            }
            decode_capabilities(value, &mut capabilities)?;
            rest = &tail[usize::from(*length)..];
        }
        Ok(Open {
            my_as: u16::from_be_bytes([*as0, *as1]),
            hold_time: u16::from_be_bytes([*hold0, *hold1]),
            bgp_identifier: Ipv4Addr::new(*id0, *id1, *id2, *id3),
            capabilities,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(BGP_VERSION);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_identifier.octets());
        let params_len_at = out.len();
        out.push(0);
        // Capabilities share Capabilities parameters of at most 255 octets each
        // (RFC 5492 - Section 4 allows one or several per parameter).
        let mut param_start: Option<usize> = None;
        for capability in &self.capabilities {
            let mut encoded = Vec::new();
            capability.encode(&mut encoded)?;
            let fits =
                param_start.is_some_and(|start| out.len() - start - 2 + encoded.len() <= 255);
            if !fits {
                param_start = Some(out.len());
                out.extend_from_slice(&[OPT_PARAM_CAPABILITIES, 0]);
            }
            out.extend_from_slice(&encoded);
            if let Some(start) = param_start {
                out[start + 1] = (out.len() - start - 2) as u8;
            }
        }
        let params_len = out.len() - params_len_at - 1;
        out[params_len_at] = u8::try_from(params_len)
            .map_err(|_| EncodeError::OptionalParametersTooLong(params_len))?;
        Ok(())
    }
}

/// UPDATE (RFC 4271 - Section 4.3) with MP-BGP reachability (RFC 4760).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Net>,
    pub attributes: PathAttributes,
    pub mp_reach: Option<MpReach>,
    /// MP_UNREACH_NLRI; with no prefixes it is the End-of-RIB marker of its family
    /// (RFC 4724 - Section 2).
    pub mp_unreach: Option<Prefixes>,
    pub nlri: Vec<Ipv4Net>,
}

impl Update {
    /// The End-of-RIB marker of `family` (RFC 4724 - Section 2): an empty UPDATE for IPv4
    /// unicast, an empty MP_UNREACH_NLRI for the others.
    pub fn end_of_rib(family: Family) -> Update {
        let mp_unreach = match family {
            Family::IPV4_UNICAST => None,
            _ => Some(Prefixes::V6(Vec::new())),
        };
        Update {
            mp_unreach,
            ..Update::default()
        }
    }

    /// The family this UPDATE marks the end of, if it is an End-of-RIB marker.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        let nothing_else =
            self.withdrawn.is_empty() && self.nlri.is_empty() && self.mp_reach.is_none();
        match &self.mp_unreach {
            _ if !nothing_else => None,
            None if self.attributes == PathAttributes::default() => Some(Family::IPV4_UNICAST),
            Some(prefixes)
                if prefixes.is_empty() && self.attributes == PathAttributes::default() =>
            {
                Some(prefixes.family())
            }
            _ => None,
        }
    }

    fn decode(
        body: &[u8],
        negotiated: &Negotiated,
    ) -> Result<(Update, Vec<AttributeError>), UpdateError> {
        // RFC 4271 - Section 6.3 and RFC 7606 - Section 4: lengths that do not fit the
        // message leave the NLRI unlocatable, which only a session reset answers.
        let overrun = |field| UpdateError::FieldOverrun { field };
        let (withdrawn_len, rest) =
            split_length(body).ok_or(overrun(UpdateField::WithdrawnRoutes))?;
        let (withdrawn_field, rest) =
            split_at_checked(rest, withdrawn_len).ok_or(overrun(UpdateField::WithdrawnRoutes))?;
        let (attributes_len, rest) =
            split_length(rest).ok_or(overrun(UpdateField::PathAttributes))?;
        let (attributes_field, nlri_field) =
            split_at_checked(rest, attributes_len).ok_or(overrun(UpdateField::PathAttributes))?;

        // RFC 7606 - Section 5.3: NLRI that do not parse reset the session.
        let mut withdrawn = Vec::new();
        decode_ipv4_prefixes(withdrawn_field, &mut withdrawn).map_err(|error| {
            UpdateError::InvalidNetworkField {
                field: UpdateField::WithdrawnRoutes,
                error,
            }
        })?;
        let mut nlri = Vec::new();
        decode_ipv4_prefixes(nlri_field, &mut nlri).map_err(|error| {
            UpdateError::InvalidNetworkField {
                field: UpdateField::Nlri,
                error,
            }
        })?;

        let decoded = decode_attributes(attributes_field, negotiated, !nlri.is_empty())?;
        let update = Update {
            withdrawn,
            attributes: decoded.attributes,
            mp_reach: decoded.mp_reach,
            mp_unreach: decoded.mp_unreach,
            nlri,
        };
        Ok((update, decoded.errors))
    }

    fn encode(&self, negotiated: &Negotiated, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let withdrawn_at = out.len();
        out.extend_from_slice(&[0, 0]);
        self.withdrawn
            .iter()
            .for_each(|prefix| encode_ipv4_prefix(prefix, out));
        let withdrawn_len = out.len() - withdrawn_at - 2;
        let attributes_at = out.len();
        out.extend_from_slice(&[0, 0]);
        encode_attributes(
            &self.attributes,
            self.mp_reach.as_ref(),
            self.mp_unreach.as_ref(),
            negotiated,
            out,
        )?;
        let attributes_len = out.len() - attributes_at - 2;
        self.nlri
            .iter()
            .for_each(|prefix| encode_ipv4_prefix(prefix, out));
        // Both lengths are within the message, which the caller checks against 4096.
        let too_long = |length| EncodeError::MessageTooLong {
            length,
            max: MAX_MESSAGE_LEN,
        };
        let withdrawn_len = u16::try_from(withdrawn_len).map_err(|_| too_long(withdrawn_len))?;
        let attributes_len = u16::try_from(attributes_len).map_err(|_| too_long(attributes_len))?;
        out[withdrawn_at..withdrawn_at + 2].copy_from_slice(&withdrawn_len.to_be_bytes());
        out[attributes_at..attributes_at + 2].copy_from_slice(&attributes_len.to_be_bytes());
        Ok(())
    }

    /// Appends to `out` as few UPDATEs as carry `prefixes` with `attributes` in the NLRI
    /// field, the attributes encoded once; returns how many messages were written. This is
    /// how an Adj-RIB-Out full of routes that share attributes goes on the wire.
    pub fn encode_ipv4_packed(
        attributes: &PathAttributes,
        prefixes: &[Ipv4Net],
        negotiated: &Negotiated,
        out: &mut Vec<u8>,
    ) -> Result<usize, EncodeError> {
        let mut encoded_attributes = Vec::new();
        encode_attributes(attributes, None, None, negotiated, &mut encoded_attributes)?;
        let fixed = HEADER_LEN + 4 + encoded_attributes.len();
        // The longest prefix takes 5 octets: at least one must fit.
        if fixed + 5 > MAX_MESSAGE_LEN {
            return Err(EncodeError::MessageTooLong {
                length: fixed + 5,
                max: MAX_MESSAGE_LEN,
            });
        }
        let mut messages = 0;
        let mut remaining = prefixes;
        while !remaining.is_empty() {
            let start = out.len();
            out.extend_from_slice(&[0xFF; 16]);
            out.extend_from_slice(&[0, 0, message_type::UPDATE, 0, 0]);
            out.extend_from_slice(&(encoded_attributes.len() as u16).to_be_bytes());
            out.extend_from_slice(&encoded_attributes);
            let mut taken = 0;
            for prefix in remaining {
                let octets = 1 + usize::from(prefix.prefix_len()).div_ceil(8);
                if out.len() - start + octets > MAX_MESSAGE_LEN {
                    break;
                }
                encode_ipv4_prefix(prefix, out);
                taken += 1;
            }
            let length = (out.len() - start) as u16;
            out[start + 16..start + 18].copy_from_slice(&length.to_be_bytes());
            remaining = &remaining[taken..];
            messages += 1;
        }
        Ok(messages)
    }
}

impl Update {
    /// Appends as few UPDATEs as carry `prefixes` with `attributes` in MP_REACH_NLRI with
    /// `next_hop` (RFC 4760 - Section 3); returns how many messages were written.
    pub fn encode_ipv6_packed(
        attributes: &PathAttributes,
        next_hop: NextHop,
        prefixes: &[Ipv6Net],
        negotiated: &Negotiated,
        out: &mut Vec<u8>,
    ) -> Result<usize, EncodeError> {
        let mut encoded_attributes = Vec::new();
        encode_attributes(attributes, None, None, negotiated, &mut encoded_attributes)?;
        // Header, two length fields, the other attributes, and MP_REACH_NLRI's own
        // header (4, with the extended length), AFI, SAFI, next hop length, next hop (at
        // most 32) and the reserved octet.
        let fixed = HEADER_LEN + 4 + encoded_attributes.len() + 4 + 3 + 1 + 32 + 1;
        let budget = MAX_MESSAGE_LEN
            .checked_sub(fixed)
            .filter(|&b| b >= 17)
            .ok_or(EncodeError::MessageTooLong {
                length: fixed + 17,
                max: MAX_MESSAGE_LEN,
            })?;
        let mut messages = 0;
        let mut remaining = prefixes;
        while !remaining.is_empty() {
            let mut used = 0;
            let taken = remaining
                .iter()
                .take_while(|prefix| {
                    used += 1 + usize::from(prefix.prefix_len()).div_ceil(8);
                    used <= budget
                })
                .count();
            let update = Update {
                attributes: attributes.clone(),
                mp_reach: Some(MpReach {
                    next_hop,
                    nlri: Prefixes::V6(remaining[..taken].to_vec()),
                }),
                ..Update::default()
            };
            Message::Update(update).encode(negotiated, out)?;
            remaining = &remaining[taken..];
            messages += 1;
        }
        Ok(messages)
    }
}

fn split_length(buf: &[u8]) -> Option<(usize, &[u8])> {
    let [high, low, rest @ ..] = buf else {
        return None;
    };
    Some((usize::from(u16::from_be_bytes([*high, *low])), rest))
}

fn split_at_checked(buf: &[u8], at: usize) -> Option<(&[u8], &[u8])> {
    (buf.len() >= at).then(|| buf.split_at(at))
}

/// NOTIFICATION (RFC 4271 - Section 4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
        Notification {
            code,
            subcode,
            data,
        }
    }
}

impl fmt::Display for Notification {
    /// Names the error as RFC 4271 - Section 4.5 and RFC 4486 do, for logs and the peer
    /// table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use super::consts::{cease_subcode as cease, error_code as code};
        let name = match self.code {
            code::MESSAGE_HEADER => "message header error",
            code::OPEN_MESSAGE => "OPEN message error",
            code::UPDATE_MESSAGE => "UPDATE message error",
            code::HOLD_TIMER_EXPIRED => "hold timer expired",
            code::FSM => "finite state machine error",
            code::CEASE => match self.subcode {
                cease::MAXIMUM_PREFIXES_REACHED => "cease: maximum number of prefixes reached",
                cease::ADMINISTRATIVE_SHUTDOWN => "cease: administrative shutdown",
                cease::PEER_DECONFIGURED => "cease: peer de-configured",
                cease::ADMINISTRATIVE_RESET => "cease: administrative reset",
                cease::CONNECTION_REJECTED => "cease: connection rejected",
                cease::OTHER_CONFIGURATION_CHANGE => "cease: other configuration change",
                cease::CONNECTION_COLLISION_RESOLUTION => "cease: connection collision resolution",
                cease::OUT_OF_RESOURCES => "cease: out of resources",
                cease::HARD_RESET => "cease: hard reset",
                _ => "cease",
            },
            code::ROUTE_REFRESH_MESSAGE => "ROUTE-REFRESH message error",
            _ => "unknown error",
        };
        write!(f, "{name} (code {}, subcode {})", self.code, self.subcode)?;
        if !self.data.is_empty() {
            write!(f, ", data")?;
            for octet in &self.data {
                write!(f, " {octet:02x}")?;
            }
        }
        Ok(())
    }
}

/// ROUTE-REFRESH (RFC 2918 - Section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub family: Family,
}

/// A BGP message.
// Nearly every message on an established session is an UPDATE: boxing it would cost an
// allocation per message to save stack space on the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// A decoded message, with the RFC 7606 errors found in it that did not need a session
/// reset (always empty but for UPDATEs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub message: Message,
    pub errors: Vec<AttributeError>,
}

impl Decoded {
    /// The most drastic action the errors call for, if any.
    pub fn action(&self) -> Option<ErrorAction> {
        self.errors.iter().map(|error| error.action).max()
    }

    /// RFC 7606 - Section 2: every route announced in this UPDATE (NLRI field and
    /// MP_REACH_NLRI) must be handled as withdrawn.
    pub fn treat_as_withdraw(&self) -> bool {
        self.action() == Some(ErrorAction::TreatAsWithdraw)
    }
}

/// Checks the header at the front of `buf` and returns the length of the message it
/// starts, or `None` when fewer than 19 octets have arrived. The caller waits for that many
/// octets and hands exactly them to [`Message::decode`].
///
/// RFC 4271 - Section 6.1: the marker must be all ones, the length within the bounds of
/// its type, the type known.
pub fn message_length(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if header[..16].iter().any(|&octet| octet != 0xFF) {
        return Err(DecodeError::ConnectionNotSynchronized);
    }
    let length = u16::from_be_bytes([header[16], header[17]]);
    let message_type = header[18];
    let (min, max) = match message_type {
        message_type::OPEN => (OPEN_MIN_LEN, MAX_MESSAGE_LEN),
        message_type::UPDATE => (UPDATE_MIN_LEN, MAX_MESSAGE_LEN),
        message_type::NOTIFICATION => (NOTIFICATION_MIN_LEN, MAX_MESSAGE_LEN),
        message_type::KEEPALIVE => (HEADER_LEN, HEADER_LEN),
        message_type::ROUTE_REFRESH => (ROUTE_REFRESH_LEN, ROUTE_REFRESH_LEN),
        other => {
            // A length outside the general bounds is reported before the type.
            if usize::from(length) < HEADER_LEN || usize::from(length) > MAX_MESSAGE_LEN {
                return Err(DecodeError::BadMessageLength {
                    length,
                    message_type: other,
                });
            }
            return Err(DecodeError::BadMessageType(other));
        }
    };
    if !(min..=max).contains(&usize::from(length)) {
        return Err(DecodeError::BadMessageLength {
            length,
            message_type,
        });
    }
    Ok(Some(usize::from(length)))
}

impl Message {
    /// Decodes one whole message (header included). Never panics, whatever the bytes.
    pub fn decode(frame: &[u8], negotiated: &Negotiated) -> Result<Decoded, DecodeError> {
        let length = message_length(frame)?.ok_or(DecodeError::BadMessageLength {
            length: u16::try_from(frame.len()).unwrap_or(u16::MAX),
            message_type: 0,
        })?;
        let message_type = frame[18];
        if length != frame.len() {
            return Err(DecodeError::BadMessageLength {
                length: u16::try_from(frame.len()).unwrap_or(u16::MAX),
                message_type,
            });
        }
        let body = &frame[HEADER_LEN..];
        let decoded = |message| Decoded {
            message,
            errors: Vec::new(),
        };
        Ok(match message_type {
            message_type::OPEN => decoded(Message::Open(Open::decode(body)?)),
            message_type::UPDATE => {
                let (update, errors) = Update::decode(body, negotiated)?;
                Decoded {
                    message: Message::Update(update),
                    errors,
                }
            }
            message_type::NOTIFICATION => {
                let (code, subcode, data) = match body {
                    [code, subcode, data @ ..] => (*code, *subcode, data.to_vec()),
                    _ => {
                        return Err(DecodeError::BadMessageLength {
                            length: length as u16,
                            message_type,
                        });
                    }
                };
                decoded(Message::Notification(Notification {
                    code,
                    subcode,
                    data,
                }))
            }
            message_type::KEEPALIVE => decoded(Message::Keepalive),
            message_type::ROUTE_REFRESH => match *body {
                // RFC 2918 - Section 3: AFI, a reserved octet, SAFI.
                [a0, a1, _reserved, safi] => decoded(Message::RouteRefresh(RouteRefresh {
                    family: Family {
                        afi: u16::from_be_bytes([a0, a1]),
                        safi,
                    },
                })),
                _ => {
                    return Err(DecodeError::BadMessageLength {
                        length: length as u16,
                        message_type,
                    });
                }
            },
            other => return Err(DecodeError::BadMessageType(other)),
        })
    }

    pub fn message_type(&self) -> u8 {
        match self {
            Message::Open(_) => message_type::OPEN,
            Message::Update(_) => message_type::UPDATE,
            Message::Notification(_) => message_type::NOTIFICATION,
            Message::Keepalive => message_type::KEEPALIVE,
            Message::RouteRefresh(_) => message_type::ROUTE_REFRESH,
        }
    }

    /// Appends the message, header included, to `out`. On error `out` is as it was.
    pub fn encode(&self, negotiated: &Negotiated, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0xFF; 16]);
        out.extend_from_slice(&[0, 0, self.message_type()]);
        let result = match self {
            Message::Open(open) => open.encode(out),
            Message::Update(update) => update.encode(negotiated, out),
            Message::Notification(notification) => {
                out.push(notification.code);
                out.push(notification.subcode);
                out.extend_from_slice(&notification.data);
                Ok(())
            }
            Message::Keepalive => Ok(()),
            Message::RouteRefresh(refresh) => {
                out.extend_from_slice(&refresh.family.afi.to_be_bytes());
                out.push(0);
                out.push(refresh.family.safi);
                Ok(())
            }
        };
        let length = out.len() - start;
        let result = result.and_then(|()| {
            (length <= MAX_MESSAGE_LEN)
                .then_some(())
                .ok_or(EncodeError::MessageTooLong {
                    length,
                    max: MAX_MESSAGE_LEN,
                })
        });
        match result {
            Ok(()) => {
                out[start + 16..start + 18].copy_from_slice(&(length as u16).to_be_bytes());
                Ok(())
            }
            Err(error) => {
                out.truncate(start);
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::consts::{error_code, header_subcode, open_subcode};
    use super::*;

    const NEGOTIATED: Negotiated = Negotiated {
        four_octet_as: true,
    };

    fn header(length: u16, message_type: u8) -> Vec<u8> {
        let mut wire = vec![0xFF; 16];
        wire.extend_from_slice(&length.to_be_bytes());
        wire.push(message_type);
        wire
    }

    fn notification_of(wire: &[u8]) -> Notification {
        match Message::decode(wire, &NEGOTIATED) {
            Ok(decoded) => panic!("expected an error, got {decoded:?}"),
            Err(error) => error.notification(),
        }
    }

    #[test]
    fn framing_waits_for_a_whole_header() {
        assert_eq!(message_length(&[0xFF; 18]), Ok(None));
        assert_eq!(
            message_length(&header(19, message_type::KEEPALIVE)),
            Ok(Some(19))
        );
    }

    #[test]
    fn header_errors_name_their_subcode_and_data() {
        let mut wire = header(19, message_type::KEEPALIVE);
        wire[3] = 0;
        let notification = notification_of(&wire);
        assert_eq!(
            (notification.code, notification.subcode),
            (
                error_code::MESSAGE_HEADER,
                header_subcode::CONNECTION_NOT_SYNCHRONIZED
            )
        );
        // RFC 4271 - Section 6.1: a KEEPALIVE of 20 octets; the data is the length field.
        let mut wire = header(20, message_type::KEEPALIVE);
        wire.push(0);
        let notification = notification_of(&wire);
        assert_eq!(notification.subcode, header_subcode::BAD_MESSAGE_LENGTH);
        assert_eq!(notification.data, vec![0, 20]);
        // Too short for an OPEN, too long for anything.
        assert_eq!(
            notification_of(&header(19, message_type::OPEN)).subcode,
            header_subcode::BAD_MESSAGE_LENGTH
        );
        assert_eq!(
            message_length(&header(4097, message_type::UPDATE)),
            Err(DecodeError::BadMessageLength {
                length: 4097,
                message_type: message_type::UPDATE
            })
        );
        let notification = notification_of(&header(19, 9));
        assert_eq!(
            (notification.subcode, notification.data),
            (header_subcode::BAD_MESSAGE_TYPE, vec![9])
        );
        // A frame that is not the length its header says.
        let mut wire = header(19, message_type::KEEPALIVE);
        wire.push(0);
        assert_eq!(
            notification_of(&wire).subcode,
            header_subcode::BAD_MESSAGE_LENGTH
        );
    }

    fn open_wire(version: u8, params: &[u8]) -> Vec<u8> {
        let mut wire = header((29 + params.len()) as u16, message_type::OPEN);
        wire.extend_from_slice(&[version, 0xFD, 0xE8, 0, 90, 192, 0, 2, 1, params.len() as u8]);
        wire.extend_from_slice(params);
        wire
    }

    #[test]
    fn open_errors_name_their_subcode_and_data() {
        let notification = notification_of(&open_wire(3, &[]));
        assert_eq!(
            (notification.code, notification.subcode, notification.data),
            (
                error_code::OPEN_MESSAGE,
                open_subcode::UNSUPPORTED_VERSION_NUMBER,
                vec![0, 4]
            )
        );
        // Optional parameter type 1 (authentication, withdrawn by RFC 5492).
        assert_eq!(
            notification_of(&open_wire(4, &[1, 1, 0])).subcode,
            open_subcode::UNSUPPORTED_OPTIONAL_PARAMETER
        );
        // A parameter that overruns, a capability that overruns its parameter.
        assert_eq!(
            notification_of(&open_wire(4, &[2, 5, 65, 4])).subcode,
            open_subcode::UNSPECIFIC
        );
        assert_eq!(
            notification_of(&open_wire(4, &[2, 2, 65, 4])).subcode,
            open_subcode::UNSPECIFIC
        );
        // The parameters length disagrees with the message length.
        let mut wire = open_wire(4, &[2, 0]);
        wire[28] = 1;
        assert_eq!(notification_of(&wire).subcode, open_subcode::UNSPECIFIC);
    }

    #[test]
    fn an_open_decodes_capabilities_from_several_parameters() {
        let params = [2, 6, 65, 4, 0, 1, 0x11, 0x70, 2, 2, 2, 0];
        let decoded = Message::decode(&open_wire(4, &params), &NEGOTIATED).expect("valid OPEN");
        let Message::Open(open) = decoded.message else {
            panic!("an OPEN")
        };
        assert_eq!(
            open.capabilities,
            vec![Capability::FourOctetAs(70000), Capability::RouteRefresh]
        );
        assert_eq!(open.asn(), 70000);
        assert_eq!(open.hold_time, 90);
    }

    #[test]
    fn open_new_puts_a_four_octet_as_in_the_capability_and_as_trans_in_the_field() {
        let open = Open::new(
            4_200_000_000,
            90,
            Ipv4Addr::new(192, 0, 2, 1),
            vec![Capability::RouteRefresh],
        );
        assert_eq!(open.my_as, AS_TRANS);
        assert_eq!(open.asn(), 4_200_000_000);
        assert_eq!(open.capabilities[0], Capability::FourOctetAs(4_200_000_000));
        let open = Open::new(64512, 90, Ipv4Addr::new(192, 0, 2, 1), Vec::new());
        assert_eq!((open.my_as, open.asn()), (64512, 64512));
    }

    #[test]
    fn end_of_rib_markers_are_recognized_per_family() {
        for family in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
            let marker = Update::end_of_rib(family);
            assert_eq!(marker.end_of_rib_family(), Some(family));
            let mut wire = Vec::new();
            Message::Update(marker)
                .encode(&NEGOTIATED, &mut wire)
                .expect("encodes");
            let Message::Update(decoded) = Message::decode(&wire, &NEGOTIATED)
                .expect("decodes")
                .message
            else {
                panic!("an UPDATE")
            };
            assert_eq!(decoded.end_of_rib_family(), Some(family));
        }
        // RFC 4271 - Section 4.3: the empty UPDATE is 23 octets.
        let mut wire = Vec::new();
        Message::Update(Update::end_of_rib(Family::IPV4_UNICAST))
            .encode(&NEGOTIATED, &mut wire)
            .expect("encodes");
        assert_eq!(wire.len(), 23);
        let withdrawal = Update {
            withdrawn: vec!["192.0.2.0/24".parse().expect("literal")],
            ..Update::default()
        };
        assert_eq!(withdrawal.end_of_rib_family(), None);
    }

    #[test]
    fn a_message_too_long_is_refused_and_leaves_the_buffer_as_it_was() {
        let notification = Notification::new(error_code::CEASE, 2, vec![0; 4096]);
        let mut wire = vec![1, 2, 3];
        let error = Message::Notification(notification).encode(&NEGOTIATED, &mut wire);
        assert_eq!(
            error,
            Err(EncodeError::MessageTooLong {
                length: 4096 + 21,
                max: 4096
            })
        );
        assert_eq!(wire, vec![1, 2, 3]);
    }

    #[test]
    fn notifications_read_as_the_rfc_names_them() {
        let notification = Notification::new(error_code::CEASE, 2, vec![]);
        assert_eq!(
            notification.to_string(),
            "cease: administrative shutdown (code 6, subcode 2)"
        );
        let notification = Notification::new(error_code::MESSAGE_HEADER, 2, vec![0, 20]);
        assert_eq!(
            notification.to_string(),
            "message header error (code 1, subcode 2), data 00 14"
        );
    }
}
