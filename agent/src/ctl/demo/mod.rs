//! `tortiectl demo up|status|down`: a whole tortie cluster on this machine, made of network
//! namespaces: nodes on a switch (or two subnets behind a router), a real `tortie-node` in
//! each, pods wired by the real `tortie` CNI plugin, and a report that shows the BGP
//! sessions, the routes and whether every pod reaches every other.
//!
//! One file per concern: [`netns`] (named namespaces and work inside them), [`topology`]
//! (the plan, the encapsulation, links and addresses), [`nodes`] (the agents), [`pods`]
//! (the plugin), [`reach`] (pings), [`report`] (printing) and [`state`] (the state file).

pub mod netns;
pub mod nodes;
pub mod pods;
pub mod reach;
pub mod report;
pub mod state;
pub mod topology;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};

use state::{NodeState, PodState, State};
use topology::Encap;

pub const DEFAULT_NAME: &str = "tortie-demo";
pub const DEFAULT_STATE_DIR: &str = "/run/tortie-demo";
const MAX_PODS: usize = 50;

#[derive(Args, Clone)]
pub struct Where {
    /// The demo's name: every namespace it makes starts with `<name>-`.
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
    /// Where its state file, datastore, sockets and agent logs live.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Subcommand)]
pub enum DemoCommand {
    /// Build a cluster of namespaces with tortie-node on each node and pods wired by the
    /// tortie plugin, then report sessions, routes and pod-to-pod reachability. Exits 1
    /// when a pod pair does not reach (the cluster stays up for inspection).
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Pods per node.
        #[arg(long, default_value_t = 2)]
        pods: usize,
        #[arg(long, value_enum, default_value = "auto")]
        encap: Encap,
        #[command(flatten)]
        place: Where,
    },
    /// The same report for a running demo.
    Status {
        #[command(flatten)]
        place: Where,
    },
    /// Stop the agents and remove every namespace and file the demo made.
    Down {
        #[command(flatten)]
        place: Where,
    },
}

pub fn run(command: DemoCommand) -> Result<u8> {
    match command {
        DemoCommand::Up {
            nodes,
            pods,
            encap,
            place,
        } => up(nodes, pods, encap, &place),
        DemoCommand::Status { place } => status(&place),
        DemoCommand::Down { place } => down(&place),
    }
}

fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 48
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!(
            "--name {name:?}: use 1 to 48 letters, digits, `-` or `_` (it prefixes namespace names)"
        );
    }
    Ok(())
}

fn progress(line: &str) {
    eprintln!("{line}");
}

fn up(nodes: usize, pods: usize, encap: Encap, place: &Where) -> Result<u8> {
    check_name(&place.name)?;
    if !(1..=topology::MAX_NODES).contains(&nodes) {
        bail!("--nodes {nodes}: between 1 and {}", topology::MAX_NODES);
    }
    if pods > MAX_PODS {
        bail!("--pods {pods}: at most {MAX_PODS} per node");
    }
    let state_dir = &place.state_dir;
    let already_running = || {
        anyhow!(
            "a demo is already running (state {}); run `tortiectl demo down` first",
            state::path(state_dir).display()
        )
    };
    if state::load(state_dir)?.is_some() {
        return Err(already_running());
    }
    let prefix = format!("{}-", place.name);
    let leftovers = netns::list_with_prefix(&prefix);
    if !leftovers.is_empty() {
        bail!(
            "network namespaces named {prefix}* exist already ({}); run `tortiectl demo down \
             --name {}` first",
            leftovers.join(", "),
            place.name
        );
    }
    let mode = topology::pool_mode(encap, &topology::ipip_support()?).map_err(|e| anyhow!(e))?;
    let agent = nodes::find_binary(nodes::AGENT)?;
    let plugin = if pods > 0 {
        Some(nodes::find_binary(pods::PLUGIN)?)
    } else {
        None
    };
    if let Some(notice) = &mode.notice {
        eprintln!("{notice}");
    }
    fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let mut state = State {
        name: place.name.clone(),
        encap: if mode.label == encap.label() {
            mode.label.clone()
        } else {
            format!("{} → {}", encap.label(), mode.label)
        },
        pool_env: mode.env.clone(),
        ..State::default()
    };
    // Checked above for a clear early answer; decided here, atomically, for two `up`s at once.
    if !state::claim(state_dir, &state)? {
        return Err(already_running());
    }
    let built = build(
        &mut state,
        state_dir,
        nodes,
        pods,
        encap,
        &agent,
        plugin.as_deref(),
    );
    if let Err(error) = built {
        eprintln!("up failed; removing what it made");
        for line in teardown(Some(&state), &place.name, state_dir) {
            eprintln!("{line}");
        }
        return Err(error);
    }
    let all = print_report(&state)?;
    eprintln!("inspect: tortiectl demo status; remove: tortiectl demo down");
    Ok(if all { 0 } else { 1 })
}

