//! `tortie-node run`'s configuration: environment variables in Calico's vocabulary, every
//! one validated before anything is touched, so a typo stops the agent with the variable,
//! its value and the valid forms, and leaves the node as it was.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;
use tortie_ipam::model::{
    BLOCK_SIZE_RANGE_V4, BLOCK_SIZE_RANGE_V6, EncapsulationMode, Family, IPPool,
};

use crate::autodetect::AddressArgs;

/// Where the agent's datastore lives unless `TORTIE_DATASTORE` says otherwise.
pub const DEFAULT_DATASTORE_PATH: &str = "/var/lib/tortie/tortie.db";
/// The default directory for the agent's socket and state files (`TORTIE_RUN_DIR`).
pub const DEFAULT_RUN_DIR: &str = "/var/run/tortie";
/// The first pool a fresh cluster gets, as Calico's `CALICO_IPV4POOL_CIDR` default.
pub const DEFAULT_IPV4_POOL_CIDR: &str = "10.244.0.0/16";
/// Where the health and metrics endpoint listens by default (Calico's health port).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9099";
/// Calico's names for the pools it creates on first start.
pub const DEFAULT_IPV4_POOL_NAME: &str = "default-ipv4-ippool";
pub const DEFAULT_IPV6_POOL_NAME: &str = "default-ipv6-ippool";

/// A variable that does not parse: which, what it held, and what would have been valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub value: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=\"{}\": {}", self.variable, self.value, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Which datastore the agent keeps its cluster state in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreConfig {
    Sqlite(PathBuf),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The default pool of one family, created when the datastore has no pool at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub cidr: IpNet,
    pub block_size: u8,
    pub ipip_mode: EncapsulationMode,
    pub vxlan_mode: EncapsulationMode,
    pub nat_outgoing: bool,
}

impl PoolSettings {
    /// The pool these settings describe, under Calico's default name for its family.
    pub fn pool(&self) -> IPPool {
        let name = match Family::of_net(&self.cidr) {
            Family::V4 => DEFAULT_IPV4_POOL_NAME,
            Family::V6 => DEFAULT_IPV6_POOL_NAME,
        };
        let mut pool = IPPool::new(name, self.cidr);
        pool.block_size = self.block_size;
        pool.ipip_mode = self.ipip_mode;
        pool.vxlan_mode = self.vxlan_mode;
        pool.nat_outgoing = self.nat_outgoing;
        pool
    }
}

/// Everything `tortie-node run` takes from its environment.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_name: String,
    pub addresses: AddressArgs,
    /// `AS`: this node's AS number; `None` = the cluster's (BGPConfiguration, else 64512).
    pub asn: Option<u32>,
    pub datastore: DatastoreConfig,
    /// `NO_DEFAULT_POOLS=true` turns off creating the default pools.
    pub default_pools: bool,
    pub ipv4_pool: PoolSettings,
    /// Created only when `TORTIE_IPV6POOL_CIDR` is set.
    pub ipv6_pool: Option<PoolSettings>,
    /// `TORTIE_BGP_PORT`: overrides BGPConfiguration's `listenPort`.
    pub bgp_port: Option<u16>,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub run_dir: PathBuf,
    /// `TORTIE_HEALTH_LISTEN`: the HTTP health and metrics endpoint; `None` = off.
    pub http_listen: Option<SocketAddr>,
    /// `TORTIE_RT_PROTOS_DIR`: where `tortie.conf` names protocol 75 for iproute2.
    pub protocol_names_dir: PathBuf,
}

/// The agent's local API socket in run directory `run_dir`.
pub fn socket_in(run_dir: &std::path::Path) -> PathBuf {
    run_dir.join("agent.sock")
}

