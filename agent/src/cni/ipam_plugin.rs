//! `tortie-ipam`: tortie's addresses for any interface plugin (the reference `bridge`,
//! `macvlan`, `ipvlan`, and so Multus secondary networks). It only assigns and releases,
//! through the node agent like `tortie`; the interface plugin wires the pod. GC and STATUS
//! (spec 1.1, which an interface plugin passes on to its IPAM plugin) do what `tortie`'s do.
//!
//! Addresses are returned as /32 (/128), with no gateway: a pool's addresses are spread over
//! nodes' blocks, so no subnet is the pod's own and no address of it is free to serve as a
//! gateway. Reachability comes from the configuration's `routes` (e.g. the pool's CIDR with
//! no `gw`: on-link, so pods on one bridge or parent reach each other directly).

use std::net::IpAddr;

use serde::Deserialize;

use super::commands::{self, ask};
use super::config::{Addressing, Command, Invocation, ValidAttachment};
use super::spec::{self, CniError, CniResult, ErrorCode, IpConfig, Route};
use crate::api::{Request, Response};

/// The network configuration as an IPAM plugin sees it: tortie's keys are under `ipam`.
#[derive(Debug, Clone, Deserialize)]
pub struct IpamNetworkConfig {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    pub ipam: IpamConfig,
    /// GC's list of the attachments still in use (the runtime's, passed on by the
    /// interface plugin).
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpamConfig {
    /// `agent_socket`, `assign_ipv4`, `assign_ipv6`, `ipv4_pools`, `ipv6_pools`, as `tortie`.
    #[serde(flatten)]
    pub addressing: Addressing,
    /// Routes for the result, as host-local's `routes`.
    #[serde(default)]
    pub routes: Vec<Route>,
}

fn parse(bytes: &[u8]) -> Result<IpamNetworkConfig, CniError> {
    let config: IpamNetworkConfig = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(
            ErrorCode::Decode,
            "the network configuration on stdin does not parse (tortie-ipam reads \"name\" and \"ipam\")",
            e.to_string(),
        )
    })?;
    spec::check_version(&config.cni_version, "tortie-ipam")?;
    config.ipam.addressing.check("ipam.")?;
    Ok(config)
}

/// Runs one invocation of `tortie-ipam`: what to print, and whether it succeeded.
pub fn run(env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> (String, bool) {
    super::run_with(env, stdin, dispatch)
}

fn dispatch(invocation: &Invocation, stdin: &[u8]) -> Result<serde_json::Value, CniError> {
    let config = parse(stdin)?;
    let addressing = &config.ipam.addressing;
    let handle = commands::handle(&config.name, invocation);
    let socket = &addressing.agent_socket;
    match invocation.command {
        Command::Add => match ask(socket, &addressing.assign(&handle, invocation))? {
            Response::Assigned { ipv4, ipv6, .. } => {
                let addresses: Vec<IpAddr> = ipv4.into_iter().chain(ipv6).collect();
                Ok(result(&config, &addresses))
            }
            other => Err(commands::unexpected(other)),
        },
        Command::Del => match ask(socket, &Request::Release { handle })? {
            Response::Released { .. } => Ok(serde_json::Value::Null),
            other => Err(commands::unexpected(other)),
        },
        Command::Check => match ask(
            socket,
            &Request::Addresses {
                handle: handle.clone(),
            },
        )? {
            Response::Addresses { addresses, .. } if addresses.is_empty() => Err(CniError::new(
                ErrorCode::CheckFailed,
                format!("tortie-node holds no address for handle {handle}"),
                "",
            )),
            Response::Addresses { .. } => Ok(serde_json::Value::Null),
            other => Err(commands::unexpected(other)),
        },
        Command::Gc => {
            commands::release_stale(socket, &config.name, config.valid_attachments.as_deref())
        }
        Command::Status => commands::readiness(addressing),
        Command::Version => unreachable!("answered by run_with"),
    }
}

fn result(config: &IpamNetworkConfig, addresses: &[IpAddr]) -> serde_json::Value {
    let with_version = spec::ips_carry_version(&config.cni_version);
    let result = CniResult {
        cni_version: config.cni_version.clone(),
        interfaces: Vec::new(),
        ips: addresses
            .iter()
            .map(|address| IpConfig {
                version: with_version
                    .then(|| if address.is_ipv4() { "4" } else { "6" }.to_string()),
                address: format!("{address}/{}", if address.is_ipv4() { 32 } else { 128 }),
                gateway: None,
                interface: None,
            })
            .collect(),
        routes: config.ipam.routes.clone(),
        dns: serde_json::json!({}),
    };
    serde_json::to_value(result).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_keys_under_ipam() {
        let config = parse(
            br#"{"cniVersion":"1.0.0","name":"net","type":"bridge",
                "ipam":{"type":"tortie-ipam","ipv4_pools":["198.18.0.0/16"],
                        "routes":[{"dst":"198.18.0.0/16"}]}}"#,
        )
        .unwrap();
        assert_eq!(config.ipam.addressing.ipv4_pools, ["198.18.0.0/16"]);
        let value = result(&config, &["198.18.0.7".parse().unwrap()]);
        assert_eq!(value["ips"][0]["address"], "198.18.0.7/32");
        assert_eq!(value["routes"][0]["dst"], "198.18.0.0/16");
        assert!(parse(br#"{"cniVersion":"1.0.0","name":"net"}"#).is_err());
    }
}
