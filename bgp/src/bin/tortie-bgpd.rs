//! tortie-bgpd: one tortie BGP speaker from a YAML file, and `show peers|rib` against its
//! control socket. Tests and benchmarks run it; operators can use it as a small route
//! server.
//!
//! ```text
//! tortie-bgpd run -c /etc/tortie-bgpd.yaml
//! tortie-bgpd show peers -c /etc/tortie-bgpd.yaml [-o json]
//! tortie-bgpd show rib --socket /run/tortie-bgpd.sock [-o json]
//! tortie-bgpd announce 198.51.100.0/24 --community 64512:1 --med 10 -c /etc/tortie-bgpd.yaml
//! tortie-bgpd withdraw 198.51.100.0/24 -c /etc/tortie-bgpd.yaml
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use ipnet::IpNet;
use tortie_bgp::daemon::{
    DaemonConfig, Origination, PeerRow, RouteRow, render_peers, render_routes,
};
use tortie_bgp::net::{Dial, canonical, connector, listen, refusing, set_ttl_security};
use tortie_bgp::speaker::{RouteChange, SpeakerCommand, run_speaker};

#[derive(Parser)]
#[command(name = "tortie-bgpd", about = "A tortie BGP speaker from a YAML file")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the speaker until SIGINT or SIGTERM.
    Run {
        /// The configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print the daemon's peer or route table.
    Show {
        what: What,
        /// The daemon's configuration file, to find its control socket.
        #[arg(short, long, conflicts_with = "socket")]
        config: Option<PathBuf>,
        /// The control socket itself.
        #[arg(long)]
        socket: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Start announcing a prefix (or replace its attributes) while the daemon runs.
    Announce {
        prefix: IpNet,
        /// A standard community, `asn:value`; repeatable.
        #[arg(long = "community")]
        communities: Vec<String>,
        /// A large community, `global:local1:local2`; repeatable.
        #[arg(long = "large-community")]
        large_communities: Vec<String>,
        #[arg(long)]
        med: Option<u32>,
        #[command(flatten)]
        daemon: DaemonSocket,
    },
    /// Stop announcing a prefix.
    Withdraw {
        prefix: IpNet,
        #[command(flatten)]
        daemon: DaemonSocket,
    },
}

/// Where a client command finds the running daemon.
#[derive(clap::Args)]
struct DaemonSocket {
    /// The daemon's configuration file, to find its control socket.
    #[arg(short, long, conflicts_with = "socket")]
    config: Option<PathBuf>,
    /// The control socket itself.
    #[arg(long)]
    socket: Option<PathBuf>,
}

impl DaemonSocket {
    fn path(self) -> Result<PathBuf> {
        match (self.socket, self.config) {
            (Some(socket), _) => Ok(socket),
            (None, Some(config)) => Ok(read_config(&config)?.control_socket),
            (None, None) => bail!("say where the daemon is: --socket PATH or -c CONFIG"),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum What {
    Peers,
    Rib,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.command {
        Command::Run { config } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                // Colour only for a person at a terminal, not in log files and test captures.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            runtime.block_on(run(&config))
        }
        Command::Show {
            what,
            config,
            socket,
            output,
        } => {
            let socket = DaemonSocket { config, socket }.path()?;
            let text = runtime.block_on(show(&socket, what, output))?;
            print!("{text}");
            Ok(())
        }
        Command::Announce {
            prefix,
            communities,
            large_communities,
            med,
            daemon,
        } => {
            let origination = Origination {
                prefix,
                communities,
                large_communities,
                med,
            };
            // Checked here too, so a typo is reported by the command that made it.
            origination.attributes()?;
            let request = format!("announce {}\n", serde_json::to_string(&origination)?);
            runtime.block_on(request_done(&daemon.path()?, &request))
        }
        Command::Withdraw { prefix, daemon } => runtime.block_on(request_done(
            &daemon.path()?,
            &format!("withdraw {prefix}\n"),
        )),
    }
}

fn read_config(path: &Path) -> Result<DaemonConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    DaemonConfig::parse(&text).with_context(|| format!("in {}", path.display()))
}

async fn run(path: &Path) -> Result<()> {
    let config = read_config(path)?;
    let (commands, commands_rx) = mpsc::channel(1024);
    let (routes_tx, mut routes) = mpsc::channel(64);
    let speaker = tokio::spawn(run_speaker(config.speaker(), commands_rx, routes_tx));
    // Drained from the start: the speaker reports a change for every prefix originated
    // below, and would wait on a full channel while we wait on its full command queue.
    let logging = tokio::spawn(async move {
        while let Some(batch) = routes.recv().await {
            for change in batch {
                match change {
                    RouteChange::Best {
                        prefix,
                        attributes,
                        from,
                    } => {
                        debug!(%prefix, next_hop = ?attributes.next_hop, ?from, "best route");
                    }
                    RouteChange::Withdrawn { prefix } => debug!(%prefix, "withdrawn"),
                }
            }
        }
    });

    // Listen before dialing, so a peer that dials back finds us.
    let address = SocketAddr::new(config.listen, config.port);
    let passwords: Vec<(IpAddr, String)> = config
        .peers
        .iter()
        .filter_map(|p| p.password.clone().map(|password| (p.address, password)))
        .collect();
    let listener =
        listen(address, &passwords).with_context(|| format!("listening on {address}"))?;
    info!(%address, "listening");
    let ttl_security: HashMap<IpAddr, u8> = config
        .peers
        .iter()
        .filter_map(|p| p.ttl_security.map(|hops| (p.address, hops)))
        .collect();

    for peer in &config.peers {
        let settings = config.peer(peer)?;
        let dial = if peer.passive {
            refusing()
        } else {
            connector(Dial {
                peer: SocketAddr::new(peer.address, peer.port),
                local_address: peer
                    .local_address
                    .or((!config.listen.is_unspecified()).then_some(config.listen)),
                password: peer.password.clone(),
                ttl_security: peer.ttl_security,
            })
        };
        commands
            .send(SpeakerCommand::AddPeer(settings, dial))
            .await
            .context("speaker stopped")?;
    }
    for origination in &config.originate {
        let attributes = origination.attributes()?;
        commands
            .send(SpeakerCommand::Originate {
                prefix: origination.prefix,
                attributes,
            })
            .await
            .context("speaker stopped")?;
    }

    let accepting = {
        let commands = commands.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, from)) => {
                        let from = canonical(from.ip());
                        if let Some(&hops) = ttl_security.get(&from)
                            && let Err(error) = set_ttl_security(&stream, from, hops)
                        {
                            warn!(%from, %error, "TTL security not set: connection dropped");
                            continue;
                        }
                        let _ = stream.set_nodelay(true);
                        if commands
                            .send(SpeakerCommand::Accepted { from, stream })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(error) => warn!(%error, "accept failed"),
                }
            }
        })
    };
    let control = serve_control(&config.control_socket, commands.clone())?;

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: stopping"),
        _ = terminate.recv() => info!("SIGTERM: stopping"),
    }
    accepting.abort();
    control.abort();
    logging.abort();
    // Each peer gets its CEASE before the speaker goes.
    for peer in &config.peers {
        let _ = commands
            .send(SpeakerCommand::RemovePeer(peer.address))
            .await;
    }
    drop(commands);
    let _ = speaker.await;
    let _ = std::fs::remove_file(&config.control_socket);
    Ok(())
}