/// The agent's socket as the environment places it (`TORTIE_RUN_DIR`, else the default),
/// for the commands that talk to a running agent or configure others to.
pub fn socket_from_env() -> PathBuf {
    let run_dir = std::env::var_os("TORTIE_RUN_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_RUN_DIR), PathBuf::from);
    socket_in(&run_dir)
}

impl NodeConfig {
    /// The agent's local API socket.
    pub fn socket_path(&self) -> PathBuf {
        socket_in(&self.run_dir)
    }

    /// Reads the configuration through `lookup` (the process environment in production),
    /// with the address settings already parsed by clap from the same environment.
    /// Reports the first bad variable.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        addresses: AddressArgs,
        host_name: impl FnOnce() -> Result<String, String>,
    ) -> Result<NodeConfig, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };

        let node_name = match get("NODENAME") {
            Some(name) => check_node_name("NODENAME", &name)?,
            None => {
                let name = host_name().map_err(|problem| ConfigError {
                    variable: "NODENAME".into(),
                    value: String::new(),
                    problem: format!(
                        "unset, and the host name cannot be read ({problem}); set NODENAME"
                    ),
                })?;
                check_node_name("NODENAME (from the host name)", &name.to_lowercase())?
            }
        };
        crate::autodetect::validate(&addresses).map_err(|problem| ConfigError {
            variable: "IP / IP6 / IP_AUTODETECTION_METHOD / IP6_AUTODETECTION_METHOD".into(),
            value: String::new(),
            problem,
        })?;

        let asn = get("AS").map(|value| parse_asn("AS", &value)).transpose()?;

        let datastore = match get("DATASTORE_TYPE").as_deref() {
            None | Some("sqlite") => {
                let path = get("TORTIE_DATASTORE").unwrap_or_else(|| DEFAULT_DATASTORE_PATH.into());
                let path = path.strip_prefix("sqlite:").unwrap_or(&path).to_string();
                if path.is_empty() || !path.starts_with('/') {
                    return Err(ConfigError {
                        variable: "TORTIE_DATASTORE".into(),
                        value: path,
                        problem: "expected an absolute path to the SQLite file (sqlite:<path> also accepted), e.g. /var/lib/tortie/tortie.db".into(),
                    });
                }
                DatastoreConfig::Sqlite(PathBuf::from(path))
            }
            Some(other @ ("etcdv3" | "kubernetes")) => {
                return Err(ConfigError {
                    variable: "DATASTORE_TYPE".into(),
                    value: other.into(),
                    problem: "this datastore is not supported yet; valid: sqlite".into(),
                });
            }
            Some(other) => {
                return Err(ConfigError {
                    variable: "DATASTORE_TYPE".into(),
                    value: other.into(),
                    problem: "valid: sqlite (default); etcdv3 and kubernetes are planned".into(),
                });
            }
        };

        let default_pools = !parse_bool(&get, "NO_DEFAULT_POOLS", false)?;
        let ipv4_pool = pool_settings(&get, Family::V4)?.ok_or_else(|| ConfigError {
            variable: "TORTIE_IPV4POOL_CIDR".into(),
            value: String::new(),
            problem: "missing".into(),
        })?;
        let ipv6_pool = pool_settings(&get, Family::V6)?;

        let bgp_port = get("TORTIE_BGP_PORT")
            .map(|value| match value.parse::<u16>() {
                Ok(port) if port > 0 => Ok(port),
                _ => Err(ConfigError {
                    variable: "TORTIE_BGP_PORT".into(),
                    value,
                    problem: "expected a TCP port, 1-65535 (default: BGPConfiguration's listenPort, else 179)".into(),
                }),
            })
            .transpose()?;

        let log_filter = match get("TORTIE_LOG_LEVEL") {
            None => "info".to_string(),
            Some(level) => check_log_level(&level)?,
        };
        let log_format = match get("TORTIE_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError {
                    variable: "TORTIE_LOG_FORMAT".into(),
                    value: other.into(),
                    problem: "valid: text (default), json".into(),
                });
            }
        };
        let run_dir =
            PathBuf::from(get("TORTIE_RUN_DIR").unwrap_or_else(|| DEFAULT_RUN_DIR.into()));
        if !run_dir.is_absolute() {
            return Err(ConfigError {
                variable: "TORTIE_RUN_DIR".into(),
                value: run_dir.display().to_string(),
                problem: "expected an absolute directory path, e.g. /var/run/tortie".into(),
            });
        }
        let http_listen = match get("TORTIE_HEALTH_LISTEN").as_deref() {
            Some("off" | "none") => None,
            value => {
                let text = value.unwrap_or(DEFAULT_HTTP_LISTEN);
                Some(text.parse::<SocketAddr>().map_err(|_| ConfigError {
                    variable: "TORTIE_HEALTH_LISTEN".into(),
                    value: text.into(),
                    problem: "expected address:port (e.g. 127.0.0.1:9099) or off".into(),
                })?)
            }
        };

        let protocol_names_dir = PathBuf::from(
            get("TORTIE_RT_PROTOS_DIR")
                .unwrap_or_else(|| crate::dataplane::PROTOCOL_NAMES_DIR.to_string()),
        );
        if !protocol_names_dir.is_absolute() {
            return Err(ConfigError {
                variable: "TORTIE_RT_PROTOS_DIR".into(),
                value: protocol_names_dir.display().to_string(),
                problem: "expected an absolute directory path, e.g. /etc/iproute2/rt_protos.d"
                    .into(),
            });
        }
        Ok(NodeConfig {
            node_name,
            addresses,
            asn,
            datastore,
            default_pools,
            ipv4_pool,
            ipv6_pool,
            bgp_port,
            log_filter,
            log_format,
            run_dir,
            http_listen,
            protocol_names_dir,
        })
    }
}

