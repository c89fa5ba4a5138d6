//! The pipelined netlink sender: many requests per `sendmsg`, their acknowledgements
//! drained per batch. One round trip per request (what rtnetlink's `execute()` does, and
//! `ip -batch`) caps route installation near 80k routes/s; batching 256 per `sendmsg`
//! reached ~190k/s on the same machine (NOTES.md).
//!
//! The kernel handles every message of one `sendmsg` in order before the call returns
//! (`netlink_rcv_skb` runs in the sender's context), acknowledging each — with NLM_F_ACK,
//! success too — and going on after a failure. So after each batch every answer is already
//! queued, and draining them before the next batch keeps the receive buffer from
//! overflowing, which would drop answers (ENOBUFS).

use std::fmt;
use std::os::fd::AsRawFd;

use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{ErrorBuffer, NLMSG_ERROR, NetlinkBuffer, NetlinkMessage};
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, TokioSocket, protocols::NETLINK_ROUTE};

use super::DataplaneError;

/// Requests per `sendmsg`. 256 acknowledgements fit in the receive buffer set below with
/// room to spare, and more per batch gains nothing measurable.
const BATCH: usize = 256;
/// And at most this many bytes of requests per `sendmsg` (the socket's send buffer is
/// ~208 KiB by default; a route request is under 100 bytes).
const BATCH_BYTES: usize = 64 * 1024;
/// Receive buffer asked for: room for a few batches of answers even when each carries an
/// extended-ACK message.
const RECEIVE_BUFFER: libc::c_int = 4 * 1024 * 1024;

/// NETLINK_EXT_ACK / NETLINK_CAP_ACK (linux/netlink.h).
const NLMSGERR_ATTR_MSG: u16 = 1;

/// A request the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The errno (positive).
    pub errno: i32,
    /// The kernel's extended-ACK message, e.g. "Nexthop has invalid gateway".
    pub message: Option<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.errno))?;
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

pub(crate) struct Sender {
    socket: TokioSocket,
    sequence: u32,
    outgoing: Vec<u8>,
    incoming: Vec<u8>,
}

