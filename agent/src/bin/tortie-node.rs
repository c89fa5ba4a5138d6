//! tortie-node: the node agent. `run` (the default) is the agent itself; `autodetect`
//! prints the address it would pick and why; `health` is for liveness and readiness probes;
//! `install-cni` installs the CNI plugins and their configuration (an init container's job).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tortie_agent::autodetect::{self, AddressArgs, Output};
use tortie_agent::node::config::{LogFormat, NodeConfig, socket_from_env};

#[derive(Parser)]
#[command(name = "tortie-node", version, about = "tortie's node agent")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent (the default): register the node, claim its blocks, peer over
    /// BGP and program routes. Configured from the environment (IP, IP_AUTODETECTION_METHOD,
    /// NODENAME, AS, DATASTORE_TYPE, TORTIE_DATASTORE, TORTIE_IPV4POOL_*, TORTIE_IPV6POOL_*,
    /// TORTIE_BGP_PORT, TORTIE_LOG_LEVEL, TORTIE_LOG_FORMAT, TORTIE_RUN_DIR,
    /// TORTIE_HEALTH_LISTEN, NO_DEFAULT_POOLS); see README.md.
    Run {
        #[command(flatten)]
        addresses: AddressArgs,
    },
    /// Probe the running agent: exit 0 when it is live (--live) or ready (--ready), 1 with
    /// the reasons when not.
    Health {
        #[arg(long, conflicts_with = "ready", required_unless_present = "ready")]
        live: bool,
        #[arg(long)]
        ready: bool,
        /// The agent's socket (default: $TORTIE_RUN_DIR/agent.sock).
        #[arg(long, env = "TORTIE_SOCKET")]
        socket: Option<std::path::PathBuf>,
    },
    /// Install the CNI plugins (tortie, tortie-ipam, from this binary's directory) into the
    /// runtime's binary directory and write 10-tortie.conflist (tortie, then portmap), both
    /// atomically; files already as wanted are left alone.
    InstallCni {
        /// The runtime's CNI binary directory.
        #[arg(long, env = "CNI_BIN_DIR", default_value = "/opt/cni/bin")]
        bin_dir: std::path::PathBuf,
        /// The runtime's CNI configuration directory.
        #[arg(long, env = "CNI_NET_DIR", default_value = "/etc/cni/net.d")]
        conf_dir: std::path::PathBuf,
        /// The pods' MTU; 0: the plugin's default (1450).
        #[arg(long, env = "CNI_MTU", default_value_t = 0)]
        mtu: u32,
        /// This node's name (default: the host name).
        #[arg(long, env = "NODENAME")]
        node_name: Option<String>,
        /// Where the plugins are (default: the directory of tortie-node).
        #[arg(long)]
        source_dir: Option<std::path::PathBuf>,
    },
    /// Print the address this node would use (IPv4, and IPv6 when IP6=autodetect or given),
    /// with its interface and method, and why each interface was taken or passed over.
    /// Exit 0 with an address, 1 when nothing suitable was found, 2 for a malformed setting.
    Autodetect {
        #[command(flatten)]
        addresses: AddressArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Output,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run_main(AddressArgs::from_env()),
        Some(Command::Run { addresses }) => run_main(addresses),
        Some(Command::Autodetect { addresses, output }) => {
            init_logging("warn", LogFormat::Text);
            autodetect_main(&addresses, output)
        }
        Some(Command::InstallCni {
            bin_dir,
            conf_dir,
            mtu,
            node_name,
            source_dir,
        }) => install_cni_main(bin_dir, conf_dir, mtu, node_name, source_dir),
        Some(Command::Health {
            live,
            ready: _,
            socket,
        }) => health_main(live, socket),
    }
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, not in log files and test captures.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run_main(addresses: AddressArgs) -> ExitCode {
    // Every variable is checked before anything is created, logged or bound.
    let config = match NodeConfig::from_lookup(
        |name| std::env::var(name).ok(),
        addresses,
        tortie_agent::autodetect::host_name,
    ) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("tortie-node: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log_filter, config.log_format);
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread().worker_threads(2))
    else {
        return ExitCode::from(1);
    };
    match runtime.block_on(tortie_agent::node::run::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("tortie-node: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Builds the async runtime, or says why it cannot be.
fn runtime(builder: &mut tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|error| eprintln!("tortie-node: cannot start the async runtime: {error}"))
        .ok()
}

fn health_main(live: bool, socket: Option<std::path::PathBuf>) -> ExitCode {
    let socket = socket.unwrap_or_else(socket_from_env);
    match tortie_agent::api::status(&socket, std::time::Duration::from_secs(5)) {
        Ok(_) if live => {
            println!("live");
            ExitCode::SUCCESS
        }
        Ok(status) if status.ready => {
            println!("ready");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            println!("not ready: {}", status.not_ready.join("; "));
            ExitCode::from(1)
        }
        Err(error) => {
            println!("{error}");
            ExitCode::from(1)
        }
    }
}

fn autodetect_main(args: &AddressArgs, output: Output) -> ExitCode {
    let Some(runtime) = runtime(&mut tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::from(1);
    };
    match runtime.block_on(autodetect::run(args)) {
        Ok(report) => {
            for warning in &report.warnings {
                eprintln!("warning: {warning}");
            }
            match output {
                Output::Text => print!("{}", autodetect::render_text(&report, args)),
                Output::Json => match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(error) => {
                        eprintln!("tortie-node: cannot encode the report as JSON: {error}");
                        return ExitCode::from(1);
                    }
                },
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            let (autodetect::Failure::Config(text) | autodetect::Failure::Detect(text)) = &failure;
            eprintln!("tortie-node: {text}");
            ExitCode::from(failure.exit_code() as u8)
        }
    }
}

fn install_cni_main(
    bin_dir: std::path::PathBuf,
    conf_dir: std::path::PathBuf,
    mtu: u32,
    node_name: Option<String>,
    source_dir: Option<std::path::PathBuf>,
) -> ExitCode {
    use tortie_agent::cni::install::{InstallOptions, Outcome, install};
    let node_name = match node_name.map_or_else(tortie_agent::autodetect::host_name, Ok) {
        Ok(name) => name,
        Err(error) => {
            eprintln!("tortie-node install-cni: no node name (set NODENAME): {error}");
            return ExitCode::from(2);
        }
    };
    let source_dir = match source_dir.map_or_else(
        || {
            std::env::current_exe().map(|exe| {
                exe.parent()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default()
            })
        },
        Ok,
    ) {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!(
                "tortie-node install-cni: cannot locate tortie-node's directory (give --source-dir): {error}"
            );
            return ExitCode::from(2);
        }
    };
    let options = InstallOptions {
        source_dir,
        bin_dir,
        conf_dir,
        mtu,
        node_name,
        agent_socket: socket_from_env(),
    };
    match install(&options) {
        Ok(outcomes) => {
            for outcome in outcomes {
                match outcome {
                    Outcome::Written(path) => println!("installed {}", path.display()),
                    Outcome::Unchanged(path) => println!("unchanged {}", path.display()),
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tortie-node install-cni: {error}");
            ExitCode::from(1)
        }
    }
}