/// Node names become Kubernetes object names and IPAM handle suffixes: RFC 1123 subdomains.
fn check_node_name(variable: &str, name: &str) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        Ok(name.to_string())
    } else {
        Err(ConfigError {
            variable: variable.into(),
            value: name.into(),
            problem: "expected a DNS subdomain name: lower-case letters, digits, '-' and '.', at most 253 characters, e.g. node-1".into(),
        })
    }
}

/// An AS number as plain (`64512`) or asdot (`1.10`) notation (RFC 5396).
pub fn parse_asn(variable: &str, value: &str) -> Result<u32, ConfigError> {
    let bad = || ConfigError {
        variable: variable.into(),
        value: value.into(),
        problem: "expected an AS number, 1-4294967295, or asdot notation such as 1.10".into(),
    };
    let asn = match value.split_once('.') {
        Some((high, low)) => {
            let high: u16 = high.parse().map_err(|_| bad())?;
            let low: u16 = low.parse().map_err(|_| bad())?;
            (u32::from(high) << 16) | u32::from(low)
        }
        None => value.parse::<u32>().map_err(|_| bad())?,
    };
    if asn == 0 {
        return Err(bad());
    }
    Ok(asn)
}

fn parse_bool(
    get: &impl Fn(&str) -> Option<String>,
    variable: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(variable) {
        None => Ok(default),
        Some(value) => match value.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" => Ok(false),
            _ => Err(ConfigError {
                variable: variable.into(),
                value,
                problem: "valid: true, false".into(),
            }),
        },
    }
}

fn parse_mode(
    get: &impl Fn(&str) -> Option<String>,
    variable: &str,
    default: EncapsulationMode,
) -> Result<EncapsulationMode, ConfigError> {
    match get(variable) {
        None => Ok(default),
        Some(value) => EncapsulationMode::from_str(&value).map_err(|_| ConfigError {
            variable: variable.into(),
            value,
            problem: "valid: Always, CrossSubnet, Never".into(),
        }),
    }
}

