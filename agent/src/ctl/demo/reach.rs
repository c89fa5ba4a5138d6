//! Reachability between pods: ICMP echo from inside the source pod's namespace, over a raw
//! socket opened on a thread that entered it, each pair on a thread of its own, each polled
//! until it answers or the deadline passes.

use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use super::netns;

/// How long a pair gets to answer.
pub const PING_WAIT: Duration = Duration::from_secs(30);
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;

/// Identifiers for echo requests: a raw socket sees every ICMP message of its namespace,
/// so each pair's replies are told apart by identifier (and source).
static NEXT_ID: AtomicU16 = AtomicU16::new(1);

/// RFC 1071 Internet checksum.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request (RFC 792): type 8, code 0, checksum, identifier, sequence, payload.
pub fn echo_request(id: u16, sequence: u16) -> Vec<u8> {
    let mut packet = vec![ECHO_REQUEST, 0, 0, 0];
    packet.extend(id.to_be_bytes());
    packet.extend(sequence.to_be_bytes());
    packet.extend(b"tortie demo ping");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// Whether a datagram read from a raw IPv4 ICMP socket (IP header included) is the echo
/// reply from `from` with identifier `id`.
pub fn is_reply(datagram: &[u8], from: Ipv4Addr, id: u16) -> bool {
    let Some(first) = datagram.first() else {
        return false;
    };
    let header = usize::from(first & 0x0f) * 4;
    if datagram.len() < header + 8 || header < 20 {
        return false;
    }
    let source = Ipv4Addr::new(datagram[12], datagram[13], datagram[14], datagram[15]);
    let icmp = &datagram[header..];
    source == from && icmp[0] == ECHO_REPLY && u16::from_be_bytes([icmp[4], icmp[5]]) == id
}

struct RawSocket(libc::c_int);

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

fn raw_icmp_socket() -> io::Result<RawSocket> {
    // SAFETY: plain socket(2); the descriptor is owned by the guard.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let socket = RawSocket(fd);
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: the option value is a timeval of the right size.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

fn send_to(socket: &RawSocket, packet: &[u8], to: Ipv4Addr) -> io::Result<()> {
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the buffer and the address are valid for their given lengths.
    let sent = unsafe {
        libc::sendto(
            socket.0,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&address as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Pings `to` from inside namespace `from_netns` until it answers (true) or `deadline`.
pub fn reaches(from_netns: &str, to: Ipv4Addr, deadline: Instant) -> bool {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    netns::run_in(from_netns, || {
        let socket = raw_icmp_socket()?;
        let mut buffer = [0u8; 1500];
        let mut sequence = 0u16;
        while Instant::now() < deadline {
            sequence = sequence.wrapping_add(1);
            // A send can fail while routes are still coming (ENETUNREACH): try again.
            let _ = send_to(&socket, &echo_request(id, sequence), to);
            let wait_until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < wait_until {
                // SAFETY: the buffer is valid for its length.
                let read =
                    unsafe { libc::recv(socket.0, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
                if read > 0 && is_reply(&buffer[..read as usize], to, id) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    })
    .unwrap_or(false)
}

/// `results[from][to]` for every pair of `pods` (namespace, address), self included.
pub fn matrix(pods: &[(String, Ipv4Addr)], within: Duration) -> Vec<Vec<bool>> {
    let deadline = Instant::now() + within;
    std::thread::scope(|scope| {
        let rows: Vec<Vec<_>> = pods
            .iter()
            .map(|(from, _)| {
                pods.iter()
                    .map(|(_, to)| scope.spawn(move || reaches(from, *to, deadline)))
                    .collect()
            })
            .collect();
        rows.into_iter()
            .map(|row| row.into_iter().map(|t| t.join().unwrap_or(false)).collect())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_checksums_to_zero() {
        let packet = echo_request(0x1234, 7);
        assert_eq!(&packet[..2], &[8, 0]);
        assert_eq!(&packet[4..8], &[0x12, 0x34, 0, 7]);
        assert_eq!(checksum(&packet), 0);
    }

    #[test]
    fn only_the_matching_reply_counts() {
        let mut datagram = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 0, 5, 198, 18, 0, 9,
        ];
        datagram.extend([ECHO_REPLY, 0, 0, 0, 0x12, 0x34, 0, 1]);
        let from = Ipv4Addr::new(198, 18, 0, 5);
        assert!(is_reply(&datagram, from, 0x1234));
        assert!(!is_reply(&datagram, from, 0x1235));
        assert!(!is_reply(&datagram, Ipv4Addr::new(198, 18, 0, 6), 0x1234));
        datagram[20] = ECHO_REQUEST;
        assert!(!is_reply(&datagram, from, 0x1234));
        assert!(!is_reply(&datagram[..10], from, 0x1234));
    }
}
