//! ADD, DEL, CHECK and VERSION: each takes the checked input and returns the JSON to print,
//! or a [`CniError`].

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::config::{Addressing, Invocation, NetworkConfig, ValidAttachment};
use super::spec::{self, CniError, CniResult, ErrorCode, Interface, IpConfig, Route};
use super::wiring::{self, Attachment, GATEWAY_V4, GATEWAY_V6};
use crate::api::{self, ClientError, Request, Response};

/// How long the plugin waits for an agent that is not (yet) listening: long enough to ride
/// out an agent restart's socket rebind, short enough for the runtime to retry the pod.
pub const AGENT_WAIT: Duration = Duration::from_secs(5);
/// How long one request may take once connected (an assignment may claim a block).
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The handle of a pod's addresses: `<network name>.<container ID>` (Calico's).
pub fn handle(network: &str, invocation: &Invocation) -> String {
    format!("{network}.{}", invocation.container_id)
}

/// Asks the agent, retrying while it is not running for at most [`AGENT_WAIT`].
pub(super) fn ask(socket: &Path, request: &Request) -> Result<Response, CniError> {
    let started = Instant::now();
    loop {
        match api::call(socket, request, AGENT_TIMEOUT) {
            Ok(response) => return Ok(response),
            Err(ClientError::NotRunning { source, .. }) if started.elapsed() < AGENT_WAIT => {
                tracing::debug!(%source, "agent not answering yet");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(ClientError::NotRunning { source, .. }) => {
                return Err(CniError::new(
                    ErrorCode::TryAgainLater,
                    format!(
                        "tortie-node is not running on this node (socket {})",
                        socket.display()
                    ),
                    format!(
                        "waited {} s: {source}; start tortie-node, or set \"agent_socket\" in the network configuration",
                        AGENT_WAIT.as_secs()
                    ),
                ));
            }
            Err(ClientError::Refused { message, .. }) => {
                return Err(CniError::new(
                    ErrorCode::AgentRefused,
                    "tortie-node refused the request",
                    message,
                ));
            }
            Err(error @ ClientError::Protocol { .. }) => {
                return Err(CniError::new(
                    ErrorCode::Io,
                    "tortie-node did not answer properly",
                    error.to_string(),
                ));
            }
        }
    }
}

pub(super) fn unexpected(response: Response) -> CniError {
    CniError::new(
        ErrorCode::Io,
        "tortie-node answered with something else",
        format!("{response:?}"),
    )
}

fn host_link(invocation: &Invocation) -> String {
    wiring::host_link_name(invocation.pod(), &invocation.container_id)
}

/// ADD: addresses from the agent, then the veth; any failure after the assignment undoes
/// both, so a pod is never left half-wired nor an address held for nothing.
pub fn add(config: &NetworkConfig, invocation: &Invocation) -> Result<serde_json::Value, CniError> {
    let netns_path = invocation.required_netns()?;
    // Opened before anything is allocated: a pod whose netns is gone gets nothing.
    let netns = wiring::open_netns(netns_path)?;
    let handle = handle(&config.name, invocation);
    let socket = &config.addressing.agent_socket;
    // A runtime may repeat ADD for one container (a retry after a timeout): the agent then
    // hands back the addresses the handle holds, and the veth is made again below.
    let (addresses, agent_mtu): (Vec<IpAddr>, u32) =
        match ask(socket, &config.addressing.assign(&handle, invocation))? {
            Response::Assigned { ipv4, ipv6, mtu } => (ipv4.into_iter().chain(ipv6).collect(), mtu),
            other => return Err(unexpected(other)),
        };
    let host_link = host_link(invocation);
    let attachment = Attachment {
        host_link: &host_link,
        ifname: &invocation.ifname,
        netns: netns_path,
        addresses: &addresses,
        mtu: config.pod_mtu(agent_mtu),
    };
    let wired = match wiring::wire(&attachment, &netns) {
        Ok(wired) => wired,
        Err(error) => {
            rollback(config, &handle, &host_link, &error);
            return Err(error);
        }
    };
    Ok(result(
        config,
        invocation,
        &host_link,
        &wired.pod_mac,
        &addresses,
    ))
}

/// Undoes a failed ADD; what cannot be undone is logged beside the original error.
fn rollback(config: &NetworkConfig, handle: &str, host_link: &str, cause: &CniError) {
    tracing::warn!(%cause, handle, host_link, "ADD failed; rolling back");
    if let Err(error) = wiring::unwire(host_link) {
        tracing::error!(%error, host_link, "rollback: the veth could not be removed");
    }
    let release = Request::Release {
        handle: handle.to_string(),
    };
    if let Err(error) = ask(&config.addressing.agent_socket, &release) {
        tracing::error!(%error, handle, "rollback: the addresses could not be released");
    }
}

fn result(
    config: &NetworkConfig,
    invocation: &Invocation,
    host_link: &str,
    pod_mac: &str,
    addresses: &[IpAddr],
) -> serde_json::Value {
    let version = &config.cni_version;
    let with_version = spec::ips_carry_version(version);
    let ips = addresses
        .iter()
        .map(|address| IpConfig {
            version: with_version.then(|| if address.is_ipv4() { "4" } else { "6" }.to_string()),
            address: format!("{address}/{}", if address.is_ipv4() { 32 } else { 128 }),
            gateway: None,
            interface: Some(1),
        })
        .collect();
    let mut routes = Vec::new();
    if addresses.iter().any(IpAddr::is_ipv4) {
        routes.push(Route {
            dst: "0.0.0.0/0".into(),
            gw: Some(GATEWAY_V4.into()),
        });
    }
    if addresses.iter().any(IpAddr::is_ipv6) {
        routes.push(Route {
            dst: "::/0".into(),
            gw: Some(GATEWAY_V6.into()),
        });
    }
    let result = CniResult {
        cni_version: version.clone(),
        interfaces: vec![
            Interface {
                name: host_link.to_string(),
                mac: "ee:ee:ee:ee:ee:ee".into(),
                sandbox: None,
            },
            Interface {
                name: invocation.ifname.clone(),
                mac: pod_mac.to_string(),
                sandbox: invocation
                    .netns
                    .as_ref()
                    .map(|path| path.display().to_string()),
            },
        ],
        ips,
        routes,
        dns: serde_json::json!({}),
    };
    serde_json::to_value(result).unwrap_or_default()
}

/// DEL: the veth (and with it the host route and the pod side), and the addresses. What is
/// already gone is success, so a runtime may repeat DEL as often as it likes.
///
/// The release goes to the agent while the kernel deletes the veth (which waits for an RCU
/// grace period, the larger part of DEL): an address that comes free a few milliseconds
/// before its old veth is gone is harmless, since a new pod's host route replaces the old one
/// and the old link's deletion takes only routes through itself.
pub fn del(config: &NetworkConfig, invocation: &Invocation) -> Result<serde_json::Value, CniError> {
    let release = Request::Release {
        handle: handle(&config.name, invocation),
    };
    let (unwired, released) = std::thread::scope(|scope| {
        let releasing = scope.spawn(|| ask(&config.addressing.agent_socket, &release));
        let unwired = wiring::unwire(&host_link(invocation));
        let released = releasing.join().unwrap_or_else(|_| {
            Err(CniError::new(
                ErrorCode::Io,
                "the release request's thread panicked",
                "",
            ))
        });
        (unwired, released)
    });
    unwired?;
    match released? {
        Response::Released { .. } => Ok(serde_json::Value::Null),
        other => Err(unexpected(other)),
    }
}

/// CHECK: the allocation, the veth, the addresses and the routes, against what ADD made;
/// every difference is named.
pub fn check(
    config: &NetworkConfig,
    invocation: &Invocation,
) -> Result<serde_json::Value, CniError> {
    let netns_path = invocation.required_netns()?;
    let netns = wiring::open_netns(netns_path)?;
    let handle = handle(&config.name, invocation);
    let request = Request::Addresses {
        handle: handle.clone(),
    };
    let (allocated, agent_mtu) = match ask(&config.addressing.agent_socket, &request)? {
        Response::Addresses { addresses, mtu } => (addresses, mtu),
        other => return Err(unexpected(other)),
    };
    let mut problems = Vec::new();
    if allocated.is_empty() {
        problems.push(format!("tortie-node holds no address for handle {handle}"));
    }
    if let Some(previous) = &config.prev_result {
        for ip in &previous.ips {
            let address = ip.address.split('/').next().unwrap_or_default();
            if !allocated.iter().any(|a| a.to_string() == address) {
                problems.push(format!(
                    "prevResult's address {} is not allocated to handle {handle}",
                    ip.address
                ));
            }
        }
    }
    let host_link = host_link(invocation);
    let attachment = Attachment {
        host_link: &host_link,
        ifname: &invocation.ifname,
        netns: netns_path,
        addresses: &allocated,
        mtu: config.pod_mtu(agent_mtu),
    };
    problems.extend(wiring::check(&attachment, &netns)?);
    if problems.is_empty() {
        Ok(serde_json::Value::Null)
    } else {
        Err(CniError::new(
            ErrorCode::CheckFailed,
            format!(
                "the attachment of {} is not as ADD left it",
                invocation.container_id
            ),
            problems.join("; "),
        ))
    }
}

/// VERSION: the versions this plugin speaks.
pub fn version(requested: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": requested,
        "supportedVersions": spec::SUPPORTED_VERSIONS,
    })
}

