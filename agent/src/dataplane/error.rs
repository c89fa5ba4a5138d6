//! What can go wrong while making the kernel match the desired state, and where.

use std::io;
use std::path::PathBuf;

/// A failure of the dataplane as a whole: it could not talk to the kernel, or could not
/// read what the kernel has. Failures of single items (one route, one neighbour) are not
/// errors: they are listed in the [`super::Report`] and the rest goes ahead.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("cannot open a netlink socket for {purpose}: {source}")]
    Socket {
        purpose: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("netlink request failed while {doing}: {message}")]
    Netlink { doing: String, message: String },
    #[error(
        "the kernel dropped acknowledgements of {doing} (its receive buffer overflowed, \
         ENOBUFS); the routes are re-read on the next reconcile"
    )]
    AcknowledgementsLost { doing: String },
    #[error("interface {interface} does not exist in this network namespace")]
    NoSuchInterface { interface: String },
    #[error("interface {interface} has no MTU attribute in the kernel's answer")]
    NoMtu { interface: String },
    #[error("cannot write {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DataplaneError {
    pub(crate) fn netlink(doing: impl Into<String>, error: impl std::fmt::Display) -> Self {
        DataplaneError::Netlink {
            doing: doing.into(),
            message: error.to_string(),
        }
    }
}
