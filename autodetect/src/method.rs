//! `IP_AUTODETECTION_METHOD` / `IP6_AUTODETECTION_METHOD`: Calico's syntax, parsed and validated.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use regex::Regex;

use crate::Family;
use crate::error::MethodError;

/// The forms a method may take, as printed in every parse error.
pub const VALID_FORMS: &str = "first-found, interface=<regex>[,<regex>...], \
skip-interface=<regex>[,<regex>...], can-reach=<IP or hostname>, cidr=<CIDR>[,<CIDR>...], \
kubernetes-internal-ip";

/// How the node's address is to be chosen.
#[derive(Debug, Clone)]
pub enum Method {
    /// The first global unicast address, walking interfaces in the documented order and
    /// skipping the default list of virtual interfaces.
    FirstFound,
    /// Only interfaces whose name matches one of the patterns; the default skip list does
    /// not apply (the user named what they want).
    Interface(Vec<NamePattern>),
    /// As first-found, with these patterns skipped on top of the default list.
    SkipInterface(Vec<NamePattern>),
    /// The address the kernel would use as source toward this destination.
    CanReach(Destination),
    /// The first address inside one of these networks, on any interface.
    Cidr(Vec<IpNet>),
    /// The Node's InternalIP from the Kubernetes API.
    KubernetesInternalIp,
}

/// An interface-name pattern. Like Calico's, it is an unanchored regular expression:
/// `eth` matches `eth0` and `veth1`, so write `^eth` to mean a prefix.
#[derive(Debug, Clone)]
pub struct NamePattern {
    regex: Regex,
}

impl NamePattern {
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            regex: Regex::new(source)?,
        })
    }

    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }

    pub fn matches(&self, interface: &str) -> bool {
        self.regex.is_match(interface)
    }
}

/// What `can-reach=` names: an address, or a host name resolved when detection runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Address(IpAddr),
    Host(String),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Address(address) => address.fmt(f),
            Destination::Host(host) => f.write_str(host),
        }
    }
}

impl Method {
    /// Parses a method as written in the environment. `family` is the family the variable
    /// detects (`IP_AUTODETECTION_METHOD` is IPv4), so an IPv6 CIDR given for IPv4 is caught
    /// here rather than silently matching nothing.
    pub fn parse(text: &str, family: Family) -> Result<Method, MethodError> {
        let fail = |problem: String| MethodError {
            variable: family.method_variable(),
            input: text.to_string(),
            problem,
        };
        let text_trimmed = text.trim();
        if text_trimmed.is_empty() || text_trimmed == "first-found" {
            return Ok(Method::FirstFound);
        }
        if text_trimmed == "kubernetes-internal-ip" {
            return Ok(Method::KubernetesInternalIp);
        }
        let Some((name, value)) = text_trimmed.split_once('=') else {
            return Err(fail(format!("unknown method \"{text_trimmed}\"")));
        };
        match name {
            "interface" => Ok(Method::Interface(
                parse_patterns(name, value).map_err(fail)?,
            )),
            "skip-interface" => Ok(Method::SkipInterface(
                parse_patterns(name, value).map_err(fail)?,
            )),
            "can-reach" => Ok(Method::CanReach(
                parse_destination(value, family).map_err(fail)?,
            )),
            "cidr" => Ok(Method::Cidr(parse_cidrs(value, family).map_err(fail)?)),
            "first-found" | "kubernetes-internal-ip" => Err(fail(format!(
                "\"{name}\" takes no value (found \"={value}\")"
            ))),
            other => Err(fail(format!("unknown method \"{other}\""))),
        }
    }
}

fn list_items<'a>(name: &str, value: &'a str) -> Result<Vec<&'a str>, String> {
    if value.trim().is_empty() {
        return Err(format!("\"{name}=\" needs a value"));
    }
    value
        .split(',')
        .enumerate()
        .map(|(position, item)| {
            let item = item.trim();
            if item.is_empty() {
                Err(format!(
                    "item {} of \"{name}=\" is empty (stray comma?)",
                    position + 1
                ))
            } else {
                Ok(item)
            }
        })
        .collect()
}

