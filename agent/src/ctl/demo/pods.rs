//! Pods: a namespace each, wired by the real `tortie` CNI plugin, run as a container runtime
//! runs it (CNI_* environment, the network configuration on stdin), from inside the node's
//! namespace.

use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};

use super::netns;

pub const PLUGIN: &str = "tortie";

/// What the plugin's result says about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wired {
    pub address: IpAddr,
    /// The host side of the pod's veth (`cali…`).
    pub link: String,
}

/// The network configuration: mtu 0, so the agent's MTU is used.
pub fn config(agent_socket: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "demo",
        "type": "tortie",
        "mtu": 0,
        "agent_socket": agent_socket,
    })
    .to_string()
}

/// The pod's address and host link from an ADD result.
pub fn parse_result(stdout: &str) -> Result<Wired> {
    let result: crate::cni::spec::CniResult = serde_json::from_str(stdout)
        .with_context(|| format!("the plugin's result does not parse: {stdout}"))?;
    let address = result
        .ips
        .first()
        .ok_or_else(|| anyhow!("the plugin's result has no address: {stdout}"))?
        .address
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("the plugin's result has a bad address: {stdout}"))?;
    let link = result
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_none())
        .map(|i| i.name.clone())
        .unwrap_or_default();
    Ok(Wired { address, link })
}

/// Runs `tortie` ADD for pod `pod` (namespace `pod_netns`) on the node in `node_netns`.
pub fn wire(
    plugin: &Path,
    node_netns: &str,
    node_index: usize,
    pod_index: usize,
    pod_netns: &str,
    agent_socket: &Path,
) -> Result<Wired> {
    let node = netns::open(node_netns)?;
    let fd = node.as_raw_fd();
    let mut command = Command::new(plugin);
    command
        .env("CNI_COMMAND", "ADD")
        .env(
            "CNI_CONTAINERID",
            format!("demo-n{node_index}-p{pod_index}"),
        )
        .env("CNI_NETNS", netns::path(pod_netns))
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=pod-{node_index}-{pod_index}"
            ),
        )
        .env(
            "CNI_PATH",
            plugin.parent().unwrap_or_else(|| Path::new("/")),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only setns between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {}", plugin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(config(agent_socket).as_bytes())
            .context("cannot write the plugin's configuration")?;
    }
    let output = child
        .wait_with_output()
        .context("cannot wait for the plugin")?;
    drop(node);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "the tortie plugin failed ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse_result(&stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_and_host_link_of_a_result() {
        let result = r#"{"cniVersion":"1.0.0",
            "interfaces":[{"name":"cali0123456789a","mac":"ee:ee:ee:ee:ee:ee"},
                          {"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/run/netns/p"}],
            "ips":[{"address":"198.18.3.5/32","interface":1}]}"#;
        let wired = parse_result(result).unwrap();
        assert_eq!(wired.address.to_string(), "198.18.3.5");
        assert_eq!(wired.link, "cali0123456789a");
        assert!(parse_result(r#"{"cniVersion":"1.0.0"}"#).is_err());
    }

    #[test]
    fn the_configuration_leaves_the_mtu_to_the_agent() {
        let config: serde_json::Value =
            serde_json::from_str(&config(Path::new("/run/d/node0/agent.sock"))).unwrap();
        assert_eq!(config["mtu"], 0);
        assert_eq!(config["type"], "tortie");
        assert_eq!(config["agent_socket"], "/run/d/node0/agent.sock");
    }
}