/// One family's `TORTIE_IPV{4,6}POOL_*` settings. IPv4 always has a pool (default
/// 10.244.0.0/16, IPIP Always); IPv6 only when its CIDR is given.
fn pool_settings(
    get: &impl Fn(&str) -> Option<String>,
    family: Family,
) -> Result<Option<PoolSettings>, ConfigError> {
    let (prefix, default_cidr, (min, max), default_block, default_ipip) = match family {
        Family::V4 => (
            "TORTIE_IPV4POOL_",
            Some(DEFAULT_IPV4_POOL_CIDR),
            BLOCK_SIZE_RANGE_V4,
            26,
            EncapsulationMode::Always,
        ),
        Family::V6 => (
            "TORTIE_IPV6POOL_",
            None,
            BLOCK_SIZE_RANGE_V6,
            122,
            EncapsulationMode::Never,
        ),
    };
    let variable = |suffix: &str| format!("{prefix}{suffix}");
    let cidr_text = match get(&variable("CIDR")) {
        Some(text) => text,
        None => match default_cidr {
            Some(text) => text.to_string(),
            None => return Ok(None),
        },
    };
    let family_name = match family {
        Family::V4 => "an IPv4",
        Family::V6 => "an IPv6",
    };
    let cidr = match cidr_text.parse::<IpNet>() {
        Ok(cidr) if Family::of_net(&cidr) == family && cidr.trunc() == cidr => cidr,
        Ok(cidr) if Family::of_net(&cidr) == family => {
            return Err(ConfigError {
                variable: variable("CIDR"),
                value: cidr_text,
                problem: format!("host bits are set; did you mean {}?", cidr.trunc()),
            });
        }
        _ => {
            return Err(ConfigError {
                variable: variable("CIDR"),
                value: cidr_text,
                problem: format!(
                    "expected {family_name} network in CIDR form, e.g. {}",
                    match family {
                        Family::V4 => "10.244.0.0/16",
                        Family::V6 => "fd00:10:244::/56",
                    }
                ),
            });
        }
    };
    let block_size = match get(&variable("BLOCK_SIZE")) {
        None => default_block,
        Some(text) => match text.parse::<u8>() {
            Ok(size) if (min..=max).contains(&size) && size >= cidr.prefix_len() => size,
            _ => {
                return Err(ConfigError {
                    variable: variable("BLOCK_SIZE"),
                    value: text,
                    problem: format!(
                        "expected a block prefix length from {} to {max} (at least the pool's /{})",
                        min.max(cidr.prefix_len()),
                        cidr.prefix_len()
                    ),
                });
            }
        },
    };
    if block_size < cidr.prefix_len() {
        return Err(ConfigError {
            variable: variable("CIDR"),
            value: cidr.to_string(),
            problem: format!(
                "the pool is smaller than one block (/{block_size}); use a larger pool or set {}",
                variable("BLOCK_SIZE")
            ),
        });
    }
    let ipip_mode = match family {
        Family::V4 => parse_mode(get, &variable("IPIP"), default_ipip)?,
        Family::V6 => EncapsulationMode::Never,
    };
    let vxlan_mode = parse_mode(get, &variable("VXLAN"), EncapsulationMode::Never)?;
    if ipip_mode != EncapsulationMode::Never && vxlan_mode != EncapsulationMode::Never {
        // A pool encapsulates one way; Calico refuses both as well.
        return Err(ConfigError {
            variable: variable("VXLAN"),
            value: vxlan_mode.to_string(),
            problem: format!(
                "{}={ipip_mode} already encapsulates this pool; set one of them to Never",
                variable("IPIP")
            ),
        });
    }
    let nat_outgoing = parse_bool(get, &variable("NAT_OUTGOING"), family == Family::V4)?;
    Ok(Some(PoolSettings {
        cidr,
        block_size,
        ipip_mode,
        vxlan_mode,
        nat_outgoing,
    }))
}

