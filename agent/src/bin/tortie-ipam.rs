//! `tortie-ipam`: the IPAM plugin (see `tortie_agent::cni::ipam_plugin`). Logs go to stderr (off unless
//! `RUST_LOG` says otherwise): stdout belongs to the CNI result.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut stdin = Vec::new();
    let (output, ok) = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => tortie_agent::cni::ipam_plugin::run(|key| std::env::var(key).ok(), &stdin),
        Err(e) => (
            tortie_agent::cni::spec::CniError::new(
                tortie_agent::cni::spec::ErrorCode::Io,
                "cannot read the network configuration from stdin",
                e.to_string(),
            )
            .to_json(tortie_agent::cni::spec::LATEST_VERSION)
            .to_string(),
            false,
        ),
    };
    let mut stdout = std::io::stdout();
    if !output.is_empty() {
        let _ = writeln!(stdout, "{output}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
