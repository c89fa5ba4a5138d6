//! Pods on a [`Cluster`]: a namespace wired in by the real `tortie` CNI plugin, run in the
//! node's namespace exactly as a container runtime runs it (`CNI_*` environment, the network
//! configuration on stdin).

use std::time::Duration;

use crate::cluster::CLUSTER_WAIT;
use crate::{Cluster, Exec, Netns, Output, binary, run_in, wait_until};

/// A pod: its netns (the test's guard) and what ADD said.
pub struct Pod {
    pub netns: Netns,
    pub node: usize,
    pub name: String,
    /// The pod's IPv4 address, bare.
    pub address: String,
    /// The host side of its veth (`cali…`).
    pub host_link: String,
}

impl Pod {
    /// The netns path the runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.netns.name())
    }

    pub fn container_id(&self) -> String {
        format!("ctr-{}", self.name)
    }

    /// The `CNI_*` environment of `command` for this pod.
    pub fn env(&self, command: &str) -> Vec<(String, String)> {
        vec![
            ("CNI_COMMAND".into(), command.into()),
            ("CNI_CONTAINERID".into(), self.container_id()),
            ("CNI_NETNS".into(), self.path()),
            ("CNI_IFNAME".into(), "eth0".into()),
            (
                "CNI_ARGS".into(),
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=test;K8S_POD_NAME={}",
                    self.name
                ),
            ),
        ]
    }

    /// Runs the plugin with `command` for this pod on its node.
    pub fn run(&self, cluster: &Cluster, command: &str, stdin: &str) -> Output {
        let env = self.env(command);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        cluster.plugin(self.node, &env, stdin)
    }
}

impl Cluster {
    /// The network configuration a runtime would pass to node `index`'s plugin; `mtu` 0
    /// leaves the MTU to the agent (host MTU less encapsulation).
    pub fn cni_config(&self, index: usize, version: &str, mtu: u32) -> String {
        let mut config = serde_json::json!({
            "cniVersion": version,
            "name": "k8s-pod-network",
            "type": "tortie",
            "agent_socket": self.socket(index),
        });
        if mtu != 0 {
            config["mtu"] = mtu.into();
        }
        config.to_string()
    }

    /// Runs the `tortie` plugin in node `index`'s namespace, as a runtime would.
    pub fn plugin(&self, index: usize, env: &[(&str, &str)], stdin: &str) -> Output {
        Exec::new(binary("tortie"))
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(stdin.as_bytes().to_vec())
            .timeout(Duration::from_secs(60))
            .run_in(&self.lan.hosts[index])
    }

    /// Creates pod `name` on node `node` with ADD (cniVersion 1.0.0, the agent's MTU).
    #[track_caller]
    pub fn add_pod(&self, node: usize, name: &str) -> Pod {
        self.add_pod_with(node, name, &self.cni_config(node, "1.0.0", 0))
    }

    /// Creates pod `name` on node `node` with ADD and `config`, and checks the result's
    /// shape (two interfaces, the host side a `cali` name with tortie's MAC, an IPv4 /32
    /// from a test network, the default route through 169.254.1.1).
    #[track_caller]
    pub fn add_pod_with(&self, node: usize, name: &str, config: &str) -> Pod {
        let mut pod = Pod {
            netns: Netns::new(&format!("pod-{name}")),
            node,
            name: name.to_string(),
            address: String::new(),
            host_link: String::new(),
        };
        let output = pod.run(self, "ADD", config);
        assert!(output.success(), "ADD of {name}: {output}");
        let result: serde_json::Value =
            serde_json::from_str(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output}"));
        let asked: serde_json::Value = serde_json::from_str(config).expect("a JSON config");
        assert_eq!(result["cniVersion"], asked["cniVersion"], "{result}");
        let interfaces = result["interfaces"].as_array().expect("interfaces");
        assert_eq!(interfaces.len(), 2, "{result}");
        assert_eq!(interfaces[0]["mac"], "ee:ee:ee:ee:ee:ee", "{result}");
        assert_eq!(interfaces[1]["name"], "eth0", "{result}");
        assert_eq!(interfaces[1]["sandbox"], pod.path().as_str(), "{result}");
        assert_eq!(result["routes"][0]["gw"], "169.254.1.1", "{result}");
        let address = result["ips"][0]["address"].as_str().expect("an address");
        let bare = address.trim_end_matches("/32");
        assert!(
            address.ends_with("/32") && bare.parse().map(crate::is_test_address).unwrap_or(false),
            "{result}"
        );
        pod.address = bare.to_string();
        pod.host_link = interfaces[0]["name"]
            .as_str()
            .expect("host link")
            .to_string();
        assert!(
            pod.host_link.starts_with("cali") && pod.host_link.len() == 15,
            "{result}"
        );
        pod
    }
}

/// Waits until `from` gets an answer to a ping to `to`.
#[track_caller]
pub fn wait_ping(from: &Netns, to: &str) {
    wait_until(CLUSTER_WAIT, &format!("{} pings {to}", from.name()), || {
        let output = run_in(from, "ping", ["-c", "1", "-W", "1", to], &[]);
        if output.success() {
            Ok(())
        } else {
            Err(format!("{output}"))
        }
    });
}
