//! What a runtime hands the plugin: the `CNI_*` environment and the network configuration on
//! stdin, checked before anything is done, so that bad input changes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::spec::{self, CniError, CniResult, ErrorCode};
use crate::api::{DEFAULT_SOCKET, Request};

/// The network configuration (one plugin's entry of a conflist, as the runtime passes it).
#[derive(Debug, Clone, Deserialize)]
pub struct NetworkConfig {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Which agent and which addresses (keys shared with `tortie-ipam`'s `ipam` section).
    #[serde(flatten)]
    pub addressing: Addressing,
    /// The pod's MTU; 0 or absent: what the node agent says (host MTU less encapsulation).
    #[serde(default)]
    pub mtu: u32,
    /// GC's list of the attachments still in use: every other one of this network goes.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// What an earlier plugin (or ADD, for CHECK and DEL) returned.
    #[serde(default, rename = "prevResult")]
    pub prev_result: Option<CniResult>,
}

/// Where a pod's addresses come from: the keys `tortie` reads at the top of its
/// configuration and `tortie-ipam` under `ipam`.
#[derive(Debug, Clone, Deserialize)]
pub struct Addressing {
    /// The node agent's socket.
    #[serde(default = "default_socket")]
    pub agent_socket: PathBuf,
    /// Whether to give the pod an IPv4 address (default true) and an IPv6 one (default
    /// false), as Calico's `assign_ipv4` / `assign_ipv6`.
    #[serde(default = "yes")]
    pub assign_ipv4: bool,
    #[serde(default)]
    pub assign_ipv6: bool,
    /// Only these pools (names or CIDRs), as Calico's `ipv4_pools` / `ipv6_pools`.
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
}

impl Addressing {
    /// Refuses a section that asks for no address; `section` prefixes the key names in the
    /// error (`"ipam."` for tortie-ipam's).
    pub fn check(&self, section: &str) -> Result<(), CniError> {
        if !self.assign_ipv4 && !self.assign_ipv6 {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                "the network configuration asks for no address",
                format!("{section}assign_ipv4 and {section}assign_ipv6 are both false"),
            ));
        }
        Ok(())
    }

    /// The agent request that assigns `handle` its addresses, with the pod's namespace, name
    /// and container as attributes and the pools of the wanted families.
    pub fn assign(&self, handle: &str, invocation: &Invocation) -> Request {
        let mut attributes = BTreeMap::new();
        if let Some((namespace, pod)) = invocation.pod() {
            attributes.insert("namespace".to_string(), namespace.to_string());
            attributes.insert("pod".to_string(), pod.to_string());
        }
        attributes.insert("container".to_string(), invocation.container_id.clone());
        let mut pools = Vec::new();
        if self.assign_ipv4 {
            pools.extend(self.ipv4_pools.iter().cloned());
        }
        if self.assign_ipv6 {
            pools.extend(self.ipv6_pools.iter().cloned());
        }
        Request::Assign {
            handle: handle.to_string(),
            num4: u32::from(self.assign_ipv4),
            num6: u32::from(self.assign_ipv6),
            attributes,
            pools,
        }
    }
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

/// The pod MTU when the configuration gives none: a 1500-byte host network less VXLAN's 50
/// bytes, the largest encapsulation overhead of IPv4 pools, so a pod's packets fit whatever
/// the pool's mode (IPIP needs 20). A configured `mtu` is taken as given.
pub const DEFAULT_MTU: u32 = 1450;

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}

fn yes() -> bool {
    true
}

impl NetworkConfig {
    /// Parses and checks stdin's configuration.
    pub fn parse(bytes: &[u8]) -> Result<NetworkConfig, CniError> {
        let config: NetworkConfig = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                ErrorCode::Decode,
                "the network configuration on stdin does not parse",
                e.to_string(),
            )
        })?;
        spec::check_version(&config.cni_version, "tortie")?;
        if config.name.is_empty() {
            return Err(CniError::new(
                ErrorCode::InvalidConfig,
                "the network configuration has an empty \"name\"",
                "the name is part of every address's handle (<name>.<container ID>)",
            ));
        }
        config.addressing.check("")?;
        Ok(config)
    }

    /// The pod's MTU: the configured one, else what the node agent says its pods need
    /// (`agent_mtu`, host MTU less encapsulation), else [`DEFAULT_MTU`].
    pub fn pod_mtu(&self, agent_mtu: u32) -> u32 {
        match (self.mtu, agent_mtu) {
            (0, 0) => DEFAULT_MTU,
            (0, agent) => agent,
            (configured, _) => configured,
        }
    }
}

/// The command of `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    /// Spec 1.1: release what belongs to attachments no longer valid.
    Gc,
    /// Spec 1.1: can the plugin serve ADD now?
    Status,
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub command: Command,
    pub container_id: String,
    /// `CNI_NETNS`; DEL may come without one (the container is gone).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS`, `K=V;K=V`.
    pub args: BTreeMap<String, String>,
}