/// GC (spec 1.1): releases this network's handles on this node whose container is not in
/// `cni.dev/valid-attachments`. Only allocations go: a stale veth's name comes from its
/// pod's name, which GC is not told, and the kernel removes a veth with its netns anyway.
pub fn gc(config: &NetworkConfig) -> Result<serde_json::Value, CniError> {
    release_stale(
        &config.addressing.agent_socket,
        &config.name,
        config.valid_attachments.as_deref(),
    )
}

/// GC's work, for both plugins: every handle `<network>.<container>` the agent holds for
/// this node whose container is not among `valid` is released.
pub(super) fn release_stale(
    socket: &Path,
    network: &str,
    valid: Option<&[ValidAttachment]>,
) -> Result<serde_json::Value, CniError> {
    let Some(valid) = valid else {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            "GC needs \"cni.dev/valid-attachments\" in the configuration",
            "without it every attachment would look stale",
        ));
    };
    let prefix = format!("{network}.");
    let valid: std::collections::HashSet<String> = valid
        .iter()
        .map(|attachment| format!("{prefix}{}", attachment.container_id))
        .collect();
    let handles = match ask(socket, &Request::Handles { prefix })? {
        Response::Handles { handles } => handles,
        other => return Err(unexpected(other)),
    };
    for handle in handles.into_iter().filter(|handle| !valid.contains(handle)) {
        tracing::info!(handle, "GC: releasing a stale attachment's addresses");
        match ask(socket, &Request::Release { handle })? {
            Response::Released { .. } => {}
            other => return Err(unexpected(other)),
        }
    }
    Ok(serde_json::Value::Null)
}

