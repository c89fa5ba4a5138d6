//! What can be wrong with a message, and what the receiver must do about it.
//!
//! RFC 7606 - Section 2 grades an error in an UPDATE by the least drastic action that keeps
//! the routing state correct: discard the attribute, treat the UPDATE's routes as withdrawn,
//! or reset the session. The decoder returns an [`AttributeError`] (with its
//! [`ErrorAction`]) for each of the first two and keeps going; anything that needs a
//! session reset ends decoding with a [`DecodeError`], which names the NOTIFICATION to send.

use std::fmt;

use super::consts::{error_code, header_subcode, open_subcode, update_subcode};
use super::message::Notification;

/// What the receiver does about a malformed part of an UPDATE, least drastic first
/// (RFC 7606 - Section 2), so that `max` picks the action an UPDATE as a whole needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorAction {
    /// Drop the attribute and use the rest of the UPDATE as if it had not been there.
    AttributeDiscard,
    /// Handle every route the UPDATE announces as if it had been withdrawn.
    TreatAsWithdraw,
    /// Send a NOTIFICATION and close the session (RFC 4271 - Section 6).
    SessionReset,
}

impl fmt::Display for ErrorAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorAction::AttributeDiscard => "attribute discarded",
            ErrorAction::TreatAsWithdraw => "routes treated as withdrawn",
            ErrorAction::SessionReset => "session reset",
        })
    }
}

/// Why one path attribute was found malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeErrorKind {
    #[error("flags {flags:#04x} conflict with the attribute type")]
    Flags { flags: u8 },
    #[error("length {length} is not valid for this attribute")]
    Length { length: usize },
    #[error("ORIGIN value {0} is undefined")]
    OriginValue(u8),
    #[error("malformed AS path: {0}")]
    AsPath(&'static str),
    #[error("the attribute overruns the path attributes")]
    Overrun,
    #[error("the attribute appears more than once; later copies are ignored")]
    Duplicate,
    #[error("sent by a 4-octet AS speaker, which must not send it")]
    FromFourOctetSpeaker,
    #[error("well-known attribute type is not recognized")]
    UnrecognizedWellKnown,
    #[error("well-known mandatory attribute is missing")]
    Missing,
    #[error("address family AFI {afi} SAFI {safi} is not supported")]
    UnsupportedFamily { afi: u16, safi: u8 },
    #[error("next hop length {length} is not valid for AFI {afi}")]
    NextHopLength { afi: u16, length: usize },
    #[error("NLRI: {0}")]
    Nlri(NlriError),
}

/// One malformed path attribute, and what it costs the UPDATE that carried it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path attribute {type_code}: {kind} ({action})")]
pub struct AttributeError {
    pub type_code: u8,
    pub kind: AttributeErrorKind,
    pub action: ErrorAction,
    /// The attribute as received (flags, type, length, value), for a NOTIFICATION's data
    /// field (RFC 4271 - Section 6.3). Empty for a missing attribute.
    pub data: Vec<u8>,
}

impl AttributeError {
    /// The NOTIFICATION RFC 4271 - Section 6.3 names for this error, should it reset the
    /// session.
    pub fn notification(&self) -> Notification {
        use AttributeErrorKind as K;
        let subcode = match &self.kind {
            K::Flags { .. } => update_subcode::ATTRIBUTE_FLAGS_ERROR,
            K::Length { .. } | K::Overrun => update_subcode::ATTRIBUTE_LENGTH_ERROR,
            K::OriginValue(_) => update_subcode::INVALID_ORIGIN_ATTRIBUTE,
            K::AsPath(_) => update_subcode::MALFORMED_AS_PATH,
            K::Duplicate => update_subcode::MALFORMED_ATTRIBUTE_LIST,
            K::UnrecognizedWellKnown => update_subcode::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
            K::Missing => update_subcode::MISSING_WELL_KNOWN_ATTRIBUTE,
            K::NextHopLength { .. } => update_subcode::INVALID_NEXT_HOP_ATTRIBUTE,
            K::FromFourOctetSpeaker | K::UnsupportedFamily { .. } | K::Nlri(_) => {
                update_subcode::OPTIONAL_ATTRIBUTE_ERROR
            }
        };
        // RFC 4271 - Section 6.3: a missing attribute is reported by its type code alone.
        let data = if self.kind == K::Missing {
            vec![self.type_code]
        } else {
            self.data.clone()
        };
        Notification::new(error_code::UPDATE_MESSAGE, subcode, data)
    }
}

/// Why a run of NLRI (prefixes) does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NlriError {
    #[error("prefix length {length} exceeds {max}")]
    PrefixTooLong { length: u8, max: u8 },
    #[error("prefix of length {length} overruns the field")]
    Truncated { length: u8 },
}

/// Which part of an UPDATE a framing error is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateField {
    WithdrawnRoutes,
    PathAttributes,
    Nlri,
}

impl fmt::Display for UpdateField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpdateField::WithdrawnRoutes => "withdrawn routes",
            UpdateField::PathAttributes => "path attributes",
            UpdateField::Nlri => "NLRI",
        })
    }
}

