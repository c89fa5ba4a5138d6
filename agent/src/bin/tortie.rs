//! `tortie`: the CNI plugin (see `tortie_agent::cni`). Logs go to stderr (off unless
//! `RUST_LOG` says otherwise): stdout belongs to the CNI result.

use std::process::ExitCode;

fn main() -> ExitCode {
    tortie_agent::cni::plugin_main(|env, stdin| tortie_agent::cni::run(env, stdin))
}
