//! The node agents: `tortie-node run` started inside each node's namespace as a daemon that
//! outlives tortiectl, the wait until the mesh is up, and stopping them by recorded PID.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::netns;
use super::state::NodeState;
use crate::api;

pub const AGENT: &str = "tortie-node";
/// How long the agents get to answer and mesh.
pub const MESH_WAIT: Duration = Duration::from_secs(60);
/// How long a stopped agent gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Variables the agent reads that must not leak in from the caller's environment.
const AGENT_VARIABLES: &[&str] = &[
    "IP",
    "IP6",
    "AS",
    "NODENAME",
    "IP_AUTODETECTION_METHOD",
    "IP6_AUTODETECTION_METHOD",
    "NO_DEFAULT_POOLS",
    "DATASTORE_TYPE",
];

/// `name` beside tortiectl's own executable, else on PATH.
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let mut looked = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(dir.display().to_string());
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(dir.display().to_string());
    }
    bail!(
        "cannot find `{name}`: looked beside tortiectl and on PATH ({}); build it with \
         `cargo build --release --bins`",
        looked.join(", ")
    )
}

/// Starts the agent of `node` in its namespace: its own session, stdin from /dev/null,
/// output to its log. The child is returned so `up` can notice an early exit.
pub fn start(
    binary: &Path,
    node: &NodeState,
    state_dir: &Path,
    run_dir: &Path,
    pool_env: &[(String, String)],
) -> Result<Child> {
    fs::create_dir_all(run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let log =
        File::create(&node.log).with_context(|| format!("cannot create {}", node.log.display()))?;
    let target = netns::open(&node.netns)?;
    let mut command = Command::new(binary);
    command.arg("run");
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("TORTIE_") || AGENT_VARIABLES.contains(&key.as_str()) {
            command.env_remove(key);
        }
    }
    command
        .env("NODENAME", &node.name)
        .env("IP_AUTODETECTION_METHOD", "interface=eth0")
        .env("IP6", "none")
        .env("TORTIE_DATASTORE", state_dir.join("tortie.db"))
        .env("TORTIE_RUN_DIR", run_dir)
        .env("TORTIE_RT_PROTOS_DIR", state_dir.join("rt_protos.d"))
        .env("TORTIE_HEALTH_LISTEN", "off")
        .env("TORTIE_IPV4POOL_CIDR", super::topology::POOL_CIDR)
        .envs(pool_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot share the log file")?)
        .stderr(log);
    let fd = target.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls: setns and setsid.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {} in {}", binary.display(), node.netns))?;
    drop(target);
    Ok(child)
}

/// The last lines of a log, for errors.
pub fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// What one node's agent says about the mesh: `Ok(())` when every other node's session is
/// Established, else what is missing.
fn meshed(node: &NodeState, others: &[String]) -> Result<(), String> {
    let status = api::status(&node.socket, Duration::from_secs(3))
        .map_err(|e| format!("{}: not answering ({e})", node.name))?;
    let missing: Vec<String> = others
        .iter()
        .filter(|address| {
            !status
                .peers
                .iter()
                .any(|p| &p.address.to_string() == *address && p.state == "Established")
        })
        .map(|address| {
            let state = status
                .peers
                .iter()
                .find(|p| &p.address.to_string() == address)
                .map_or("no session".to_string(), |p| {
                    format!("{} {}", p.state, p.info)
                });
            format!("{address}: {}", state.trim())
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", node.name, missing.join(", ")))
    }
}

/// Polls until every agent answers and has every other node's BGP session Established.
/// An agent that exits fails the wait at once, with its log.
pub fn wait_for_mesh(nodes: &[NodeState], children: &mut [Child]) -> Result<()> {
    let deadline = Instant::now() + MESH_WAIT;
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| n.address.split('/').next().unwrap_or_default().to_string())
        .collect();
    loop {
        for (node, child) in nodes.iter().zip(children.iter_mut()) {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "tortie-node on {} exited ({status}); the end of {}:\n{}",
                    node.name,
                    node.log.display(),
                    log_tail(&node.log)
                );
            }
        }
        let problems: Vec<String> = nodes
            .iter()
            .zip(&addresses)
            .filter_map(|(node, own)| {
                let others: Vec<String> = addresses.iter().filter(|a| *a != own).cloned().collect();
                meshed(node, &others).err()
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the BGP mesh was not up within {} s; last seen:\n  {}\n(agent logs: {})",
                MESH_WAIT.as_secs(),
                problems.join("\n  "),
                nodes
                    .iter()
                    .map(|n| n.log.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether `pid` still is a tortie-node (and not a recycled PID of something else).
fn is_agent(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|cmdline| {
            let program = cmdline.split(|b| *b == 0).next()?.to_vec();
            let program = String::from_utf8(program).ok()?;
            Some(Path::new(&program).file_name()? == AGENT)
        })
        .unwrap_or(false)
}

/// What stopping a recorded agent did.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    Terminated,
    Killed,
    /// Gone already, or the PID now belongs to another program (left alone).
    NotRunning,
}

/// SIGTERM, up to 20 s for it to go, then SIGKILL. Only ever the recorded PID, and only
/// while it is a tortie-node.
pub fn stop(pid: u32) -> Result<Stopped> {
    if !alive(pid) || !is_agent(pid) {
        return Ok(Stopped::NotRunning);
    }
    let signal = |number| {
        // SAFETY: kill has no memory preconditions; the PID was checked just above.
        unsafe { libc::kill(pid as libc::pid_t, number) }
    };
    signal(libc::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if !alive(pid) {
            return Ok(Stopped::Terminated);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if is_agent(pid) {
        signal(libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Stopped::Killed)
}