/// Answers `peers` and `rib` on the control socket, one request per connection, in JSON.
fn serve_control(
    path: &Path,
    commands: mpsc::Sender<SpeakerCommand<TcpStream>>,
) -> Result<tokio::task::JoinHandle<()>> {
    // A socket file left by a daemon that died is in the way; a live daemon's is not
    // ours to take.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{} is in use by a running daemon", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let commands = commands.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, commands).await {
                    debug!(%error, "control request failed");
                }
            });
        }
    }))
}

async fn answer(
    stream: UnixStream,
    commands: mpsc::Sender<SpeakerCommand<TcpStream>>,
) -> Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut request = String::new();
    BufReader::new(reader).read_line(&mut request).await?;
    let body = match request.trim() {
        "peers" => {
            let (reply, answer) = oneshot::channel();
            commands.send(SpeakerCommand::Peers(reply)).await?;
            let rows: Vec<PeerRow> = answer.await?.iter().map(PeerRow::from).collect();
            serde_json::to_string(&rows)?
        }
        "rib" => {
            let (reply, answer) = oneshot::channel();
            commands.send(SpeakerCommand::Routes(reply)).await?;
            let rows: Vec<RouteRow> = answer.await?.iter().map(RouteRow::from).collect();
            serde_json::to_string(&rows)?
        }
        request => match request.split_once(' ') {
            Some(("announce", origination)) => {
                let outcome = serde_json::from_str::<Origination>(origination)
                    .map_err(|error| format!("announce: {error}"))
                    .and_then(|origination| {
                        let attributes = origination.attributes().map_err(|e| e.to_string())?;
                        Ok((origination.prefix, attributes))
                    });
                match outcome {
                    Ok((prefix, attributes)) => {
                        commands
                            .send(SpeakerCommand::Originate { prefix, attributes })
                            .await?;
                        r#"{"ok":true}"#.to_string()
                    }
                    Err(error) => serde_json::to_string(&serde_json::json!({ "error": error }))?,
                }
            }
            Some(("withdraw", prefix)) => match prefix.trim().parse::<IpNet>() {
                Ok(prefix) => {
                    commands
                        .send(SpeakerCommand::StopOriginating { prefix })
                        .await?;
                    r#"{"ok":true}"#.to_string()
                }
                Err(error) => serde_json::to_string(
                    &serde_json::json!({ "error": format!("withdraw {prefix:?}: {error}") }),
                )?,
            },
            _ => serde_json::to_string(&serde_json::json!({
                "error": format!("unknown request {request:?}: ask peers, rib, announce or withdraw")
            }))?,
        },
    };
    writer.write_all(body.as_bytes()).await?;
    writer.shutdown().await?;
    Ok(())
}

