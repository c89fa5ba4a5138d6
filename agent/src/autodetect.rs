//! `tortie-node autodetect`: which address would this node use, and why.

use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use serde::Serialize;
use tortie_autodetect::{
    AddressSetting, Consideration, DetectError, Detection, Family, Method, SystemEnvironment,
    Verdict,
};

/// The node's address settings, in Calico's vocabulary.
#[derive(Debug, Clone, Args)]
pub struct AddressArgs {
    /// IPv4 address: empty or "autodetect" to detect, "a.b.c.d[/len]" to use as given,
    /// "none" for no IPv4.
    #[arg(long, env = "IP", default_value = "", hide_default_value = true)]
    pub ip: String,
    /// IPv6 address: empty or "none" for no IPv6, "autodetect" to detect, "addr[/len]" to use
    /// as given.
    #[arg(long, env = "IP6", default_value = "", hide_default_value = true)]
    pub ip6: String,
    /// How to detect the IPv4 address.
    #[arg(long, env = "IP_AUTODETECTION_METHOD", default_value = "first-found")]
    pub ip_autodetection_method: String,
    /// How to detect the IPv6 address.
    #[arg(long, env = "IP6_AUTODETECTION_METHOD", default_value = "first-found")]
    pub ip6_autodetection_method: String,
    /// This node's name (used by kubernetes-internal-ip); defaults to the host name.
    #[arg(long, env = "NODENAME")]
    pub nodename: Option<String>,
}

impl AddressArgs {
    /// The settings from the environment alone (no command line), as `tortie-node` with no
    /// subcommand reads them.
    pub fn from_env() -> AddressArgs {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            addresses: AddressArgs,
        }
        <Only as clap::Parser>::parse_from(["tortie-node"]).addresses
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// A failure, and the exit status it maps to.
#[derive(Debug)]
pub enum Failure {
    /// A malformed setting: exit 2, one line.
    Config(String),
    /// Nothing acceptable found, or the system could not be asked: exit 1.
    Detect(String),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Config(_) => 2,
            Failure::Detect(_) => 1,
        }
    }
}

/// One family's settings, parsed.
struct FamilyPlan {
    family: Family,
    setting: AddressSetting,
    method: Method,
}

/// Parses and validates all four settings before anything is looked at, so a typo in the
/// IPv6 method is reported even while IPv6 is off.
fn plan(args: &AddressArgs) -> Result<[FamilyPlan; 2], Failure> {
    let config = |e: &dyn std::fmt::Display| Failure::Config(e.to_string());
    let v4 = FamilyPlan {
        family: Family::V4,
        setting: AddressSetting::parse(&args.ip, Family::V4).map_err(|e| config(&e))?,
        method: Method::parse(&args.ip_autodetection_method, Family::V4).map_err(|e| config(&e))?,
    };
    let v6 = FamilyPlan {
        family: Family::V6,
        setting: AddressSetting::parse(&args.ip6, Family::V6).map_err(|e| config(&e))?,
        method: Method::parse(&args.ip6_autodetection_method, Family::V6)
            .map_err(|e| config(&e))?,
    };
    if v4.setting == AddressSetting::Disabled && v6.setting == AddressSetting::Disabled {
        return Err(Failure::Config(format!(
            "IP=\"{}\" and IP6=\"{}\" leave no address family to detect; valid forms: IP \
             empty, \"autodetect\" or \"a.b.c.d[/len]\", or IP6 \"autodetect\" or \
             \"addr[/len]\"",
            args.ip, args.ip6
        )));
    }
    Ok([v4, v6])
}

/// Checks the four address settings without looking at the system: the message names the
/// bad setting and the valid forms.
pub fn validate(args: &AddressArgs) -> Result<(), String> {
    match plan(args) {
        Ok(_) => Ok(()),
        Err(Failure::Config(text) | Failure::Detect(text)) => Err(text),
    }
}

/// The result of `autodetect`, as printed with `-o json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ipv4: Option<Detection>,
    pub ipv6: Option<Detection>,
    pub warnings: Vec<String>,
}

