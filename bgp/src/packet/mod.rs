//! The BGP-4 wire codec: bytes to [`Message`] values and back, and nothing else.
//!
//! - [`message`]: the header and the five message types; framing a byte stream;
//! - [`attribute`]: path attributes and prefixes, with RFC 7606 error classification;
//! - [`capability`]: OPEN capabilities and address families;
//! - [`error`]: what can be wrong and what the receiver must do about it;
//! - [`consts`]: the numbers from the IANA registries.

pub mod attribute;
pub mod capability;
pub mod consts;
pub mod error;
pub mod message;

#[cfg(test)]
mod tests;

pub use attribute::{
    Aggregator, AsPath, AsSegment, Community, LargeCommunity, MpReach, NextHop, Origin, Partial,
    PathAttributes, Prefixes, RawAttribute, SegmentKind,
};
pub use capability::{Capability, Family, GracefulRestart, GracefulRestartFamily};
pub use error::{
    AttributeError, AttributeErrorKind, DecodeError, EncodeError, ErrorAction, NlriError,
    OpenError, UpdateError, UpdateField,
};
pub use message::{Decoded, Message, Notification, Open, RouteRefresh, Update, message_length};

/// What the two ends of a session agreed on that changes how UPDATEs are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Both sides sent the 4-octet AS capability (RFC 6793 - Section 3): AS_PATH and
    /// AGGREGATOR carry 4-octet AS numbers, and AS4_PATH / AS4_AGGREGATOR are not used.
    pub four_octet_as: bool,
}

impl Default for Negotiated {
    /// Every peer tortie is tested against speaks 4-octet AS numbers.
    fn default() -> Self {
        Negotiated {
            four_octet_as: true,
        }
    }
}
