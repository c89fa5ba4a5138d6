//! A cluster of tortie nodes: hosts on one LAN ([`Lan`]), each running the real
//! `tortie-node` in its namespace, all sharing one SQLite datastore file, each with its own
//! run directory (socket). Dropping the cluster kills the agents, then removes the
//! namespaces and the files.

use std::time::Duration;

use crate::{Exec, Lan, Output, Process, ScratchDir, binary, run_in, tortie_node, wait_until};

/// How long a node may take to do something the tests wait for (generous: the machine
/// may be busy compiling).
pub const CLUSTER_WAIT: Duration = Duration::from_secs(60);

pub struct Cluster {
    // Agents drop (and die) before the namespaces they run in, and those before the files.
    agents: Vec<Option<Process>>,
    pub lan: Lan,
    pub scratch: ScratchDir,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// `count` hosts, no agent started yet. `env` is added to every agent's environment
    /// (pool settings, for instance).
    #[track_caller]
    pub fn new(tag: &str, count: usize, env: &[(&str, &str)]) -> Cluster {
        Cluster::on(Lan::new(tag, count), tag, env)
    }

    /// A cluster on `lan` (e.g. [`Lan::routed`]), one node per host, no agent started yet.
    pub fn on(lan: Lan, tag: &str, env: &[(&str, &str)]) -> Cluster {
        let scratch = ScratchDir::new(tag);
        Cluster {
            agents: (0..lan.hosts.len()).map(|_| None).collect(),
            lan,
            scratch,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn node_name(index: usize) -> String {
        format!("node-{index}")
    }

    pub fn datastore(&self) -> String {
        self.scratch.join("tortie.db").display().to_string()
    }

    pub fn socket(&self, index: usize) -> String {
        self.scratch
            .join(&format!("run-{index}/agent.sock"))
            .display()
            .to_string()
    }

    /// The environment of node `index`'s agent.
    pub fn agent_env(&self, index: usize) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("NODENAME", Cluster::node_name(index)),
            ("IP_AUTODETECTION_METHOD", "interface=eth0".to_string()),
            ("IP6", "none".to_string()),
            ("TORTIE_DATASTORE", self.datastore()),
            (
                "TORTIE_RUN_DIR",
                self.scratch
                    .join(&format!("run-{index}"))
                    .display()
                    .to_string(),
            ),
            ("TORTIE_IPV4POOL_CIDR", "198.18.0.0/16".to_string()),
            // The agent names protocol 75 for iproute2; in tests, not in the host's /etc.
            (
                "TORTIE_RT_PROTOS_DIR",
                self.scratch.join("rt_protos.d").display().to_string(),
            ),
            ("TORTIE_LOG_LEVEL", "info".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (key, value) in &self.env {
            env.retain(|(k, _)| k != key);
            env.push((key.clone(), value.clone()));
        }
        env
    }

    /// Starts node `index`'s agent and waits until its local API answers.
    #[track_caller]
    pub fn start(&mut self, index: usize) {
        assert!(
            self.agents[index].is_none(),
            "node {index} is already running"
        );
        let process = Exec::new(tortie_node())
            .arg("run")
            .envs(self.agent_env(index))
            .spawn_in(&self.lan.hosts[index]);
        self.agents[index] = Some(process);
        wait_until(
            CLUSTER_WAIT,
            &format!("node {index}'s agent answers"),
            || {
                let status = self.status(index);
                if status.success() {
                    return Ok(());
                }
                let agent = self.agents[index].as_ref().expect("just started");
                if agent.has_exited() {
                    panic!("node {index}'s agent exited: {}", agent.stderr_so_far());
                }
                Err(format!("{status}"))
            },
        );
    }

    /// Starts the agents of nodes `0..count`, then waits until each of them has `sessions`
    /// BGP sessions Established (`count - 1` for an IPv4 mesh; one per family and peer with
    /// IPv6).
    #[track_caller]
    pub fn start_meshed(&mut self, count: usize, sessions: usize) {
        for index in 0..count {
            self.start(index);
        }
        for index in 0..count {
            self.wait_established(index, sessions);
        }
    }

    /// Stops node `index`'s agent with SIGTERM (as Kubernetes does) and returns its output.
    pub fn stop(&mut self, index: usize) -> Output {
        let process = self.agents[index].take().expect("node is running");
        process.stop(Duration::from_secs(20))
    }

    /// The process id of node `index`'s running agent.
    pub fn pid(&self, index: usize) -> u32 {
        self.agents[index].as_ref().expect("node is running").pid()
    }

    /// The log of a running agent so far.
    pub fn log(&self, index: usize) -> String {
        self.agents[index]
            .as_ref()
            .map(Process::stderr_so_far)
            .unwrap_or_default()
    }

    /// `tortiectl node status -o json` on node `index`.
    pub fn status(&self, index: usize) -> Output {
        self.tortiectl(index, &["node", "status", "-o", "json"])
    }

    /// Runs `tortiectl` in node `index`'s namespace against the cluster's datastore and
    /// that node's agent.
    pub fn tortiectl(&self, index: usize, args: &[&str]) -> Output {
        Exec::new(binary("tortiectl"))
            .args(args)
            .env("TORTIE_DATASTORE", format!("sqlite:{}", self.datastore()))
            .env("TORTIE_SOCKET", self.socket(index))
            .timeout(Duration::from_secs(30))
            .run_in(&self.lan.hosts[index])
    }

    /// `ip route show proto 75` (tortie's routes) on node `index`, one route per line.
    pub fn routes(&self, index: usize) -> Vec<String> {
        let output = run_in(
            &self.lan.hosts[index],
            "ip",
            ["route", "show", "proto", "75"],
            &[],
        )
        .expect_success();
        output
            .stdout
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// Waits until node `index` reports `count` peers Established.
    #[track_caller]
    pub fn wait_established(&self, index: usize, count: usize) -> serde_json::Value {
        wait_until(
            CLUSTER_WAIT,
            &format!("node {index} has {count} BGP peers established"),
            || {
                let output = self.status(index);
                let status: serde_json::Value =
                    serde_json::from_str(&output.stdout).map_err(|e| format!("{e}: {output}"))?;
                let peers = status["peers"].as_array().cloned().unwrap_or_default();
                let up = peers.iter().filter(|p| p["state"] == "Established").count();
                if up == count && peers.len() == count {
                    Ok(status)
                } else {
                    Err(format!("{status}"))
                }
            },
        )
    }

    /// Node `index`'s blocks, from its status.
    pub fn blocks(&self, index: usize) -> Vec<String> {
        let output = self.status(index);
        let status: serde_json::Value =
            serde_json::from_str(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output}"));
        status["blocks"]
            .as_array()
            .map(|blocks| {
                blocks
                    .iter()
                    .filter_map(|b| b.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}
