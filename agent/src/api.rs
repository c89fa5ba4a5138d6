//! The node agent's local API: a Unix socket (`$TORTIE_RUN_DIR/agent.sock`, root only) that
//! `tortiectl` and the CNI plugins talk to. One JSON request per line, one JSON response
//! line back; a client may send several requests on one connection.
//!
//! Requests are answered by the agent's core (the one owner of its state); the server here
//! only frames, decodes and forwards them over a channel.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tortie_bgp::daemon::PeerRow;

/// Where `tortiectl` looks for the agent unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/tortie/agent.sock";

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// The node's state: peers, readiness, dataplane.
    Status,
    /// Addresses for a workload (or any handle) on this node, from its blocks first. A
    /// handle that holds addresses already gets those back, not more: a runtime repeating
    /// ADD for one container (a retry after a timeout) must not double its addresses.
    Assign {
        handle: String,
        #[serde(default)]
        num4: u32,
        #[serde(default)]
        num6: u32,
        /// Recorded with each address (Calico's attributes: pod, namespace, ...).
        #[serde(default)]
        attributes: BTreeMap<String, String>,
        /// Only these pools (by name or CIDR); every eligible pool when empty.
        #[serde(default)]
        pools: Vec<String>,
    },
    /// Releases everything a handle holds (idempotent).
    Release { handle: String },
    /// What a handle holds (the CNI plugin's CHECK), without changing anything.
    Addresses { handle: String },
    /// The handles starting with `prefix` that hold addresses assigned on this node (the
    /// CNI plugin's GC: `<network name>.` lists that network's attachments here).
    Handles { prefix: String },
    /// How many addresses the enabled pools have free (the CNI plugin's STATUS).
    Capacity,
}

/// The answer to one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    Status(Box<NodeStatus>),
    Assigned {
        ipv4: Vec<IpAddr>,
        ipv6: Vec<IpAddr>,
        /// The MTU a pod on this node should use: the host's, less the encapsulation
        /// overhead of the pools this node routes (IPIP 20, VXLAN 50).
        #[serde(default)]
        mtu: u32,
    },
    Released {
        addresses: Vec<IpAddr>,
    },
    Addresses {
        addresses: Vec<IpAddr>,
        /// As in `Assigned`.
        #[serde(default)]
        mtu: u32,
    },
    Handles {
        handles: Vec<String>,
    },
    Capacity {
        free_ipv4: u64,
        free_ipv6: u64,
    },
    Error(String),
}

/// `tortiectl node status -o json`, and what health probes read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node: String,
    pub version: String,
    /// Seconds since the Unix epoch when the agent started.
    pub started: u64,
    /// The node's addresses with their prefixes, as registered.
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
    pub asn: u32,
    pub ready: bool,
    /// Why the node is not ready (empty when it is).
    pub not_ready: Vec<String>,
    pub ipip: IpipStatus,
    pub peers: Vec<PeerRow>,
    /// This node's blocks (affinity confirmed).
    pub blocks: Vec<String>,
    /// Routes with `proto tortie` the agent has in the kernel.
    pub routes_programmed: usize,
    /// Addresses held in this node's blocks.
    pub addresses_in_use: u64,
    /// Reconcile passes that failed since the agent started.
    pub reconcile_errors: u64,
    pub dataplane_error: Option<String>,
    pub datastore_error: Option<String>,
}

/// Whether IPIP is needed here, and whether the kernel can do it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpipStatus {
    /// A pool this node routes uses IPIP.
    pub required: bool,
    pub available: bool,
    /// What is wrong and how to fix it, when required but unavailable.
    pub problem: Option<String>,
}

/// A request waiting for the core's answer.
pub struct Call {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

/// Why the agent could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "tortie-node is not running on this node (socket {socket}: {source}); start it, or point --socket / TORTIE_SOCKET at its agent.sock"
    )]
    NotRunning {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tortie-node (socket {socket}) did not answer properly: {problem}")]
    Protocol { socket: PathBuf, problem: String },
    #[error("tortie-node (socket {socket}) refused the request: {message}")]
    Refused { socket: PathBuf, message: String },
}

/// Sends one request and waits for its answer (blocking; for `tortiectl` and the plugins).
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let not_running = |source| ClientError::NotRunning {
        socket: socket.to_path_buf(),
        source,
    };
    let protocol = |problem: String| ClientError::Protocol {
        socket: socket.to_path_buf(),
        problem,
    };
    let mut stream = StdUnixStream::connect(socket).map_err(not_running)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| protocol(e.to_string()))?;
    let mut line = serde_json::to_string(request).map_err(|e| protocol(e.to_string()))?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| protocol(format!("sending the request: {e}")))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| protocol(format!("reading the answer: {e}")))?;
    if answer.is_empty() {
        return Err(protocol("the connection closed without an answer".into()));
    }
    match serde_json::from_str(&answer) {
        Ok(Response::Error(message)) => Err(ClientError::Refused {
            socket: socket.to_path_buf(),
            message,
        }),
        Ok(response) => Ok(response),
        Err(e) => Err(protocol(format!("the answer does not parse: {e}"))),
    }
}

/// Asks for the node's status.
pub fn status(socket: &Path, timeout: Duration) -> Result<NodeStatus, ClientError> {
    match call(socket, &Request::Status, timeout)? {
        Response::Status(status) => Ok(*status),
        other => Err(ClientError::Protocol {
            socket: socket.to_path_buf(),
            problem: format!("expected a status, got {other:?}"),
        }),
    }
}

/// Binds the socket, replacing a stale one from an earlier run, readable and writable by
/// root only: pods' addresses are handed out through it.
pub fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    if let Some(directory) = socket.parent() {
        std::fs::create_dir_all(directory)?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections until the listener fails, forwarding each request to `core`.
pub async fn serve(listener: UnixListener, core: mpsc::Sender<Call>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "local API: accept failed");
                continue;
            }
        };
        let core = core.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = AsyncBufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let response = match serde_json::from_str::<Request>(&line) {
                    Ok(request) => {
                        let (reply, answer) = oneshot::channel();
                        if core.send(Call { request, reply }).await.is_err() {
                            Response::Error("tortie-node is shutting down".into())
                        } else {
                            answer.await.unwrap_or_else(|_| {
                                Response::Error("tortie-node dropped the request".into())
                            })
                        }
                    }
                    Err(e) => Response::Error(format!("the request does not parse: {e}")),
                };
                let Ok(mut text) = serde_json::to_string(&response) else {
                    break;
                };
                text.push('\n');
                if write.write_all(text.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}
