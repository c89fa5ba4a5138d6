//! tortiectl: inspect and manage tortie's pools and IP address management (see
//! `tortie_agent::ctl`).

use std::process::ExitCode;

use clap::Parser;
use tortie_agent::ctl::{self, Cli};

fn main() -> ExitCode {
    match ctl::run(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("tortiectl: {error:#}");
            ExitCode::from(1)
        }
    }
}
