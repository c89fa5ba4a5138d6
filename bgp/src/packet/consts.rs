//! Numbers from the IANA BGP registries that the codec speaks, named.

/// RFC 4271 - Section 4.1: the header is a 16-octet marker, a 2-octet length and a
/// 1-octet type.
pub const HEADER_LEN: usize = 19;
/// RFC 4271 - Section 4.1: "The value of the Length field MUST always be at least 19 and no
/// greater than 4096".
pub const MAX_MESSAGE_LEN: usize = 4096;
/// RFC 4271 - Section 4.2: the fixed part of an OPEN after the header.
pub const OPEN_MIN_LEN: usize = HEADER_LEN + 10;
/// RFC 4271 - Section 4.3: withdrawn length and total path attribute length, both empty.
pub const UPDATE_MIN_LEN: usize = HEADER_LEN + 4;
/// RFC 4271 - Section 4.5: error code and subcode.
pub const NOTIFICATION_MIN_LEN: usize = HEADER_LEN + 2;
/// RFC 2918 - Section 3: AFI, reserved, SAFI.
pub const ROUTE_REFRESH_LEN: usize = HEADER_LEN + 4;

/// The only BGP version spoken (RFC 4271 - Section 4.2).
pub const BGP_VERSION: u8 = 4;

/// RFC 6793 - Section 9: the 2-octet AS number that stands in for a 4-octet one.
pub const AS_TRANS: u16 = 23456;

/// Message type codes (RFC 4271 - Section 4.1, RFC 2918 - Section 3).
pub mod message_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// OPEN optional parameter types (RFC 5492 - Section 4).
pub const OPT_PARAM_CAPABILITIES: u8 = 2;

/// Capability codes (IANA "Capability Codes").
pub mod capability_code {
    /// RFC 4760 - Section 8.
    pub const MULTIPROTOCOL: u8 = 1;
    /// RFC 2918 - Section 2.
    pub const ROUTE_REFRESH: u8 = 2;
    /// RFC 4724 - Section 3.
    pub const GRACEFUL_RESTART: u8 = 64;
    /// RFC 6793 - Section 3.
    pub const FOUR_OCTET_AS: u8 = 65;
}

/// Path attribute flag bits (RFC 4271 - Section 4.3).
pub mod attribute_flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
    /// RFC 4271 - Section 4.3: the lower four bits are unused; sent as zero, ignored.
    pub const DEFINED: u8 = 0xF0;
    /// The two bits whose values each attribute type fixes (RFC 7606 - Section 3 (c)).
    pub const CATEGORY: u8 = OPTIONAL | TRANSITIVE;
    /// Well-known attributes (mandatory or discretionary).
    pub const WELL_KNOWN: u8 = TRANSITIVE;
    pub const OPTIONAL_TRANSITIVE: u8 = OPTIONAL | TRANSITIVE;
    pub const OPTIONAL_NON_TRANSITIVE: u8 = OPTIONAL;
}

/// Path attribute type codes (IANA "BGP Path Attributes").
pub mod attribute_type {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    /// RFC 1997.
    pub const COMMUNITIES: u8 = 8;
    /// RFC 4456.
    pub const ORIGINATOR_ID: u8 = 9;
    /// RFC 4456.
    pub const CLUSTER_LIST: u8 = 10;
    /// RFC 4760.
    pub const MP_REACH_NLRI: u8 = 14;
    /// RFC 4760.
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// RFC 6793.
    pub const AS4_PATH: u8 = 17;
    /// RFC 6793.
    pub const AS4_AGGREGATOR: u8 = 18;
    /// RFC 8092.
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// AS_PATH segment types (RFC 4271 - Section 4.3, RFC 5065 - Section 3).
pub mod segment_type {
    pub const AS_SET: u8 = 1;
    pub const AS_SEQUENCE: u8 = 2;
    pub const AS_CONFED_SEQUENCE: u8 = 3;
    pub const AS_CONFED_SET: u8 = 4;
}

/// Address family identifiers (IANA "Address Family Numbers").
pub mod afi {
    pub const IPV4: u16 = 1;
    pub const IPV6: u16 = 2;
}

/// Subsequent address family identifiers (IANA "SAFI Values").
pub mod safi {
    pub const UNICAST: u8 = 1;
}

/// NOTIFICATION error codes (RFC 4271 - Section 4.5) and their subcodes (Section 6).
pub mod error_code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    /// RFC 7313 - Section 5.
    pub const ROUTE_REFRESH_MESSAGE: u8 = 7;
}

/// Message Header Error subcodes (RFC 4271 - Section 6.1).
pub mod header_subcode {
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// OPEN Message Error subcodes (RFC 4271 - Section 6.2, RFC 5492 - Section 5).
pub mod open_subcode {
    pub const UNSPECIFIC: u8 = 0;
    pub const UNSUPPORTED_VERSION_NUMBER: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
}

/// UPDATE Message Error subcodes (RFC 4271 - Section 6.3).
pub mod update_subcode {
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const INVALID_ORIGIN_ATTRIBUTE: u8 = 6;
    pub const INVALID_NEXT_HOP_ATTRIBUTE: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// Cease subcodes (RFC 4486 - Section 4).
pub mod cease_subcode {
    pub const MAXIMUM_PREFIXES_REACHED: u8 = 1;
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
    /// RFC 8538 - Section 4.
    pub const HARD_RESET: u8 = 9;
}

/// ROUTE-REFRESH Message Error subcodes (RFC 7313 - Section 5).
pub mod route_refresh_subcode {
    pub const INVALID_MESSAGE_LENGTH: u8 = 1;
}