fn build(
    state: &mut State,
    state_dir: &Path,
    node_count: usize,
    pods_per_node: usize,
    encap: Encap,
    agent: &Path,
    plugin: Option<&Path>,
) -> Result<()> {
    let plan = topology::plan(&state.name, node_count, encap);
    progress(&format!("building {node_count} nodes ({})…", state.encap));
    for switch in &plan.switches {
        state.switches.push(switch.clone());
        state::save(state_dir, state)?;
        netns::create(switch)?;
        topology::build_switch(switch)?;
    }
    if let Some(router) = &plan.router {
        state.router = Some(router.clone());
        state::save(state_dir, state)?;
        netns::create(router)?;
        topology::build_router(&plan, router)?;
    }
    for node in &plan.nodes {
        let run_dir = state_dir.join(format!("node{}", node.index));
        state.nodes.push(NodeState {
            name: node.name.clone(),
            netns: node.netns.clone(),
            address: format!("{}/{}", node.address, topology::SUBNET_LEN),
            socket: run_dir.join("agent.sock"),
            log: state_dir.join(format!("node{}.log", node.index)),
            pid: None,
        });
        state::save(state_dir, state)?;
        netns::create(&node.netns)?;
        topology::build_node(&plan, node)?;
    }
    let mut children: Vec<Child> = Vec::new();
    for index in 0..state.nodes.len() {
        progress(&format!(
            "starting tortie-node on {}…",
            state.nodes[index].name
        ));
        let run_dir = state_dir.join(format!("node{index}"));
        let child = nodes::start(
            agent,
            &state.nodes[index],
            state_dir,
            &run_dir,
            &state.pool_env,
        )?;
        state.nodes[index].pid = Some(child.id());
        children.push(child);
        state::save(state_dir, state)?;
    }
    progress("waiting for BGP…");
    nodes::wait_for_mesh(&state.nodes, &mut children)?;
    let Some(plugin) = plugin else {
        return Ok(());
    };
    for node_index in 0..state.nodes.len() {
        for pod_index in 0..pods_per_node {
            let name = format!("pod-{node_index}-{pod_index}");
            progress(&format!("wiring {name}…"));
            let node = state.nodes[node_index].clone();
            let pod_netns = format!("{}-n{node_index}-p{pod_index}", state.name);
            state.pods.push(PodState {
                name,
                node: node.name.clone(),
                netns: pod_netns.clone(),
                address: String::new(),
                link: String::new(),
            });
            state::save(state_dir, state)?;
            netns::create(&pod_netns)?;
            topology::loopback_up(&pod_netns)?;
            let wired = pods::wire(
                plugin,
                &node.netns,
                node_index,
                pod_index,
                &pod_netns,
                &node.socket,
            )?;
            if let Some(pod) = state.pods.last_mut() {
                pod.address = wired.address.to_string();
                pod.link = wired.link;
            }
            state::save(state_dir, state)?;
        }
    }
    Ok(())
}

