//! tortie-node: the node agent. For now it answers one question: which address is this
//! node's (`tortie-node autodetect`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tortie_agent::autodetect::{self, AddressArgs, Output};

#[derive(Parser)]
#[command(name = "tortie-node", version, about = "tortie's node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, not in log files and test captures.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Autodetect { addresses, output } => autodetect_main(&addresses, output),
    }
}

fn autodetect_main(args: &AddressArgs, output: Output) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tortie-node: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
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
