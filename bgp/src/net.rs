//! TCP for BGP sessions: the listener, the connector a peer task dials with, and the two
//! socket options that protect a session, TCP MD5 signatures (RFC 2385) and TTL security
//! (RFC 5082). Linux only, as tortie is.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::tasks::Connector;

/// The standard BGP port (RFC 4271 - Section 8.2.1).
pub const BGP_PORT: u16 = 179;

/// Longest key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;

/// The kernel's `struct tcp_md5sig` (include/uapi/linux/tcp.h); libc does not define it.
#[repr(C)]
struct TcpMd5Sig {
    address: libc::sockaddr_storage,
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY_LEN],
}

fn storage_of(address: IpAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match address {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned
            // for it (that is its purpose); the write stays inside `storage`.
            unsafe {
                std::ptr::write(
                    std::ptr::from_mut(&mut storage).cast::<libc::sockaddr_in>(),
                    sin,
                )
            };
        }
        IpAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe {
                std::ptr::write(
                    std::ptr::from_mut(&mut storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                )
            };
        }
    }
    storage
}

fn set_option<T>(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points at a live `T` of the size passed; the kernel only reads it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// RFC 2385: signs every segment to and from `peer` with `password`. On a listener it
/// applies to the connections it accepts from that peer.
pub fn set_md5_password(socket: &impl AsRawFd, peer: IpAddr, password: &str) -> io::Result<()> {
    let key = password.as_bytes();
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP MD5 password of {} octets is longer than {MD5_MAX_KEY_LEN}",
                key.len()
            ),
        ));
    }
    let mut option = TcpMd5Sig {
        address: storage_of(peer),
        flags: 0,
        prefix_len: 0,
        key_len: key.len() as u16,
        ifindex: 0,
        key: [0; MD5_MAX_KEY_LEN],
    };
    option.key[..key.len()].copy_from_slice(key);
    set_option(socket, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &option)
}

/// RFC 5082: send with TTL (hop limit) 255 and accept only packets that arrive with at
/// least 256 - `hops`, so that a peer `hops` routers away passes and a spoofer further off
/// does not.
pub fn set_ttl_security(socket: &impl AsRawFd, family: IpAddr, hops: u8) -> io::Result<()> {
    let minimum: libc::c_int = 256 - libc::c_int::from(hops.max(1));
    let send: libc::c_int = 255;
    match family {
        IpAddr::V4(_) => {
            set_option(socket, libc::IPPROTO_IP, libc::IP_TTL, &send)?;
            set_option(socket, libc::IPPROTO_IP, libc::IP_MINTTL, &minimum)
        }
        IpAddr::V6(_) => {
            set_option(socket, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &send)?;
            set_option(socket, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &minimum)
        }
    }
}

/// How to reach one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    pub peer: SocketAddr,
    /// Source address to bind, if any.
    pub local_address: Option<IpAddr>,
    pub password: Option<String>,
    /// TTL security hops (RFC 5082), if on.
    pub ttl_security: Option<u8>,
}

