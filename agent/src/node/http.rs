//! The health and metrics endpoint: `GET /liveness`, `GET /readiness` (200 or 503 with the
//! reasons) and `GET /metrics` (Prometheus text format). Each request asks the agent's core
//! for its status over the same channel as the local API, so a wedged core fails liveness.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::api::{Call, NodeStatus, Request, Response};

/// How long a probe waits for the core before calling it dead.
const CORE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

pub async fn serve(listener: TcpListener, core: mpsc::Sender<Call>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let core = core.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, core).await {
                debug!(%error, "health request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, core: mpsc::Sender<Call>) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut buffer = [0u8; 512];
    // The request line is all we need; stop at the end of the headers or 8 KiB.
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let read = tokio::time::timeout(CORE_TIMEOUT, stream.read(&mut buffer))
            .await
            .map_err(|_| std::io::Error::other("request timed out"))??;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&request);
    let mut words = text.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (code, content_type, body) = if method != "GET" {
        (405, "text/plain", "only GET\n".to_string())
    } else {
        match (path, status(&core).await) {
            ("/liveness", Some(_)) => (200, "text/plain", "live\n".to_string()),
            ("/readiness", Some(status)) if status.ready => {
                (200, "text/plain", "ready\n".to_string())
            }
            ("/readiness", Some(status)) => (
                503,
                "text/plain",
                format!("not ready: {}\n", status.not_ready.join("; ")),
            ),
            ("/metrics", Some(status)) => (200, "text/plain; version=0.0.4", metrics(&status)),
            ("/liveness" | "/readiness" | "/metrics", None) => (
                503,
                "text/plain",
                "tortie-node's core is not answering\n".to_string(),
            ),
            _ => (
                404,
                "text/plain",
                "paths: /liveness, /readiness, /metrics\n".to_string(),
            ),
        }
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

async fn status(core: &mpsc::Sender<Call>) -> Option<NodeStatus> {
    let (reply, answer) = oneshot::channel();
    core.send(Call {
        request: Request::Status,
        reply,
    })
    .await
    .ok()?;
    match tokio::time::timeout(CORE_TIMEOUT, answer).await {
        Ok(Ok(Response::Status(status))) => Some(*status),
        _ => None,
    }
}

/// The status in Prometheus' text exposition format.
pub fn metrics(status: &NodeStatus) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# HELP tortie_bgp_peers BGP peers by session state.");
    let _ = writeln!(text, "# TYPE tortie_bgp_peers gauge");
    for state in [
        "Idle",
        "Connect",
        "Active",
        "OpenSent",
        "OpenConfirm",
        "Established",
    ] {
        let count = status.peers.iter().filter(|p| p.state == state).count();
        let _ = writeln!(text, "tortie_bgp_peers{{state=\"{state}\"}} {count}");
    }
    let gauges: [(&str, &str, String); 5] = [
        (
            "tortie_routes_programmed",
            "Routes with proto tortie in the kernel.",
            status.routes_programmed.to_string(),
        ),
        (
            "tortie_ipam_blocks",
            "IPAM blocks affine to this node.",
            status.blocks.len().to_string(),
        ),
        (
            "tortie_ipam_addresses_in_use",
            "Addresses in use in this node's blocks.",
            status.addresses_in_use.to_string(),
        ),
        (
            "tortie_ready",
            "1 when the node is ready.",
            u8::from(status.ready).to_string(),
        ),
        (
            "tortie_ipip_missing",
            "1 when a pool needs IPIP and the kernel lacks it.",
            u8::from(status.ipip.required && !status.ipip.available).to_string(),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    let _ = writeln!(
        text,
        "# HELP tortie_reconcile_errors_total Dataplane reconcile passes that failed.\n# TYPE tortie_reconcile_errors_total counter\ntortie_reconcile_errors_total {}",
        status.reconcile_errors
    );
    text
}
