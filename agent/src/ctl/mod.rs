//! `tortiectl`: the operator's view of tortie's datastore (pools, IPAM, nodes and BGP), modelled on
//! calicoctl. One module per command group; the binary only parses and dispatches.

pub mod apply;
pub mod datastore;
pub mod delete;
pub mod demo;
pub mod get;
pub mod ipam;
pub mod manifest;
pub mod node;
pub mod pool;
pub mod table;

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use datastore::{DEFAULT_DATASTORE, Datastore};

#[derive(Parser)]
#[command(
    name = "tortiectl",
    version,
    about = "Inspect and manage tortie's datastore: pools, addresses, nodes and BGP peers"
)]
pub struct Cli {
    /// The datastore: sqlite:<path>.
    #[arg(long, global = true, env = "TORTIE_DATASTORE", default_value = DEFAULT_DATASTORE)]
    pub datastore: String,
    /// The node agent's local API socket (for `node status`).
    #[arg(long, global = true, env = "TORTIE_SOCKET", default_value = crate::api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// How a read prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// IP pools: the ranges pod addresses come from.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Addresses, blocks and handles.
    #[command(subcommand)]
    Ipam(IpamCommand),
    /// This node's agent: its BGP peers and readiness.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Create or update resources from YAML documents (Calico's shape).
    Apply(apply::ApplyArgs),
    /// Show resources: nodes, ippools, bgppeers, bgpconfigurations, blocks, affinities, ...
    Get(get::GetArgs),
    /// Delete resources by type and name, or those a file names.
    Delete(delete::DeleteArgs),
    /// A demo cluster of network namespaces on this machine: up, status, down.
    #[command(subcommand)]
    Demo(demo::DemoCommand),
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// The agent's BGP sessions, as `calicoctl node status` shows them. Exits 1 when the
    /// agent is not running.
    Status {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum PoolCommand {
    /// Create a pool.
    Create {
        name: String,
        #[arg(long)]
        cidr: String,
        /// Prefix length of the pool's blocks (default 26 for IPv4, 122 for IPv6).
        #[arg(long)]
        block_size: Option<u8>,
        /// Never, Always or CrossSubnet.
        #[arg(long, default_value = "Never")]
        ipip_mode: String,
        /// Never, Always or CrossSubnet.
        #[arg(long, default_value = "Never")]
        vxlan_mode: String,
        #[arg(long)]
        nat_outgoing: bool,
        #[arg(long)]
        disabled: bool,
        /// Which nodes may use the pool (Calico selector syntax).
        #[arg(long, default_value = "all()")]
        node_selector: String,
    },
    /// List pools.
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Delete a pool that has no address in use.
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum IpamCommand {
    /// Addresses in use and free, per pool (and per block).
    Show {
        #[arg(long)]
        show_blocks: bool,
        /// List addresses held in blocks owned by another node.
        #[arg(long)]
        show_borrowed: bool,
        /// Show one address: who holds it, or that it is free.
        #[arg(long)]
        ip: Option<IpAddr>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
    },
    /// Check the datastore's consistency. Exits 1 when problems are found.
    Check {
        /// `json` prints the report as JSON; any other value is a file to write it to
        /// (for `ipam release --from-report`).
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
    },
    /// Release addresses: one address, everything of a handle, or what a check report
    /// found leaked.
    Release {
        #[arg(long, conflicts_with_all = ["handle", "from_report"], required_unless_present_any = ["handle", "from_report"])]
        ip: Option<IpAddr>,
        #[arg(long, conflicts_with = "from_report")]
        handle: Option<String>,
        #[arg(long)]
        from_report: Option<PathBuf>,
    },
    /// Assign addresses to a handle on a node; prints each address on its own line.
    Assign {
        #[arg(long)]
        node: String,
        #[arg(long)]
        handle: String,
        /// This address rather than the next free one.
        #[arg(long, conflicts_with_all = ["num4", "num6"])]
        ip: Option<IpAddr>,
        #[arg(long)]
        num4: Option<u32>,
        #[arg(long)]
        num6: Option<u32>,
    },
}

/// Runs one command. Returns the process exit code for commands that report a finding
/// rather than fail (`ipam check`); errors come back as `Err`.
pub fn run(cli: Cli) -> Result<u8> {
    let datastore = || Datastore::parse(&cli.datastore);
    match cli.command {
        Command::Pool(command) => pool::run(&datastore()?, command).map(|()| 0),
        Command::Ipam(command) => ipam::run(&datastore()?, command),
        Command::Node(NodeCommand::Status { output }) => node_status(&cli.socket, output),
        Command::Apply(args) => apply::run(&datastore()?, args),
        Command::Get(args) => get::run(&datastore()?, args),
        Command::Delete(args) => delete::run(&datastore()?, args),
        Command::Demo(command) => demo::run(command),
    }
}

fn node_status(socket: &std::path::Path, output: Output) -> Result<u8> {
    let status = crate::api::status(socket, std::time::Duration::from_secs(10))?;
    match output {
        Output::Table => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            print!("{}", node::render_status(&status, now));
        }
        Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
    }
    Ok(0)
}

/// `part` of `whole` as a whole percentage, for the tables.
pub fn percent(part: u128, whole: u128) -> String {
    if whole == 0 {
        return "0%".to_string();
    }
    format!("{}%", part * 100 / whole)
}