/// Opens one connection as `dial` says.
pub async fn connect(dial: &Dial) -> io::Result<TcpStream> {
    let socket = match dial.peer {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(local) = dial.local_address {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    if let Some(password) = &dial.password {
        set_md5_password(&socket, dial.peer.ip(), password)?;
    }
    if let Some(hops) = dial.ttl_security {
        set_ttl_security(&socket, dial.peer.ip(), hops)?;
    }
    let stream = socket.connect(dial.peer).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A [`Connector`] for a peer task.
pub fn connector(dial: Dial) -> Connector<TcpStream> {
    let dial = Arc::new(dial);
    Arc::new(move || {
        let dial = Arc::clone(&dial);
        Box::pin(async move { connect(&dial).await })
    })
}

/// A listener on `address`, with MD5 passwords for the peers that have one. It answers
/// with TTL (hop limit) 255, so that peers using TTL security accept its SYN-ACK (RFC
/// 5082, section 3); the minimum TTL is set per accepted connection with
/// [`set_ttl_security`].
pub fn listen(address: SocketAddr, passwords: &[(IpAddr, String)]) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    let send: libc::c_int = 255;
    match address {
        SocketAddr::V4(_) => set_option(&socket, libc::IPPROTO_IP, libc::IP_TTL, &send)?,
        SocketAddr::V6(_) => {
            set_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &send)?
        }
    }
    for (peer, password) in passwords {
        // An IPv6 listener takes IPv4 connections as IPv4-mapped addresses, and the
        // kernel only accepts a key of its own family: an IPv4 peer's key goes in as the
        // mapped address (which Linux files as an IPv4 key), not as an AF_INET address.
        let peer = match (address, peer) {
            (SocketAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => *peer,
        };
        set_md5_password(&socket, peer, password)?;
    }
    socket.bind(address)?;
    socket.listen(64)
}

/// The peer address of an accepted connection: an IPv6 listener shows IPv4 peers as
/// IPv4-mapped addresses, which are turned back into IPv4 here.
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// The [`Connector`] of a passive peer: this side never dials, the other side does.
pub fn refusing() -> Connector<TcpStream> {
    Arc::new(|| Box::pin(async { Err(io::Error::other("passive peer: the other side dials")) }))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn matching_md5_passwords_and_ttl_security_connect_over_loopback() {
        let listener = listen(
            SocketAddr::new(LOOPBACK, 0),
            &[(LOOPBACK, "s3cret".to_string())],
        )
        .expect("listens");
        let port = listener.local_addr().expect("bound").port();
        let dial = Dial {
            peer: SocketAddr::new(LOOPBACK, port),
            local_address: Some(LOOPBACK),
            password: Some("s3cret".to_string()),
            ttl_security: Some(1),
        };
        // A deadline instead of a hang, should the options ever disagree.
        let both = async { tokio::join!(connect(&dial), listener.accept()) };
        let Ok((client, accepted)) =
            tokio::time::timeout(std::time::Duration::from_secs(30), both).await
        else {
            panic!("no connection within 30 s: the MD5 or TTL options do not match")
        };
        let (mut client, (mut server, from)) =
            (client.expect("connects"), accepted.expect("accepts"));
        assert_eq!(from.ip(), LOOPBACK);
        set_ttl_security(&server, from.ip(), 1).expect("option accepted");
        client.write_all(b"open").await.expect("writes");
        let mut buffer = [0u8; 4];
        server.read_exact(&mut buffer).await.expect("reads");
        assert_eq!(&buffer, b"open");
    }

    /// A dual-stack listener (the IPv6 wildcard) with an IPv4 peer's password: the key
    /// must go in as the IPv4-mapped address, or the kernel refuses it (EINVAL) and the
    /// daemon cannot start. The IPv4 peer then connects with the password.
    #[tokio::test]
    async fn a_dual_stack_listener_takes_an_ipv4_peers_md5_password() {
        let wildcard = SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0);
        let listener = listen(wildcard, &[(LOOPBACK, "s3cret".to_string())]).expect("listens");
        let port = listener.local_addr().expect("bound").port();
        let dial = Dial {
            peer: SocketAddr::new(LOOPBACK, port),
            local_address: Some(LOOPBACK),
            password: Some("s3cret".to_string()),
            ttl_security: None,
        };
        let both = async { tokio::join!(connect(&dial), listener.accept()) };
        let Ok((client, accepted)) =
            tokio::time::timeout(std::time::Duration::from_secs(30), both).await
        else {
            panic!("no connection within 30 s: the listener's MD5 key does not match")
        };
        client.expect("connects");
        let (_, from) = accepted.expect("accepts");
        assert_eq!(from.ip(), IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()));
    }

    #[test]
    fn an_overlong_md5_password_is_refused_with_a_reason() {
        let socket = TcpSocket::new_v4().expect("socket");
        let error = set_md5_password(&socket, LOOPBACK, &"x".repeat(81)).expect_err("too long");
        assert!(error.to_string().contains("longer than 80"), "{error}");
    }
}