/// An UPDATE error that RFC 7606 still answers with a session reset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// RFC 7606 - Section 4: the withdrawn routes length or the total path attribute
    /// length does not fit the message, so the NLRI cannot be located.
    #[error("{field} length overruns the message")]
    FieldOverrun { field: UpdateField },
    /// RFC 7606 - Section 5.3: NLRI that do not parse leave no reliable way to know which
    /// routes were meant.
    #[error("{field}: {error}")]
    InvalidNetworkField {
        field: UpdateField,
        error: NlriError,
    },
    /// RFC 7606 - Section 3 (g): MP_REACH_NLRI or MP_UNREACH_NLRI more than once.
    #[error("path attribute {type_code} appears more than once")]
    DuplicateMultiprotocol { type_code: u8 },
    /// An attribute error whose action is a session reset (an unrecognized well-known
    /// attribute, a malformed MP_REACH_NLRI or MP_UNREACH_NLRI).
    #[error(transparent)]
    Attribute(AttributeError),
}

impl UpdateError {
    pub fn notification(&self) -> Notification {
        match self {
            UpdateError::FieldOverrun { .. } | UpdateError::DuplicateMultiprotocol { .. } => {
                Notification::new(
                    error_code::UPDATE_MESSAGE,
                    update_subcode::MALFORMED_ATTRIBUTE_LIST,
                    Vec::new(),
                )
            }
            UpdateError::InvalidNetworkField { .. } => Notification::new(
                error_code::UPDATE_MESSAGE,
                update_subcode::INVALID_NETWORK_FIELD,
                Vec::new(),
            ),
            UpdateError::Attribute(error) => error.notification(),
        }
    }
}

/// Why an OPEN does not parse (RFC 4271 - Section 6.2, RFC 5492 - Section 3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("BGP version {0} is not supported (only 4 is)")]
    UnsupportedVersion(u8),
    #[error("optional parameter type {0} is not supported")]
    UnsupportedOptionalParameter(u8),
    #[error("optional parameters length {declared} does not match the {available} octets present")]
    OptionalParametersLength { declared: usize, available: usize },
    #[error("optional parameter overruns the parameters field")]
    OptionalParameterOverrun,
    #[error("capability {code} overruns its parameter")]
    CapabilityOverrun { code: u8 },
    #[error("capability {code} has invalid length {length}")]
    CapabilityLength { code: u8, length: usize },
}

impl OpenError {
    pub fn notification(&self) -> Notification {
        let (subcode, data) = match self {
            // RFC 4271 - Section 6.2: the data is the largest locally supported version.
            OpenError::UnsupportedVersion(_) => {
                (open_subcode::UNSUPPORTED_VERSION_NUMBER, vec![0, 4])
            }
            OpenError::UnsupportedOptionalParameter(_) => {
                (open_subcode::UNSUPPORTED_OPTIONAL_PARAMETER, Vec::new())
            }
            OpenError::OptionalParametersLength { .. }
            | OpenError::OptionalParameterOverrun
            | OpenError::CapabilityOverrun { .. }
            | OpenError::CapabilityLength { .. } => (open_subcode::UNSPECIFIC, Vec::new()),
        };
        Notification::new(error_code::OPEN_MESSAGE, subcode, data)
    }
}

/// A message that cannot be used: the session must be reset with
/// [`DecodeError::notification`] (RFC 4271 - Section 6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message header marker is not all ones")]
    ConnectionNotSynchronized,
    #[error("message length {length} is not valid for message type {message_type}")]
    BadMessageLength { length: u16, message_type: u8 },
    #[error("message type {0} is not recognized")]
    BadMessageType(u8),
    #[error("OPEN: {0}")]
    Open(#[from] OpenError),
    #[error("UPDATE: {0}")]
    Update(#[from] UpdateError),
}

impl DecodeError {
    /// The NOTIFICATION that tells the peer what was wrong.
    pub fn notification(&self) -> Notification {
        match self {
            DecodeError::ConnectionNotSynchronized => Notification::new(
                error_code::MESSAGE_HEADER,
                header_subcode::CONNECTION_NOT_SYNCHRONIZED,
                Vec::new(),
            ),
            // RFC 4271 - Section 6.1: the data is the erroneous Length field.
            DecodeError::BadMessageLength { length, .. } => Notification::new(
                error_code::MESSAGE_HEADER,
                header_subcode::BAD_MESSAGE_LENGTH,
                length.to_be_bytes().to_vec(),
            ),
            // RFC 4271 - Section 6.1: the data is the erroneous Type field.
            DecodeError::BadMessageType(message_type) => Notification::new(
                error_code::MESSAGE_HEADER,
                header_subcode::BAD_MESSAGE_TYPE,
                vec![*message_type],
            ),
            DecodeError::Open(error) => error.notification(),
            DecodeError::Update(error) => error.notification(),
        }
    }
}

/// A value the encoder cannot put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message of {length} octets exceeds the maximum of {max}")]
    MessageTooLong { length: usize, max: usize },
    #[error("OPEN optional parameters of {0} octets exceed 255")]
    OptionalParametersTooLong(usize),
    #[error("capability {code} value of {length} octets exceeds 255")]
    CapabilityTooLong { code: u8, length: usize },
    #[error("path attribute {type_code} value of {length} octets exceeds 65535")]
    AttributeTooLong { type_code: u8, length: usize },
    #[error("AS path segment is empty")]
    EmptyAsPathSegment,
    #[error("{0} prefixes cannot be carried in one UPDATE")]
    TooManyPrefixes(usize),
}
