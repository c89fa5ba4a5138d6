//! The CNI specification's own vocabulary: the versions tortie speaks, the error object and
//! its well-known codes, and the result a successful ADD prints (CNI spec 1.1,
//! "Result Types" and "Error").

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Every version this plugin answers VERSION with, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version of results and errors when the configuration names none that can be used.
pub const LATEST_VERSION: &str = "1.1.0";

/// The spec's well-known error codes ("Error" section); 100 and up are the plugin's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    ContainerUnknown = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// STATUS: the plugin cannot serve ADD now.
    NotAvailable = 50,
    /// The node agent refused the request (no pool with room, say).
    AgentRefused = 100,
    /// CHECK found the attachment not as ADD left it.
    CheckFailed = 101,
}

/// A failure as the spec's error object: what went wrong (`msg`), where and why
/// (`details`), and its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: ErrorCode,
    pub message: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, message: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            message: message.into(),
            details: details.into(),
        }
    }

    /// The JSON object printed on stdout, in `version` (the configuration's, when known).
    pub fn to_json(&self, version: &str) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": version,
            "code": self.code as u32,
            "msg": self.message,
            "details": self.details,
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// Whether `version` is one this plugin speaks.
pub fn is_supported(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// Refuses a configuration's `cniVersion` that `plugin` does not speak, listing those it does.
pub fn check_version(version: &str, plugin: &str) -> Result<(), CniError> {
    if is_supported(version) {
        return Ok(());
    }
    Err(CniError::new(
        ErrorCode::IncompatibleVersion,
        format!("cniVersion {version:?} is not supported"),
        format!("{plugin} speaks {}", SUPPORTED_VERSIONS.join(", ")),
    ))
}

/// An interface of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The netns path for an interface inside the container; absent for the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// "4" or "6": results before 1.0.0 carry it, 1.0.0 dropped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CIDR notation (`192.0.2.5/32`).
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route of the result (inside the container).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// The result of ADD (and the `prevResult` of CHECK and DEL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: serde_json::Value,
}

/// Whether results in `version` carry each address's IP version (before 1.0.0).
pub fn ips_carry_version(version: &str) -> bool {
    version.starts_with("0.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_the_spec_object() {
        let error = CniError::new(ErrorCode::Decode, "bad", "line 1");
        assert_eq!(
            error.to_json("1.0.0"),
            serde_json::json!({"cniVersion": "1.0.0", "code": 6, "msg": "bad", "details": "line 1"})
        );
    }

    #[test]
    fn the_versions_are_the_issues() {
        assert!(is_supported("0.3.1") && is_supported("1.1.0"));
        assert!(!is_supported("0.2.0") && !is_supported("2.0.0"));
        assert!(ips_carry_version("0.4.0") && !ips_carry_version("1.0.0"));
    }
}