/// `TORTIE_LOG_LEVEL`: a level, or a full tracing filter directive for those who need one.
fn check_log_level(level: &str) -> Result<String, ConfigError> {
    let lower = level.to_ascii_lowercase();
    let simple = ["error", "warn", "warning", "info", "debug", "trace", "off"];
    if simple.contains(&lower.as_str()) {
        return Ok(if lower == "warning" {
            "warn".into()
        } else {
            lower
        });
    }
    match tracing_subscriber::EnvFilter::try_new(level) {
        Ok(_) if level.contains('=') => Ok(level.to_string()),
        _ => Err(ConfigError {
            variable: "TORTIE_LOG_LEVEL".into(),
            value: level.into(),
            problem: "valid: error, warn, info (default), debug, trace, off, or a filter such as tortie_bgp=debug,info".into(),
        }),
    }
}

/// The router id a node uses: its IPv4 address, else one derived from its name (an
/// IPv6-only node still needs a 32-bit id, RFC 6286).
pub fn router_id(ipv4: Option<Ipv4Addr>, node_name: &str) -> Ipv4Addr {
    if let Some(address) = ipv4 {
        return address;
    }
    // FNV-1a of the name, in 240.0.0.0/4 (reserved, so never someone's real address).
    let mut hash: u32 = 0x811c_9dc5;
    for byte in node_name.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    Ipv4Addr::from(0xf000_0000 | (hash & 0x0fff_ffff))
}