/// Sends a request that changes something; fails with the daemon's error if it refused.
async fn request_done(socket: &Path, request: &str) -> Result<()> {
    let body = exchange(socket, request).await?;
    let reply: serde_json::Value =
        serde_json::from_str(&body).context("the daemon's answer does not parse")?;
    match reply.get("error").and_then(serde_json::Value::as_str) {
        Some(error) => bail!("the daemon refused: {error}"),
        None => Ok(()),
    }
}

async fn exchange(socket: &Path, request: &str) -> Result<String> {
    let mut stream = UnixStream::connect(socket).await.with_context(|| {
        format!(
            "connecting to {} (is tortie-bgpd running?)",
            socket.display()
        )
    })?;
    stream.write_all(request.as_bytes()).await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

async fn show(socket: &Path, what: What, output: Output) -> Result<String> {
    let request = match what {
        What::Peers => "peers\n",
        What::Rib => "rib\n",
    };
    let body = exchange(socket, request).await?;
    if output == Output::Json {
        return Ok(format!("{body}\n"));
    }
    Ok(match what {
        What::Peers => {
            let rows: Vec<PeerRow> =
                serde_json::from_str(&body).context("the daemon's answer does not parse")?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            render_peers(&rows, now)
        }
        What::Rib => {
            let rows: Vec<RouteRow> =
                serde_json::from_str(&body).context("the daemon's answer does not parse")?;
            render_routes(&rows)
        }
    })
}
