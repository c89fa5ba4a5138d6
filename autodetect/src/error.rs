//! The crate's errors. Each says what was wrong and where, in one line a user can act on.

use std::net::IpAddr;

use crate::Family;
use crate::method::VALID_FORMS;
use crate::select::Consideration;

/// A malformed `IP_AUTODETECTION_METHOD` / `IP6_AUTODETECTION_METHOD`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{variable}=\"{input}\": {problem}; valid forms: {VALID_FORMS}")]
pub struct MethodError {
    /// The environment variable the method came from.
    pub variable: &'static str,
    /// The method as written.
    pub input: String,
    /// What is wrong with it, naming the offending part.
    pub problem: String,
}

/// A malformed `IP` / `IP6` setting.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{variable}=\"{input}\": {problem}; valid forms: {forms}")]
pub struct SettingError {
    pub variable: &'static str,
    pub input: String,
    pub problem: String,
    pub forms: &'static str,
}

/// Detection ran but found nothing acceptable, or could not ask the system.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("no {family} address found by {method}: {why}")]
    NothingFound {
        family: Family,
        method: String,
        /// A one-line summary of why every interface was passed over.
        why: String,
        /// Every interface and address looked at, with its verdict.
        considered: Vec<Consideration>,
    },
    #[error("{method} cannot work here: {reason}")]
    Unavailable { method: String, reason: String },
    #[error(
        "{method}: the kernel would reach {destination} from {source_address}, but no interface holds {source_address}"
    )]
    SourceNotOnInterface {
        method: String,
        destination: String,
        source_address: IpAddr,
    },
    #[error("{method}: {destination} is unreachable from this host: {reason}")]
    Unreachable {
        method: String,
        destination: String,
        reason: String,
    },
    #[error("{method}: cannot resolve host name {host}: {reason}")]
    Resolve {
        method: String,
        host: String,
        reason: String,
    },
    #[error("{method}: {address} ({origin}) is not on any interface of this host")]
    KnownAddressNotLocal {
        method: String,
        address: IpAddr,
        origin: String,
    },
    #[error("{method}: {origin} has no {family} address")]
    NoKnownAddress {
        method: String,
        origin: String,
        family: Family,
    },
    #[error("reading interfaces and addresses over netlink: {0}")]
    Netlink(String),
}