/// Whether an address is usable as a BGP peer address from the datastore.
pub fn is_peerable(address: IpAddr) -> bool {
    !(address.is_unspecified() || address.is_multicast() || address.is_loopback())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn addresses() -> AddressArgs {
        AddressArgs {
            ip: String::new(),
            ip6: String::new(),
            ip_autodetection_method: "first-found".into(),
            ip6_autodetection_method: "first-found".into(),
            nodename: None,
        }
    }

    fn load(vars: &[(&str, &str)]) -> Result<NodeConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NodeConfig::from_lookup(
            |name| map.get(name).cloned(),
            addresses(),
            || Ok("Node-A".to_string()),
        )
    }

    #[test]
    fn defaults_follow_calico() {
        let config = load(&[]).unwrap();
        assert_eq!(config.node_name, "node-a");
        assert_eq!(config.asn, None);
        assert_eq!(
            config.datastore,
            DatastoreConfig::Sqlite(PathBuf::from(DEFAULT_DATASTORE_PATH))
        );
        let pool = config.ipv4_pool.pool();
        assert_eq!(pool.name, "default-ipv4-ippool");
        assert_eq!(pool.cidr.to_string(), "10.244.0.0/16");
        assert_eq!(pool.block_size, 26);
        assert_eq!(pool.ipip_mode, EncapsulationMode::Always);
        assert_eq!(pool.vxlan_mode, EncapsulationMode::Never);
        assert!(pool.nat_outgoing);
        assert!(config.ipv6_pool.is_none());
        assert_eq!(
            config.socket_path(),
            PathBuf::from("/var/run/tortie/agent.sock")
        );
        assert_eq!(config.http_listen, Some("127.0.0.1:9099".parse().unwrap()));
        assert!(config.default_pools);
    }

    #[test]
    fn every_setting_is_read() {
        let config = load(&[
            ("NODENAME", "node-7"),
            ("AS", "1.10"),
            ("TORTIE_DATASTORE", "sqlite:/tmp/x.db"),
            ("TORTIE_IPV4POOL_CIDR", "198.18.0.0/16"),
            ("TORTIE_IPV4POOL_BLOCK_SIZE", "28"),
            ("TORTIE_IPV4POOL_IPIP", "Never"),
            ("TORTIE_IPV4POOL_VXLAN", "CrossSubnet"),
            ("TORTIE_IPV4POOL_NAT_OUTGOING", "false"),
            ("TORTIE_IPV6POOL_CIDR", "2001:db8:1::/64"),
            ("TORTIE_IPV6POOL_VXLAN", "Always"),
            ("TORTIE_BGP_PORT", "1179"),
            ("TORTIE_LOG_LEVEL", "debug"),
            ("TORTIE_LOG_FORMAT", "json"),
            ("TORTIE_RUN_DIR", "/run/t1"),
            ("TORTIE_HEALTH_LISTEN", "off"),
        ])
        .unwrap();
        assert_eq!(config.node_name, "node-7");
        assert_eq!(config.asn, Some(65546));
        assert_eq!(
            config.datastore,
            DatastoreConfig::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(config.ipv4_pool.block_size, 28);
        assert_eq!(config.ipv4_pool.vxlan_mode, EncapsulationMode::CrossSubnet);
        assert!(!config.ipv4_pool.nat_outgoing);
        let v6 = config.ipv6_pool.clone().unwrap();
        assert_eq!(v6.block_size, 122);
        assert_eq!(v6.vxlan_mode, EncapsulationMode::Always);
        assert_eq!(config.bgp_port, Some(1179));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.socket_path(), PathBuf::from("/run/t1/agent.sock"));
        assert_eq!(config.http_listen, None);
    }

    #[test]
    fn each_bad_variable_is_named_with_its_value() {
        let cases: &[(&str, &str)] = &[
            ("NODENAME", "Node_1"),
            ("AS", "0"),
            ("AS", "sixty"),
            ("DATASTORE_TYPE", "etcdv3"),
            ("DATASTORE_TYPE", "mysql"),
            ("TORTIE_DATASTORE", "relative.db"),
            ("TORTIE_IPV4POOL_CIDR", "10.244.0.1/16"),
            ("TORTIE_IPV4POOL_CIDR", "2001:db8::/64"),
            ("TORTIE_IPV4POOL_CIDR", "10.300.0.0/16"),
            ("TORTIE_IPV4POOL_BLOCK_SIZE", "19"),
            ("TORTIE_IPV4POOL_IPIP", "always"),
            ("TORTIE_IPV4POOL_VXLAN", "Sometimes"),
            ("TORTIE_IPV4POOL_NAT_OUTGOING", "maybe"),
            ("TORTIE_IPV6POOL_CIDR", "10.0.0.0/8"),
            ("TORTIE_BGP_PORT", "0"),
            ("TORTIE_LOG_LEVEL", "loud"),
            ("TORTIE_LOG_FORMAT", "xml"),
            ("TORTIE_RUN_DIR", "run"),
            ("TORTIE_HEALTH_LISTEN", "9099"),
            ("NO_DEFAULT_POOLS", "perhaps"),
            ("TORTIE_RT_PROTOS_DIR", "etc"),
        ];
        for (variable, value) in cases {
            let error = load(&[(variable, value)]).expect_err(variable);
            assert_eq!(&error.variable, variable, "{error}");
            assert_eq!(error.value, *value, "{error}");
            assert!(error.to_string().contains(value), "{error}");
        }
    }

    #[test]
    fn ipip_and_vxlan_together_are_refused() {
        let error = load(&[("TORTIE_IPV4POOL_VXLAN", "Always")]).unwrap_err();
        assert_eq!(error.variable, "TORTIE_IPV4POOL_VXLAN");
        assert!(
            error.problem.contains("TORTIE_IPV4POOL_IPIP=Always"),
            "{error}"
        );
    }

    #[test]
    fn router_id_is_the_ipv4_address_or_a_stable_reserved_one() {
        let address = Ipv4Addr::new(198, 51, 100, 10);
        assert_eq!(router_id(Some(address), "a"), address);
        let derived = router_id(None, "node-1");
        assert_eq!(derived, router_id(None, "node-1"));
        assert_ne!(derived, router_id(None, "node-2"));
        assert_eq!(derived.octets()[0] & 0xf0, 0xf0);
    }
}