fn parse_patterns(name: &str, value: &str) -> Result<Vec<NamePattern>, String> {
    list_items(name, value)?
        .into_iter()
        .map(|item| {
            NamePattern::new(item).map_err(|error| {
                let detail = error.to_string();
                let last = detail.lines().last().unwrap_or("invalid").trim();
                let reason = last.strip_prefix("error: ").unwrap_or(last);
                format!("\"{item}\" in \"{name}=\" is not a valid regular expression ({reason})")
            })
        })
        .collect()
}

fn parse_destination(value: &str, family: Family) -> Result<Destination, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("\"can-reach=\" needs an IP address or a host name".to_string());
    }
    if let Ok(address) = value.parse::<IpAddr>() {
        if Family::of(address) != family {
            return Err(format!(
                "can-reach={address} is an {} address, but this setting detects {}",
                Family::of(address),
                family
            ));
        }
        return Ok(Destination::Address(address));
    }
    // RFC 1123 host names: letters, digits and hyphens in dot-separated labels of 1-63.
    let valid_host = value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid_host {
        return Err(format!(
            "\"{value}\" in \"can-reach=\" is neither an IP address nor a host name"
        ));
    }
    Ok(Destination::Host(value.to_string()))
}

fn parse_cidrs(value: &str, family: Family) -> Result<Vec<IpNet>, String> {
    list_items("cidr", value)?
        .into_iter()
        .map(|item| {
            let network: IpNet = item.parse().map_err(|_| {
                if item.contains('/') {
                    format!("\"{item}\" in \"cidr=\" is not a valid CIDR")
                } else {
                    format!("\"{item}\" in \"cidr=\" has no prefix length (write e.g. {item}/24)")
                }
            })?;
            if Family::of(network.addr()) != family {
                return Err(format!(
                    "\"{item}\" in \"cidr=\" is an {} network, but this setting detects {}",
                    Family::of(network.addr()),
                    family
                ));
            }
            // Like Go's net.ParseCIDR (which Calico uses), host bits are allowed and dropped.
            Ok(network.trunc())
        })
        .collect()
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn join<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
            items.iter().map(show).collect::<Vec<_>>().join(",")
        }
        match self {
            Method::FirstFound => f.write_str("first-found"),
            Method::Interface(patterns) => {
                write!(
                    f,
                    "interface={}",
                    join(patterns, |p| p.as_str().to_string())
                )
            }
            Method::SkipInterface(patterns) => {
                write!(
                    f,
                    "skip-interface={}",
                    join(patterns, |p| p.as_str().to_string())
                )
            }
            Method::CanReach(destination) => write!(f, "can-reach={destination}"),
            Method::Cidr(networks) => write!(f, "cidr={}", join(networks, |n| n.to_string())),
            Method::KubernetesInternalIp => f.write_str("kubernetes-internal-ip"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse4(text: &str) -> Result<Method, MethodError> {
        Method::parse(text, Family::V4)
    }

    fn problem(text: &str, family: Family) -> String {
        match Method::parse(text, family) {
            Ok(method) => panic!("{text:?} parsed as {method}, expected an error"),
            Err(error) => error.problem,
        }
    }

    #[test]
    fn empty_and_first_found_are_the_default() {
        assert!(matches!(parse4("").unwrap(), Method::FirstFound));
        assert!(matches!(
            parse4("  first-found ").unwrap(),
            Method::FirstFound
        ));
    }

    #[test]
    fn interface_takes_a_list_of_unanchored_regexes() {
        let Method::Interface(patterns) = parse4("interface=eth0,ens3.*").unwrap() else {
            panic!("not an interface method");
        };
        assert_eq!(patterns.len(), 2);
        assert!(patterns[0].matches("eth0"));
        assert!(patterns[0].matches("veth0"), "unanchored, as in Calico");
        assert!(patterns[1].matches("ens33"));
        assert!(!patterns[1].matches("eth1"));
    }

    #[test]
    fn skip_interface_and_its_display_round_trip() {
        let method = parse4("skip-interface=^eth1$, ^docker").unwrap();
        assert_eq!(method.to_string(), "skip-interface=^eth1$,^docker");
        let reparsed = parse4(&method.to_string()).unwrap();
        assert_eq!(reparsed.to_string(), method.to_string());
    }

    #[test]
    fn can_reach_takes_an_address_or_a_host_name() {
        match parse4("can-reach=198.51.100.1").unwrap() {
            Method::CanReach(Destination::Address(address)) => {
                assert_eq!(address, "198.51.100.1".parse::<IpAddr>().unwrap())
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse4("can-reach=www.example.com").unwrap() {
            Method::CanReach(Destination::Host(host)) => assert_eq!(host, "www.example.com"),
            other => panic!("unexpected {other:?}"),
        }
        match Method::parse("can-reach=2001:db8::1", Family::V6).unwrap() {
            Method::CanReach(Destination::Address(address)) => assert!(address.is_ipv6()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn cidr_takes_a_list_and_drops_host_bits() {
        let Method::Cidr(networks) = parse4("cidr=203.0.113.7/24,198.51.100.0/25").unwrap() else {
            panic!("not a cidr method");
        };
        assert_eq!(networks[0].to_string(), "203.0.113.0/24");
        assert_eq!(networks[1].to_string(), "198.51.100.0/25");
    }

    #[test]
    fn kubernetes_internal_ip_parses() {
        assert!(matches!(
            parse4("kubernetes-internal-ip").unwrap(),
            Method::KubernetesInternalIp
        ));
    }

    #[test]
    fn unknown_method_is_named() {
        assert_eq!(
            problem("interfaces=eth0", Family::V4),
            "unknown method \"interfaces\""
        );
        assert_eq!(
            problem("firstfound", Family::V4),
            "unknown method \"firstfound\""
        );
        assert_eq!(
            problem("first-found=eth0", Family::V4),
            "\"first-found\" takes no value (found \"=eth0\")"
        );
    }

    #[test]
    fn bad_cidrs_are_named() {
        assert_eq!(
            problem("cidr=300.1.2.0/24", Family::V4),
            "\"300.1.2.0/24\" in \"cidr=\" is not a valid CIDR"
        );
        assert_eq!(
            problem("cidr=203.0.113.0", Family::V4),
            "\"203.0.113.0\" in \"cidr=\" has no prefix length (write e.g. 203.0.113.0/24)"
        );
        assert_eq!(
            problem("cidr=2001:db8::/64", Family::V4),
            "\"2001:db8::/64\" in \"cidr=\" is an IPv6 network, but this setting detects IPv4"
        );
        assert_eq!(problem("cidr=", Family::V4), "\"cidr=\" needs a value");
        assert_eq!(
            problem("cidr=203.0.113.0/24,", Family::V4),
            "item 2 of \"cidr=\" is empty (stray comma?)"
        );
    }

    #[test]
    fn bad_regexes_are_named() {
        let text = problem("interface=eth[", Family::V4);
        assert!(
            text.starts_with("\"eth[\" in \"interface=\" is not a valid regular expression ("),
            "{text}"
        );
        assert!(problem("skip-interface=(", Family::V4).contains("\"(\""));
        assert_eq!(
            problem("interface=", Family::V4),
            "\"interface=\" needs a value"
        );
    }

    #[test]
    fn bad_destinations_are_named() {
        assert_eq!(
            problem("can-reach=", Family::V4),
            "\"can-reach=\" needs an IP address or a host name"
        );
        assert_eq!(
            problem("can-reach=bad host!", Family::V4),
            "\"bad host!\" in \"can-reach=\" is neither an IP address nor a host name"
        );
        assert_eq!(
            problem("can-reach=2001:db8::1", Family::V4),
            "can-reach=2001:db8::1 is an IPv6 address, but this setting detects IPv4"
        );
    }

    #[test]
    fn the_error_names_the_variable_and_lists_valid_forms() {
        let error = Method::parse("interfaces=eth0", Family::V6).unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("IP6_AUTODETECTION_METHOD=\"interfaces=eth0\": "),
            "{text}"
        );
        assert!(text.contains(VALID_FORMS), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }
}