impl Invocation {
    /// `CNI_NETNS`, which ADD and CHECK cannot do without.
    pub fn required_netns(&self) -> Result<&std::path::Path, CniError> {
        self.netns
            .as_deref()
            .ok_or_else(|| CniError::new(ErrorCode::InvalidEnvironment, "CNI_NETNS is not set", ""))
    }

    /// Reads the environment through `lookup` (so tests need not touch the process's).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let missing = |name: &str| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("{name} is not set"),
                "a container runtime sets CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME",
            )
        };
        let command = match lookup("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("GC") => Command::Gc,
            Some("STATUS") => Command::Status,
            Some(other) => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("CNI_COMMAND {other:?} is not supported"),
                    "tortie knows ADD, DEL, CHECK, GC, STATUS and VERSION",
                ));
            }
            None => return Err(missing("CNI_COMMAND")),
        };
        let non_empty = |name: &str| lookup(name).filter(|value| !value.is_empty());
        if matches!(command, Command::Version | Command::Gc | Command::Status) {
            // These concern the network, not one container: no other variable is needed.
            return Ok(Invocation {
                command,
                container_id: String::new(),
                netns: None,
                ifname: String::new(),
                args: BTreeMap::new(),
            });
        }
        let container_id =
            non_empty("CNI_CONTAINERID").ok_or_else(|| missing("CNI_CONTAINERID"))?;
        let netns = non_empty("CNI_NETNS").map(PathBuf::from);
        if netns.is_none() && command != Command::Del {
            return Err(missing("CNI_NETNS"));
        }
        let ifname = non_empty("CNI_IFNAME").ok_or_else(|| missing("CNI_IFNAME"))?;
        if ifname.len() > 15 || ifname.contains('/') || ifname.contains(char::is_whitespace) {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_IFNAME {ifname:?} is not a valid interface name"),
                "at most 15 characters, no '/' or white space",
            ));
        }
        let args = parse_args(&lookup("CNI_ARGS").unwrap_or_default())?;
        Ok(Invocation {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }

    /// The pod's namespace and name, from the Kubernetes runtime's `CNI_ARGS`.
    pub fn pod(&self) -> Option<(&str, &str)> {
        let name = self.args.get("K8S_POD_NAME")?;
        let namespace = self
            .args
            .get("K8S_POD_NAMESPACE")
            .map_or("default", String::as_str);
        Some((namespace, name))
    }
}

/// `CNI_ARGS`: `K=V` pairs separated by `;`.
fn parse_args(text: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut args = BTreeMap::new();
    for pair in text.split(';').filter(|pair| !pair.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_ARGS has {pair:?}, which is not KEY=VALUE"),
                "CNI_ARGS is KEY=VALUE pairs separated by ';'",
            ));
        };
        args.insert(key.to_string(), value.to_string());
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn reads_a_runtimes_environment() {
        let invocation = Invocation::from_env(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=nginx-1",
            ),
        ]))
        .unwrap();
        assert_eq!(invocation.command, Command::Add);
        assert_eq!(invocation.pod(), Some(("web", "nginx-1")));
    }

    #[test]
    fn add_without_a_netns_is_an_environment_error_and_del_is_not() {
        let base = [
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_COMMAND", "ADD"),
        ];
        let error = Invocation::from_env(env(&base)).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidEnvironment);
        assert!(error.message.contains("CNI_NETNS"), "{error}");
        let mut del = base;
        del[2] = ("CNI_COMMAND", "DEL");
        assert!(Invocation::from_env(env(&del)).unwrap().netns.is_none());
    }

    #[test]
    fn gc_and_status_need_no_container() {
        for command in ["GC", "STATUS", "VERSION"] {
            let invocation = Invocation::from_env(env(&[("CNI_COMMAND", command)])).unwrap();
            assert!(invocation.container_id.is_empty());
        }
        let config = NetworkConfig::parse(
            br#"{"cniVersion":"1.1.0","name":"k8s","type":"tortie",
                "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        let valid = config.valid_attachments.unwrap();
        assert_eq!(valid[0].container_id, "c1");
    }

    #[test]
    fn bad_configurations_are_named() {
        let decode = NetworkConfig::parse(b"{not json").unwrap_err();
        assert_eq!(decode.code, ErrorCode::Decode);
        let version =
            NetworkConfig::parse(br#"{"cniVersion":"9.9.9","name":"k8s","type":"tortie"}"#)
                .unwrap_err();
        assert_eq!(version.code, ErrorCode::IncompatibleVersion);
        assert!(version.message.contains("9.9.9"), "{version}");
        let config =
            NetworkConfig::parse(br#"{"cniVersion":"1.0.0","name":"k8s","type":"tortie"}"#)
                .unwrap();
        assert_eq!(config.pod_mtu(0), DEFAULT_MTU);
        assert_eq!(config.pod_mtu(1480), 1480);
        assert!(config.addressing.assign_ipv4 && !config.addressing.assign_ipv6);
    }
}
