//! tortiectl: inspect and manage tortie's datastore: pools, addresses, nodes and BGP peers (see
//! `tortie_agent::ctl`).

use std::process::ExitCode;

use clap::Parser;
use tortie_agent::ctl::{self, Cli};

fn main() -> ExitCode {
    // Like any Unix filter: when the reader goes away (`tortiectl ipam show | head -3`),
    // end quietly on SIGPIPE instead of panicking on the failed write.
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match ctl::run(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("tortiectl: {error:#}");
            ExitCode::from(1)
        }
    }
}