/// Prints the report; returns whether every pod pair reached.
fn print_report(state: &State) -> Result<bool> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "tortie demo {:?}: {} nodes, encapsulation {}",
        state.name,
        state.nodes.len(),
        state.encap
    );
    for node in &state.nodes {
        println!(
            "\n=== {} ({}, namespace {}) ===",
            node.name, node.address, node.netns
        );
        match crate::api::status(&node.socket, Duration::from_secs(5)) {
            Ok(status) => print!("{}", crate::ctl::node::render_status(&status, now)),
            Err(error) => println!("tortie-node is not answering: {error}"),
        }
        println!("\ntortie routes (proto tortie):");
        match topology::tortie_routes(&node.netns) {
            Ok(routes) => print!("{}", report::render_routes(&routes)),
            Err(error) => println!("  cannot read them: {error:#}"),
        }
    }
    println!("\n=== pods ===");
    if state.pods.is_empty() {
        println!("no pods");
        return Ok(true);
    }
    print!("{}", report::render_pods(&state.pods));
    let targets: Vec<(String, Ipv4Addr)> = state
        .pods
        .iter()
        .map(|pod| {
            let address = pod
                .address
                .parse()
                .with_context(|| format!("{} has no IPv4 address recorded", pod.name))?;
            Ok((pod.netns.clone(), address))
        })
        .collect::<Result<_>>()?;
    let results = reach::matrix(&targets, reach::PING_WAIT);
    let names: Vec<String> = state.pods.iter().map(|p| p.name.clone()).collect();
    println!("\n=== reachability (ICMP echo, row → column) ===");
    print!("{}", report::render_matrix(&names, &results));
    let (line, all) = report::verdict(&results);
    println!("\n{line}");
    Ok(all)
}

fn status(place: &Where) -> Result<u8> {
    let Some(state) = state::load(&place.state_dir)? else {
        bail!(
            "no demo running (no state in {}); start one with `tortiectl demo up`",
            place.state_dir.display()
        );
    };
    Ok(if print_report(&state)? { 0 } else { 1 })
}

/// Stops the recorded agents, removes the recorded namespaces (pods, nodes, router,
/// switches) and any other `<name>-*` namespace, and the state dir. Returns what it did.
fn teardown(state: Option<&State>, name: &str, state_dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    let mut namespaces = Vec::new();
    let mut prefixes = vec![format!("{name}-")];
    if let Some(state) = state {
        for node in &state.nodes {
            let Some(pid) = node.pid else { continue };
            match nodes::stop(pid) {
                Ok(nodes::Stopped::Terminated) => {
                    done.push(format!("stopped tortie-node on {} (pid {pid})", node.name))
                }
                Ok(nodes::Stopped::Killed) => done.push(format!(
                    "killed tortie-node on {} (pid {pid}; it outlived SIGTERM)",
                    node.name
                )),
                Ok(nodes::Stopped::NotRunning) => {}
                Err(error) => done.push(format!("cannot stop pid {pid}: {error:#}")),
            }
        }
        namespaces = state.namespaces_for_removal();
        prefixes.push(format!("{}-", state.name));
    }
    for prefix in &prefixes {
        for leftover in netns::list_with_prefix(prefix) {
            if !namespaces.contains(&leftover) {
                namespaces.push(leftover);
            }
        }
    }
    for namespace in namespaces {
        match netns::delete(&namespace) {
            Ok(true) => done.push(format!("removed namespace {namespace}")),
            Ok(false) => {}
            Err(error) => done.push(format!("cannot remove namespace {namespace}: {error:#}")),
        }
    }
    if state.is_some() {
        match fs::remove_dir_all(state_dir) {
            Ok(()) => done.push(format!("removed {}", state_dir.display())),
            Err(error) => done.push(format!("cannot remove {}: {error}", state_dir.display())),
        }
    }
    done
}

fn down(place: &Where) -> Result<u8> {
    // A state file that cannot be read still leaves the `<name>-*` namespaces to sweep; no
    // process is signalled without a recorded PID.
    let state = state::load(&place.state_dir).unwrap_or_else(|error| {
        eprintln!(
            "warning: {error:#}; removing the {}-* namespaces only",
            place.name
        );
        None
    });
    let done = teardown(state.as_ref(), &place.name, &place.state_dir);
    if done.is_empty() {
        println!("no demo running");
    }
    for line in &done {
        println!("{line}");
    }
    if done.iter().any(|line| line.starts_with("cannot")) {
        return Ok(1);
    }
    Ok(0)
}
