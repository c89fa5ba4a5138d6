//! Netlink address events: the node's address is re-detected as soon as an address is
//! added or removed anywhere on the host, not only on the periodic re-check.

use futures::StreamExt;
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use tokio::sync::mpsc;

/// A channel that yields `()` after address changes (bursts coalesce into one).
pub fn address_events() -> std::io::Result<mpsc::Receiver<()>> {
    let (mut connection, _handle, mut messages) = rtnetlink::new_connection()?;
    let groups = (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR | libc::RTMGRP_LINK) as u32;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, groups))?;
    tokio::spawn(connection);
    let (events, receiver) = mpsc::channel(1);
    tokio::spawn(async move {
        while messages.next().await.is_some() {
            // A full channel already holds a wake-up: this change is covered by it.
            let _ = events.try_send(());
        }
    });
    Ok(receiver)
}