/// STATUS (spec 1.1): ready when the agent answers and an enabled pool of each family the
/// configuration asks for has a free address (node selectors and block limits are not
/// weighed: ADD may still find no room for this node).
pub fn status(config: &NetworkConfig) -> Result<serde_json::Value, CniError> {
    readiness(&config.addressing)
}

/// STATUS's work, for both plugins.
pub(super) fn readiness(addressing: &Addressing) -> Result<serde_json::Value, CniError> {
    let not_available = |details: String| {
        CniError::new(
            ErrorCode::NotAvailable,
            "tortie cannot wire pods on this node now",
            details,
        )
    };
    let (free_ipv4, free_ipv6) = match ask(&addressing.agent_socket, &Request::Capacity) {
        Ok(Response::Capacity {
            free_ipv4,
            free_ipv6,
        }) => (free_ipv4, free_ipv6),
        Ok(other) => return Err(unexpected(other)),
        Err(error) => return Err(not_available(error.to_string())),
    };
    if addressing.assign_ipv4 && free_ipv4 == 0 {
        return Err(not_available(
            "no enabled IPv4 pool has a free address".into(),
        ));
    }
    if addressing.assign_ipv6 && free_ipv6 == 0 {
        return Err(not_available(
            "no enabled IPv6 pool has a free address".into(),
        ));
    }
    Ok(serde_json::Value::Null)
}