impl Sender {
    /// Opens a NETLINK_ROUTE socket in the calling thread's network namespace. Needs a
    /// tokio runtime.
    pub(crate) fn open() -> Result<Sender, DataplaneError> {
        let failed = |source| DataplaneError::Socket {
            purpose: "pipelined route changes",
            source,
        };
        let mut socket = TokioSocket::new(NETLINK_ROUTE).map_err(failed)?;
        let inner = socket.socket_mut();
        inner.bind_auto().map_err(failed)?;
        // Answers carry only the refused request's header, not the whole request, and
        // say why in words where the kernel has words.
        inner.set_cap_ack(true).map_err(failed)?;
        inner.set_ext_ack(true).map_err(failed)?;
        // SO_RCVBUFFORCE goes past net.core.rmem_max (needs CAP_NET_ADMIN, which changing
        // routes needs anyway); SO_RCVBUF is the fallback, capped at rmem_max.
        // SAFETY: a valid socket and a c_int option value of the right size.
        let forced = unsafe {
            libc::setsockopt(
                inner.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&RECEIVE_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if forced != 0 {
            inner.set_rx_buf_sz(RECEIVE_BUFFER).map_err(failed)?;
        }
        Ok(Sender {
            socket,
            sequence: 0,
            outgoing: Vec::with_capacity(BATCH_BYTES + 4096),
            incoming: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends every message (each must ask for an ACK) and returns, in the same order,
    /// whether the kernel took it. `doing` names the work for errors.
    pub(crate) async fn send_all(
        &mut self,
        messages: Vec<NetlinkMessage<RouteNetlinkMessage>>,
        doing: &str,
    ) -> Result<Vec<Result<(), Refusal>>, DataplaneError> {
        let mut outcomes: Vec<Option<Result<(), Refusal>>> = vec![None; messages.len()];
        let mut pending = messages.into_iter().enumerate().peekable();
        while pending.peek().is_some() {
            self.outgoing.clear();
            let first_sequence = self.sequence;
            let mut in_batch = Vec::with_capacity(BATCH);
            while in_batch.len() < BATCH && self.outgoing.len() < BATCH_BYTES {
                let Some((position, mut message)) = pending.next() else {
                    break;
                };
                message.header.sequence_number = self.sequence;
                self.sequence = self.sequence.wrapping_add(1);
                message.finalize();
                let start = self.outgoing.len();
                self.outgoing.resize(start + message.buffer_len(), 0);
                message.serialize(&mut self.outgoing[start..]);
                in_batch.push(position);
            }
            let sent = self
                .socket
                .send(&self.outgoing)
                .await
                .map_err(|e| DataplaneError::netlink(doing, e))?;
            if sent != self.outgoing.len() {
                return Err(DataplaneError::netlink(
                    doing,
                    format!("sendmsg took {sent} of {} bytes", self.outgoing.len()),
                ));
            }
            let mut answered = 0;
            while answered < in_batch.len() {
                self.incoming.clear();
                match self.socket.recv(&mut self.incoming).await {
                    Ok(()) => {}
                    Err(error) if error.raw_os_error() == Some(libc::ENOBUFS) => {
                        return Err(DataplaneError::AcknowledgementsLost {
                            doing: doing.to_string(),
                        });
                    }
                    Err(error) => return Err(DataplaneError::netlink(doing, error)),
                }
                let mut offset = 0;
                while offset < self.incoming.len() {
                    let Ok(header) = NetlinkBuffer::new_checked(&self.incoming[offset..]) else {
                        break;
                    };
                    let length = header.length() as usize;
                    let sequence = header.sequence_number();
                    let slot = sequence.wrapping_sub(first_sequence) as usize;
                    if header.message_type() == NLMSG_ERROR && slot < in_batch.len() {
                        let outcome = answer(header.payload());
                        let position = in_batch[slot];
                        if outcomes[position].is_none() {
                            answered += 1;
                        }
                        outcomes[position] = Some(outcome);
                    }
                    // Netlink messages are 4-byte aligned (NLMSG_ALIGN).
                    offset += length.max(16).next_multiple_of(4);
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or(Err(Refusal {
                    errno: libc::EIO,
                    message: Some("no answer from the kernel".to_string()),
                }))
            })
            .collect())
    }
}

/// An NLMSG_ERROR payload: `int error` (0 for an ACK, else −errno), the request's header
/// (16 bytes, since NETLINK_CAP_ACK), then extended-ACK attributes.
fn answer(payload: &[u8]) -> Result<(), Refusal> {
    let Ok(error) = ErrorBuffer::new_checked(payload) else {
        return Err(Refusal {
            errno: libc::EIO,
            message: Some("a malformed answer from the kernel".to_string()),
        });
    };
    let Some(code) = error.code() else {
        return Ok(());
    };
    Err(Refusal {
        errno: code.get().abs(),
        message: extended_ack_message(payload.get(20..).unwrap_or(&[])),
    })
}

/// The NLMSGERR_ATTR_MSG attribute among the extended-ACK attributes, if any.
fn extended_ack_message(mut attributes: &[u8]) -> Option<String> {
    while attributes.len() >= 4 {
        let length = u16::from_ne_bytes([attributes[0], attributes[1]]) as usize;
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]) & 0x3fff;
        if length < 4 || length > attributes.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &attributes[4..length];
            let text = text.split(|&byte| byte == 0).next().unwrap_or(text);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        attributes = attributes.get(length.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_message_of_an_extended_ack() {
        let mut attributes = Vec::new();
        let text = b"Nexthop has invalid gateway\0";
        attributes.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        attributes.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        attributes.extend_from_slice(text);
        assert_eq!(
            extended_ack_message(&attributes).as_deref(),
            Some("Nexthop has invalid gateway")
        );
        assert_eq!(extended_ack_message(&[]), None);
        assert_eq!(extended_ack_message(&[200, 0, 1, 0]), None);
    }
}