/// Decides both families' addresses. The Kubernetes API is asked only when a family that
/// is detected uses `kubernetes-internal-ip`.
pub async fn run(args: &AddressArgs) -> Result<Report, Failure> {
    let plans = plan(args)?;
    let snapshot = tortie_autodetect::read_snapshot()
        .await
        .map_err(|e| Failure::Detect(e.to_string()))?;

    let wants_kubernetes = plans.iter().any(|p| {
        p.setting == AddressSetting::Detect && matches!(p.method, Method::KubernetesInternalIp)
    });
    let internal_ips = if wants_kubernetes {
        let node_name = match &args.nodename {
            Some(name) if !name.trim().is_empty() => name.trim().to_string(),
            _ => host_name().map_err(Failure::Detect)?,
        };
        crate::kubernetes::node_internal_ips(&node_name).await
    } else {
        Err("the Kubernetes API was not asked".to_string())
    };
    let environment = SystemEnvironment::new(internal_ips);

    let mut results = Vec::with_capacity(2);
    for plan in &plans {
        // The route lookup and name resolution block briefly; they are the only work here.
        let detection = tortie_autodetect::decide(
            &plan.setting,
            &plan.method,
            plan.family,
            &snapshot,
            &environment,
        )
        .map_err(|e| Failure::Detect(explain(&e)))?;
        results.push(detection);
    }
    let ipv6 = results.pop().flatten();
    let ipv4 = results.pop().flatten();
    let warnings = ipv4
        .iter()
        .chain(ipv6.iter())
        .flat_map(|d| d.warnings.iter().cloned())
        .collect();
    Ok(Report {
        ipv4,
        ipv6,
        warnings,
    })
}

pub fn host_name() -> Result<String, String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .map_err(|e| format!("NODENAME is not set and the host name cannot be read: {e}"))
}

/// The error, and for "nothing found" each interface looked at with its verdict.
fn explain(error: &DetectError) -> String {
    let mut text = error.to_string();
    if let DetectError::NothingFound { considered, .. } = error
        && !considered.is_empty()
    {
        text.push_str("\ninterfaces considered:");
        for line in considered_lines(considered) {
            text.push_str("\n  ");
            text.push_str(&line);
        }
    }
    text
}

fn considered_lines(considered: &[Consideration]) -> Vec<String> {
    let width = considered
        .iter()
        .map(|c| c.interface.len())
        .max()
        .unwrap_or(0);
    considered
        .iter()
        .map(|c| {
            let verdict = match c.verdict {
                Verdict::Taken => "taken",
                Verdict::Candidate => "candidate",
                Verdict::Skipped => "skipped",
            };
            let address = c
                .address
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".to_string());
            format!(
                "{verdict:<9}  {:<width$}  {address:<20}  {}",
                c.interface, c.reason
            )
            .trim_end()
            .to_string()
        })
        .collect()
}

/// The human-readable report.
pub fn render_text(report: &Report, args: &AddressArgs) -> String {
    let mut out = String::new();
    for (family, detection, setting) in [
        (Family::V4, &report.ipv4, &args.ip),
        (Family::V6, &report.ipv6, &args.ip6),
    ] {
        match detection {
            Some(d) => {
                let on = d
                    .interface
                    .as_deref()
                    .map(|i| format!(" on {i}"))
                    .unwrap_or_default();
                let _ = writeln!(out, "{family} {}{on} (method: {})", d.address, d.method);
                for line in considered_lines(&d.considered) {
                    let _ = writeln!(out, "  {line}");
                }
            }
            None => {
                let why = if setting.trim().is_empty() {
                    let variable = family.address_variable();
                    format!("{variable} is not set; set {variable}=autodetect to detect")
                } else {
                    format!("{}={}", family.address_variable(), setting.trim())
                };
                let _ = writeln!(out, "{family} none ({why})");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ip: &str, ip6: &str, method: &str, method6: &str) -> AddressArgs {
        AddressArgs {
            ip: ip.into(),
            ip6: ip6.into(),
            ip_autodetection_method: method.into(),
            ip6_autodetection_method: method6.into(),
            nodename: None,
        }
    }

    fn config_error(args: &AddressArgs) -> String {
        match plan(args) {
            Err(Failure::Config(text)) => text,
            Err(Failure::Detect(text)) => panic!("expected a config error, got {text}"),
            Ok(_) => panic!("expected a config error for {args:?}"),
        }
    }

    #[test]
    fn a_bad_ipv6_method_is_reported_even_with_ipv6_off() {
        let text = config_error(&args("", "", "first-found", "cidr=10.0.0.0/8"));
        assert!(
            text.starts_with("IP6_AUTODETECTION_METHOD=\"cidr=10.0.0.0/8\": "),
            "{text}"
        );
    }

    #[test]
    fn no_family_left_is_a_config_error() {
        let text = config_error(&args("none", "", "first-found", "first-found"));
        assert!(text.contains("leave no address family"), "{text}");
        assert_eq!(Failure::Config(text).exit_code(), 2);
    }

    #[test]
    fn bad_addresses_are_config_errors() {
        let text = config_error(&args("198.51.100.999", "", "first-found", "first-found"));
        assert!(text.starts_with("IP=\"198.51.100.999\": "), "{text}");
    }

    #[test]
    fn text_report_names_disabled_families() {
        let report = Report {
            ipv4: None,
            ipv6: None,
            warnings: Vec::new(),
        };
        let text = render_text(&report, &args("none", "", "first-found", "first-found"));
        assert_eq!(
            text,
            "IPv4 none (IP=none)\nIPv6 none (IP6 is not set; set IP6=autodetect to detect)\n"
        );
    }
}
