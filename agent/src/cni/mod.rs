//! The `tortie` CNI plugin (CNI spec 1.1): wires a pod into the node's routed network.
//!
//! A runtime runs the plugin with the `CNI_*` environment and the network configuration on
//! stdin; the plugin prints a result or the spec's error object on stdout and exits non-zero
//! on error. Addresses come from the node agent over its local socket ([`crate::api`]), so
//! one process owns the node's IPAM state; the veth, addresses and routes are made here.
//!
//! The types are our own (serde) rather than rscni-plugin's: the plugin needs the spec's
//! JSON and a handful of error codes, runs synchronously, and must control exactly when the
//! pod netns is entered (a dedicated thread, see [`wiring`]); a framework would add an async
//! runtime of its choosing and a second error type for that little.
//!
//! Pods' host routes (`<ip>/32 dev cali… scope link proto tortie`) are the plugin's, not the
//! agent reconciler's: the reconciler skips `scope link` routes on `cali*` devices
//! ([`crate::dataplane::RouteTarget::is_pod_route`]). The kernel deletes them with the veth,
//! which is exactly the pod's lifetime, and a restarted agent cannot delete a live pod's route.
//!
//! `tortie-ipam` ([`ipam_plugin`]) is the same agent client as an IPAM plugin for other
//! interface plugins.
//!
//! One file per concern: [`spec`] (versions, errors, results), [`config`] (stdin and the
//! environment), [`wiring`] (netlink), [`commands`] (ADD, DEL, CHECK, GC, STATUS, VERSION).

pub mod commands;
pub mod config;
pub mod install;
pub mod ipam_plugin;
pub mod spec;
pub mod wiring;

use config::{Command, Invocation, NetworkConfig};
use spec::{CniError, LATEST_VERSION};

/// Runs one invocation: what to print on stdout, and whether it succeeded.
pub fn run(env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> (String, bool) {
    run_with(env, stdin, dispatch)
}

/// What both plugins do with an invocation: read the environment, answer VERSION (which
/// needs no configuration), hand every other command to `dispatch`, and print the outcome.
fn run_with(
    env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    dispatch: fn(&Invocation, &[u8]) -> Result<serde_json::Value, CniError>,
) -> (String, bool) {
    let outcome = Invocation::from_env(env).and_then(|invocation| {
        if invocation.command == Command::Version {
            Ok(commands::version(&requested_version(stdin)))
        } else {
            dispatch(&invocation, stdin)
        }
    });
    answer(stdin, outcome)
}

/// One invocation of a plugin: the environment and stdin in, what to print and whether it
/// succeeded out ([`run`], [`ipam_plugin::run`]).
pub type PluginRun = fn(&dyn Fn(&str) -> Option<String>, &[u8]) -> (String, bool);

/// A plugin binary's whole life: logs to stderr (off unless `RUST_LOG` says otherwise, as
/// stdout belongs to the result), the configuration from stdin, `run` on it, the result or
/// error object on stdout, and the exit status.
pub fn plugin_main(run: PluginRun) -> std::process::ExitCode {
    use std::io::{Read, Write};
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut stdin = Vec::new();
    let (output, ok) = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run(&|key| std::env::var(key).ok(), &stdin),
        Err(e) => (
            CniError::new(
                spec::ErrorCode::Io,
                "cannot read the network configuration from stdin",
                e.to_string(),
            )
            .to_json(LATEST_VERSION)
            .to_string(),
            false,
        ),
    };
    if !output.is_empty() {
        let _ = writeln!(std::io::stdout(), "{output}");
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// What to print for a command's outcome: its result (nothing for an empty one), or the
/// error object in the configuration's version.
fn answer(stdin: &[u8], outcome: Result<serde_json::Value, CniError>) -> (String, bool) {
    match outcome {
        Ok(serde_json::Value::Null) => (String::new(), true),
        Ok(value) => (value.to_string(), true),
        Err(error) => (error.to_json(&version_of(stdin)).to_string(), false),
    }
}

/// The version VERSION is asked about: stdin's `cniVersion`, answered even when stdin
/// carries nothing else (or nothing usable).
fn requested_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|value| value.get("cniVersion")?.as_str().map(str::to_string))
        .unwrap_or_else(|| LATEST_VERSION.to_string())
}

/// The version errors are written in: the configuration's when it can be read at all.
fn version_of(stdin: &[u8]) -> String {
    Some(requested_version(stdin))
        .filter(|version| spec::is_supported(version))
        .unwrap_or_else(|| LATEST_VERSION.to_string())
}

fn dispatch(invocation: &Invocation, stdin: &[u8]) -> Result<serde_json::Value, CniError> {
    let config = NetworkConfig::parse(stdin)?;
    let span = tracing::info_span!(
        "cni",
        command = ?invocation.command,
        container = %invocation.container_id,
        network = %config.name
    );
    let _entered = span.enter();
    match invocation.command {
        Command::Add => commands::add(&config, invocation),
        Command::Del => commands::del(&config, invocation),
        Command::Check => commands::check(&config, invocation),
        Command::Gc => commands::gc(&config),
        Command::Status => commands::status(&config),
        Command::Version => unreachable!("answered by run_with"),
    }
}
