//! The decision: configuration and an interface snapshot in, the node's address out, with a
//! verdict for every interface and address looked at. Pure: everything it needs from the
//! system comes in through [`Environment`], so the rules are tested without root.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::method::{Destination, Method, NamePattern};
use crate::setting::AddressSetting;
use crate::snapshot::{Interface, Snapshot};
use crate::{DetectError, Family};

/// Interfaces that first-found and skip-interface pass over: container bridges, veths and
/// tunnels of this and other CNIs, and loopback. Anchored at the start of the name.
pub const DEFAULT_SKIP_LIST: &[&str] = &[
    "^docker",
    "^cbr",
    "^dummy",
    "^podman",
    "^virbr",
    "^lxcbr",
    "^veth",
    "^lo$",
    "^br-",
    "^cali",
    "^tunl",
    "^flannel",
    "^kube-ipvs",
    "^cni",
    "^vxlan\\.calico",
    "^vxlan-v6\\.calico",
    "^vxlan\\.tortie",
    "^vxlan-v6\\.tortie",
    "^wireguard",
    "^wg-v6",
    "^nodelocaldns",
];

/// What detection needs to ask the system beyond the snapshot: the kernel's route lookup,
/// name resolution, and (for `kubernetes-internal-ip`) the Kubernetes API.
pub trait Environment {
    /// The source address the kernel would use toward `destination`.
    fn route_source(&self, destination: IpAddr) -> io::Result<IpAddr>;
    /// The addresses `host` resolves to.
    fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>>;
    /// This node's InternalIP addresses, with a description of where they came from (e.g.
    /// `InternalIP of Kubernetes Node "n1"`), or why they cannot be had here.
    fn node_internal_ips(&self) -> Result<(String, Vec<IpAddr>), String>;
}

/// The chosen address and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detection {
    /// The address with the prefix length of the interface that holds it.
    pub address: IpNet,
    /// The interface that holds it; `None` only for an `IP` setting no interface holds.
    pub interface: Option<String>,
    /// The method as normalized text, or `IP=<value>` when the address was given.
    pub method: String,
    /// Every interface and address looked at, in the order they were looked at.
    pub considered: Vec<Consideration>,
    /// Things the user should know although detection succeeded.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consideration {
    pub interface: String,
    /// `None` when the interface was passed over as a whole.
    pub address: Option<IpNet>,
    pub verdict: Verdict,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The chosen address.
    Taken,
    /// Acceptable, but another address came first.
    Candidate,
    Skipped,
}

/// Decides this family's address, or `Ok(None)` when the family is disabled (`IP=none`, or
/// `IP6` left empty as in Calico).
pub fn decide(
    setting: &AddressSetting,
    method: &Method,
    family: Family,
    snapshot: &Snapshot,
    environment: &dyn Environment,
) -> Result<Option<Detection>, DetectError> {
    match setting {
        AddressSetting::Disabled => Ok(None),
        AddressSetting::Given {
            text,
            address,
            prefix_len,
        } => Ok(Some(given(family, text, *address, *prefix_len, snapshot))),
        AddressSetting::Detect => detect(method, family, snapshot, environment).map(Some),
    }
}

/// An address the user gave in `IP` / `IP6`: used as given, with the prefix length of the
/// interface that holds it when the user wrote none.
fn given(
    family: Family,
    text: &str,
    address: IpAddr,
    prefix_len: Option<u8>,
    snapshot: &Snapshot,
) -> Detection {
    let method = format!("{}={text}", family.address_variable());
    let mut warnings = Vec::new();
    let (network, interface, considered) = match snapshot.holder_of(address) {
        Some((holder, held)) => {
            let prefix_len = match prefix_len {
                Some(len) if len != held.prefix_len() => {
                    warnings.push(format!(
                        "{method}: {} holds {held}, but the setting says /{len}; using /{len}",
                        holder.name
                    ));
                    len
                }
                Some(len) => len,
                None => held.prefix_len(),
            };
            let network = net(address, prefix_len);
            let considered = vec![Consideration {
                interface: holder.name.clone(),
                address: Some(held),
                verdict: Verdict::Taken,
                reason: format!("holds the address given in {}", family.address_variable()),
            }];
            (network, Some(holder.name.clone()), considered)
        }
        None => {
            let prefix_len = prefix_len.unwrap_or(family.max_prefix_len());
            warnings.push(format!(
                "{method}: no interface of this host holds {address}; using it as given (/{prefix_len})"
            ));
            (net(address, prefix_len), None, Vec::new())
        }
    };
    Detection {
        address: network,
        interface,
        method,
        considered,
        warnings,
    }
}

fn net(address: IpAddr, prefix_len: u8) -> IpNet {
    // The prefix length was validated against the family when the setting was parsed.
    IpNet::new(address, prefix_len).unwrap_or_else(|_| IpNet::from(address))
}

/// Runs one autodetection method over the snapshot.
pub fn detect(
    method: &Method,
    family: Family,
    snapshot: &Snapshot,
    environment: &dyn Environment,
) -> Result<Detection, DetectError> {
    let method_text = method.to_string();
    match method {
        Method::FirstFound => filter(method_text, family, snapshot, &Filter::defaults(&[])),
        Method::SkipInterface(patterns) => {
            filter(method_text, family, snapshot, &Filter::defaults(patterns))
        }
        Method::Interface(patterns) => filter(
            method_text,
            family,
            snapshot,
            &Filter {
                include: Some(patterns),
                ..Filter::default()
            },
        ),
        Method::Cidr(networks) => filter(
            method_text,
            family,
            snapshot,
            &Filter {
                cidrs: Some(networks),
                ..Filter::default()
            },
        ),
        Method::CanReach(destination) => {
            can_reach(method_text, family, destination, snapshot, environment)
        }
        Method::KubernetesInternalIp => {
            let (origin, addresses) =
                environment
                    .node_internal_ips()
                    .map_err(|reason| DetectError::Unavailable {
                        method: method_text.clone(),
                        reason,
                    })?;
            let Some(address) = addresses.into_iter().find(|a| Family::of(*a) == family) else {
                return Err(DetectError::NoKnownAddress {
                    method: method_text,
                    origin,
                    family,
                });
            };
            holder(method_text, address, snapshot, &origin).ok_or_else(|| {
                DetectError::KnownAddressNotLocal {
                    method: method.to_string(),
                    address,
                    origin,
                }
            })
        }
    }
}

fn can_reach(
    method_text: String,
    family: Family,
    destination: &Destination,
    snapshot: &Snapshot,
    environment: &dyn Environment,
) -> Result<Detection, DetectError> {
    let target = match destination {
        Destination::Address(address) => *address,
        Destination::Host(host) => {
            let resolved = environment
                .resolve(host)
                .map_err(|error| DetectError::Resolve {
                    method: method_text.clone(),
                    host: host.clone(),
                    reason: error.to_string(),
                })?;
            resolved
                .into_iter()
                .find(|a| Family::of(*a) == family)
                .ok_or_else(|| DetectError::Resolve {
                    method: method_text.clone(),
                    host: host.clone(),
                    reason: format!("it has no {family} address"),
                })?
        }
    };
    let source = environment
        .route_source(target)
        .map_err(|error| DetectError::Unreachable {
            method: method_text.clone(),
            destination: target.to_string(),
            reason: error.to_string(),
        })?;
    let why = format!("the kernel's source address toward {target}");
    holder(method_text.clone(), source, snapshot, &why).ok_or(DetectError::SourceNotOnInterface {
        method: method_text,
        destination: target.to_string(),
        source_address: source,
    })
}

/// The detection that picks whichever interface holds `address`.
fn holder(method: String, address: IpAddr, snapshot: &Snapshot, why: &str) -> Option<Detection> {
    let (interface, held) = snapshot.holder_of(address)?;
    Some(Detection {
        address: held,
        interface: Some(interface.name.clone()),
        method,
        considered: vec![Consideration {
            interface: interface.name.clone(),
            address: Some(held),
            verdict: Verdict::Taken,
            reason: format!("holds {why}"),
        }],
        warnings: Vec::new(),
    })
}

/// The name and address filters of first-found, interface=, skip-interface= and cidr=.
#[derive(Default)]
struct Filter<'a> {
    /// Only interfaces matching one of these (interface=).
    include: Option<&'a [NamePattern]>,
    /// Apply [`DEFAULT_SKIP_LIST`] (first-found, skip-interface=).
    default_skips: bool,
    /// Skip interfaces matching one of these (skip-interface=).
    skips: &'a [NamePattern],
    /// Only addresses inside one of these (cidr=).
    cidrs: Option<&'a [IpNet]>,
}

impl<'a> Filter<'a> {
    fn defaults(skips: &'a [NamePattern]) -> Self {
        Filter {
            default_skips: true,
            skips,
            ..Filter::default()
        }
    }

    /// Why an interface is passed over as a whole, if it is.
    fn reject_interface(&self, interface: &Interface) -> Option<String> {
        if let Some(include) = self.include
            && !include.iter().any(|p| p.matches(&interface.name))
        {
            return Some("name matches no interface= pattern".to_string());
        }
        if self.default_skips
            && let Some(pattern) = DEFAULT_SKIP_LIST
                .iter()
                .find(|p| default_skip_matches(p, &interface.name))
        {
            return Some(format!("on the default skip list ({pattern})"));
        }
        if let Some(pattern) = self.skips.iter().find(|p| p.matches(&interface.name)) {
            return Some(format!(
                "matches skip-interface pattern {}",
                pattern.as_str()
            ));
        }
        if !interface.admin_up {
            return Some("interface is down".to_string());
        }
        if !interface.carrier {
            return Some("no carrier (link is down)".to_string());
        }
        None
    }
}

fn default_skip_matches(pattern: &str, name: &str) -> bool {
    // The list is literal prefixes (and "^lo$"), so plain string matching says the same as
    // the regexes it is written as, without compiling them on every run.
    let literal = pattern.trim_start_matches('^').replace("\\.", ".");
    match literal.strip_suffix('$') {
        Some(exact) => name == exact,
        None => name.starts_with(&literal),
    }
}

/// Why an address is not an acceptable node address, if it is not. Only global unicast
/// addresses count, as in Calico (Go's `IsGlobalUnicast`, which includes private ranges).
fn reject_address(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some("loopback address")
            } else if v4.is_link_local() {
                Some("link-local address")
            } else if v4.is_multicast() || v4.is_broadcast() || v4.is_unspecified() {
                Some("not a unicast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some("loopback address")
            } else if v6.is_unicast_link_local() {
                Some("link-local address")
            } else if v6.is_multicast() || v6.is_unspecified() {
                Some("not a unicast address")
            } else {
                None
            }
        }
    }
}

fn filter(
    method: String,
    family: Family,
    snapshot: &Snapshot,
    filter: &Filter,
) -> Result<Detection, DetectError> {
    let mut considered = Vec::new();
    // (index into `considered`, address): acceptable addresses in walk order.
    let mut candidates: Vec<(usize, IpNet)> = Vec::new();

    let mut interfaces: Vec<&Interface> = snapshot.interfaces.iter().collect();
    interfaces.sort_by_key(|interface| std::cmp::Reverse(interface.index));

    for interface in interfaces {
        if let Some(reason) = filter.reject_interface(interface) {
            considered.push(Consideration {
                interface: interface.name.clone(),
                address: None,
                verdict: Verdict::Skipped,
                reason,
            });
            continue;
        }
        let mut any = false;
        for held in interface.addresses_of(family) {
            any = true;
            let address = held.address;
            let rejection = if let Some(why) = reject_address(address.addr()) {
                Some(why.to_string())
            } else if held.dad_failed {
                Some("duplicate address detection failed".to_string())
            } else if let Some(cidrs) = filter.cidrs
                && !cidrs.iter().any(|c| c.contains(&address.addr()))
            {
                Some("outside every cidr= network".to_string())
            } else {
                None
            };
            match rejection {
                Some(reason) => considered.push(Consideration {
                    interface: interface.name.clone(),
                    address: Some(address),
                    verdict: Verdict::Skipped,
                    reason,
                }),
                None => {
                    candidates.push((considered.len(), address));
                    considered.push(Consideration {
                        interface: interface.name.clone(),
                        address: Some(address),
                        verdict: Verdict::Candidate,
                        reason: String::new(),
                    });
                }
            }
        }
        if !any {
            considered.push(Consideration {
                interface: interface.name.clone(),
                address: None,
                verdict: Verdict::Skipped,
                reason: format!("no {family} address"),
            });
        }
    }

    // A host-prefix address (/32, /128) is typically a VIP that keepalived or a load balancer
    // moves between machines: choosing it makes the node's identity wander. Take one only
    // when nothing else qualifies.
    let host_prefix = family.max_prefix_len();
    let chosen = candidates
        .iter()
        .find(|(_, a)| a.prefix_len() < host_prefix)
        .or_else(|| candidates.first())
        .copied();

    let Some((chosen_at, address)) = chosen else {
        return Err(DetectError::NothingFound {
            family,
            method,
            why: summarize(&considered),
            considered,
        });
    };

    let mut warnings = Vec::new();
    let chosen_interface = considered[chosen_at].interface.clone();
    for (at, candidate) in &candidates {
        let entry = &mut considered[*at];
        if *at == chosen_at {
            entry.verdict = Verdict::Taken;
            entry.reason = if candidate.prefix_len() == host_prefix {
                warnings.push(format!(
                    "{method}: chose {candidate} on {chosen_interface}, a /{host_prefix} (often a \
                     VIP), because no other address qualified; set IP or a narrower method if \
                     this is not the node's own address"
                ));
                format!("first acceptable address (a /{host_prefix}, but the only one)")
            } else {
                "first acceptable address".to_string()
            };
        } else if candidate.prefix_len() == host_prefix && address.prefix_len() < host_prefix {
            entry.verdict = Verdict::Skipped;
            entry.reason = format!(
                "a /{host_prefix} (often a VIP): used only when no other address qualifies"
            );
        } else {
            entry.reason = format!("acceptable, but {address} on {chosen_interface} came first");
        }
    }

    Ok(Detection {
        address,
        interface: Some(chosen_interface),
        method,
        considered,
        warnings,
    })
}

/// One line saying why each interface was passed over, for the error message.
fn summarize(considered: &[Consideration]) -> String {
    if considered.is_empty() {
        return "this host has no interfaces".to_string();
    }
    considered
        .iter()
        .map(|c| match c.address {
            Some(address) => format!("{} {address}: {}", c.interface, c.reason),
            None => format!("{}: {}", c.interface, c.reason),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::InterfaceAddress;
    use std::cell::RefCell;

    fn interface(index: u32, name: &str, addresses: &[&str]) -> Interface {
        Interface {
            index,
            name: name.to_string(),
            admin_up: true,
            carrier: true,
            addresses: addresses
                .iter()
                .map(|a| InterfaceAddress::new(a.parse().unwrap()))
                .collect(),
        }
    }

    fn snapshot(interfaces: Vec<Interface>) -> Snapshot {
        Snapshot { interfaces }
    }

    /// A host like the ones Calico users run: loopback, two NICs, docker, a pod veth, a
    /// tunnel, and an interface that is down.
    fn busy_host() -> Snapshot {
        let mut down = interface(7, "ens34", &["192.0.2.77/24"]);
        down.admin_up = false;
        snapshot(vec![
            interface(1, "lo", &["127.0.0.1/8", "::1/128"]),
            interface(
                2,
                "ens32",
                &["198.51.100.10/24", "198.51.100.11/24", "fe80::1/64"],
            ),
            interface(3, "ens33", &["203.0.113.10/24", "2001:db8:1::10/64"]),
            interface(4, "docker0", &["192.0.2.1/24"]),
            interface(5, "cali0123456789a", &["169.254.1.1/32"]),
            interface(6, "vxlan.tortie", &["198.18.0.1/32"]),
            down,
        ])
    }

    /// A stand-in for the system, for the rules that ask it something.
    #[derive(Default)]
    struct FakeEnvironment {
        source: Option<IpAddr>,
        resolved: Vec<IpAddr>,
        internal: Option<Vec<IpAddr>>,
        asked: RefCell<Vec<IpAddr>>,
    }

    impl Environment for FakeEnvironment {
        fn route_source(&self, destination: IpAddr) -> io::Result<IpAddr> {
            self.asked.borrow_mut().push(destination);
            self.source
                .ok_or_else(|| io::Error::new(io::ErrorKind::NetworkUnreachable, "no route"))
        }
        fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
            if self.resolved.is_empty() {
                Err(io::Error::other(format!("{host}: no such host")))
            } else {
                Ok(self.resolved.clone())
            }
        }
        fn node_internal_ips(&self) -> Result<(String, Vec<IpAddr>), String> {
            self.internal
                .clone()
                .map(|a| ("InternalIP of Kubernetes Node \"n1\"".to_string(), a))
                .ok_or_else(|| "not running in a Kubernetes cluster".to_string())
        }
    }

    fn run(method: &str, family: Family, snapshot: &Snapshot) -> Result<Detection, DetectError> {
        run_with(method, family, snapshot, &FakeEnvironment::default())
    }

    fn run_with(
        method: &str,
        family: Family,
        snapshot: &Snapshot,
        environment: &FakeEnvironment,
    ) -> Result<Detection, DetectError> {
        detect(
            &Method::parse(method, family).unwrap(),
            family,
            snapshot,
            environment,
        )
    }

    fn verdict_of<'a>(detection: &'a Detection, interface: &str) -> Vec<&'a Consideration> {
        detection
            .considered
            .iter()
            .filter(|c| c.interface == interface)
            .collect()
    }

    #[test]
    fn first_found_walks_from_the_highest_index_and_skips_virtual_interfaces() {
        let detection = run("first-found", Family::V4, &busy_host()).unwrap();
        assert_eq!(detection.address.to_string(), "203.0.113.10/24");
        assert_eq!(detection.interface.as_deref(), Some("ens33"));
        assert_eq!(detection.method, "first-found");
        let order: Vec<&str> = detection
            .considered
            .iter()
            .map(|c| c.interface.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "ens34",
                "vxlan.tortie",
                "cali0123456789a",
                "docker0",
                "ens33",
                "ens32",
                "ens32",
                "lo"
            ]
        );
        let docker = verdict_of(&detection, "docker0")[0];
        assert_eq!(docker.verdict, Verdict::Skipped);
        assert_eq!(docker.reason, "on the default skip list (^docker)");
        assert_eq!(
            verdict_of(&detection, "ens34")[0].reason,
            "interface is down"
        );
        assert_eq!(
            verdict_of(&detection, "lo")[0].reason,
            "on the default skip list (^lo$)"
        );
        let ens32 = verdict_of(&detection, "ens32");
        assert_eq!(ens32[0].verdict, Verdict::Candidate);
        assert_eq!(
            ens32[0].reason,
            "acceptable, but 203.0.113.10/24 on ens33 came first"
        );
    }

    #[test]
    fn the_primary_address_of_an_interface_comes_first() {
        let host = snapshot(vec![interface(
            2,
            "eth0",
            &["198.51.100.10/24", "198.51.100.11/24"],
        )]);
        let detection = run("first-found", Family::V4, &host).unwrap();
        assert_eq!(detection.address.to_string(), "198.51.100.10/24");
    }

    #[test]
    fn the_answer_does_not_depend_on_the_order_of_the_snapshot() {
        let mut host = busy_host();
        let expected = run("first-found", Family::V4, &host).unwrap();
        host.interfaces.reverse();
        assert_eq!(run("first-found", Family::V4, &host).unwrap(), expected);
        host.interfaces.swap(1, 4);
        assert_eq!(run("first-found", Family::V4, &host).unwrap(), expected);
    }

    #[test]
    fn a_vip_is_never_chosen_while_another_candidate_exists() {
        // keepalived's /32 on the newest interface: Calico's first-found would take it.
        let host = snapshot(vec![
            interface(2, "eth0", &["198.51.100.10/24"]),
            interface(9, "lb0", &["203.0.113.100/32"]),
        ]);
        let detection = run("first-found", Family::V4, &host).unwrap();
        assert_eq!(detection.address.to_string(), "198.51.100.10/24");
        let vip = verdict_of(&detection, "lb0")[0];
        assert_eq!(vip.verdict, Verdict::Skipped);
        assert!(vip.reason.contains("/32"), "{}", vip.reason);
        assert!(detection.warnings.is_empty());

        // The same on one interface, VIP listed first.
        let host = snapshot(vec![interface(
            2,
            "eth0",
            &["203.0.113.100/32", "198.51.100.10/24"],
        )]);
        assert_eq!(
            run("first-found", Family::V4, &host)
                .unwrap()
                .address
                .to_string(),
            "198.51.100.10/24"
        );
        // And for IPv6 /128s.
        let host = snapshot(vec![
            interface(2, "eth0", &["2001:db8::10/64"]),
            interface(3, "lb0", &["2001:db8::100/128"]),
        ]);
        assert_eq!(
            run("first-found", Family::V6, &host)
                .unwrap()
                .address
                .to_string(),
            "2001:db8::10/64"
        );
    }

    #[test]
    fn a_vip_alone_is_chosen_with_a_warning() {
        let host = snapshot(vec![interface(9, "lb0", &["203.0.113.100/32"])]);
        let detection = run("first-found", Family::V4, &host).unwrap();
        assert_eq!(detection.address.to_string(), "203.0.113.100/32");
        assert_eq!(detection.considered[0].verdict, Verdict::Taken);
        assert_eq!(detection.warnings.len(), 1);
        assert!(
            detection.warnings[0].contains("/32"),
            "{:?}",
            detection.warnings
        );
    }

    #[test]
    fn link_local_loopback_and_failed_addresses_never_count() {
        let mut host = snapshot(vec![interface(
            2,
            "eth0",
            &["169.254.3.4/16", "fe80::1/64", "2001:db8::7/64"],
        )]);
        let error = run("first-found", Family::V4, &host).unwrap_err();
        assert!(error.to_string().contains("link-local address"), "{error}");
        host.interfaces[0].addresses[2].dad_failed = true;
        let error = run("first-found", Family::V6, &host).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("fe80::1/64: link-local address"), "{text}");
        assert!(
            text.contains("duplicate address detection failed"),
            "{text}"
        );
    }

    #[test]
    fn no_carrier_is_skipped() {
        let mut nic = interface(2, "eth0", &["198.51.100.10/24"]);
        nic.carrier = false;
        let host = snapshot(vec![nic, interface(3, "eth1", &["203.0.113.1/24"])]);
        let host_reversed = snapshot(host.interfaces.iter().rev().cloned().collect());
        let detection = run("first-found", Family::V4, &host_reversed).unwrap();
        assert_eq!(detection.interface.as_deref(), Some("eth1"));
        assert_eq!(
            verdict_of(&detection, "eth0")[0].reason,
            "no carrier (link is down)"
        );
    }

    #[test]
    fn interface_picks_matching_names_and_ignores_the_default_skip_list() {
        let host = busy_host();
        let detection = run("interface=ens32", Family::V4, &host).unwrap();
        assert_eq!(detection.address.to_string(), "198.51.100.10/24");
        assert_eq!(
            verdict_of(&detection, "ens33")[0].reason,
            "name matches no interface= pattern"
        );
        // The user named docker0: they get it.
        let detection = run("interface=docker0", Family::V4, &host).unwrap();
        assert_eq!(detection.address.to_string(), "192.0.2.1/24");
        // Several patterns; walk order still decides.
        let detection = run("interface=ens32,ens33", Family::V4, &host).unwrap();
        assert_eq!(detection.interface.as_deref(), Some("ens33"));
        // Unanchored: "ns3" matches ens32 and ens33.
        let detection = run("interface=ns3", Family::V4, &host).unwrap();
        assert_eq!(detection.interface.as_deref(), Some("ens33"));
    }

    #[test]
    fn interface_with_no_match_explains_every_interface() {
        let error = run("interface=eth9", Family::V4, &busy_host()).unwrap_err();
        let DetectError::NothingFound { considered, .. } = &error else {
            panic!("unexpected {error}");
        };
        assert_eq!(considered.len(), 7);
        let text = error.to_string();
        assert!(
            text.starts_with("no IPv4 address found by interface=eth9: "),
            "{text}"
        );
        assert!(
            text.contains("ens33: name matches no interface= pattern"),
            "{text}"
        );
    }

    #[test]
    fn skip_interface_adds_to_the_default_list() {
        let detection = run("skip-interface=ens33", Family::V4, &busy_host()).unwrap();
        assert_eq!(detection.address.to_string(), "198.51.100.10/24");
        assert_eq!(
            verdict_of(&detection, "ens33")[0].reason,
            "matches skip-interface pattern ens33"
        );
        assert_eq!(
            verdict_of(&detection, "docker0")[0].reason,
            "on the default skip list (^docker)"
        );
    }

    #[test]
    fn cidr_picks_the_first_address_inside_and_ignores_the_default_skip_list() {
        let host = busy_host();
        let detection = run("cidr=198.51.100.0/24", Family::V4, &host).unwrap();
        assert_eq!(detection.address.to_string(), "198.51.100.10/24");
        assert_eq!(
            verdict_of(&detection, "ens33")[0].reason,
            "outside every cidr= network"
        );
        let detection = run("cidr=192.0.2.0/24", Family::V4, &host).unwrap();
        assert_eq!(detection.interface.as_deref(), Some("docker0"));
        let detection = run("cidr=2001:db8:1::/48", Family::V6, &host).unwrap();
        assert_eq!(detection.address.to_string(), "2001:db8:1::10/64");
        let error = run("cidr=198.18.5.0/24", Family::V4, &host).unwrap_err();
        assert!(matches!(error, DetectError::NothingFound { .. }), "{error}");
    }

    #[test]
    fn can_reach_takes_the_interface_holding_the_kernels_source_address() {
        let host = busy_host();
        let environment = FakeEnvironment {
            source: Some("198.51.100.11".parse().unwrap()),
            ..Default::default()
        };
        let detection =
            run_with("can-reach=198.51.100.1", Family::V4, &host, &environment).unwrap();
        assert_eq!(detection.address.to_string(), "198.51.100.11/24");
        assert_eq!(detection.interface.as_deref(), Some("ens32"));
        assert_eq!(detection.method, "can-reach=198.51.100.1");
        assert_eq!(
            environment.asked.borrow().as_slice(),
            &["198.51.100.1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn can_reach_resolves_host_names_to_the_right_family() {
        let host = busy_host();
        let environment = FakeEnvironment {
            source: Some("2001:db8:1::10".parse().unwrap()),
            resolved: vec![
                "203.0.113.5".parse().unwrap(),
                "2001:db8:9::1".parse().unwrap(),
            ],
            ..Default::default()
        };
        let detection = run_with("can-reach=gw.example", Family::V6, &host, &environment).unwrap();
        assert_eq!(detection.address.to_string(), "2001:db8:1::10/64");
        assert_eq!(
            environment.asked.borrow().as_slice(),
            &["2001:db8:9::1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn can_reach_failures_explain_themselves() {
        let host = busy_host();
        let unroutable = FakeEnvironment::default();
        let error = run_with("can-reach=198.51.100.1", Family::V4, &host, &unroutable).unwrap_err();
        assert_eq!(
            error.to_string(),
            "can-reach=198.51.100.1: 198.51.100.1 is unreachable from this host: no route"
        );
        let error = run_with("can-reach=gw.example", Family::V4, &host, &unroutable).unwrap_err();
        assert_eq!(
            error.to_string(),
            "can-reach=gw.example: cannot resolve host name gw.example: gw.example: no such host"
        );
        let foreign = FakeEnvironment {
            source: Some("192.0.2.200".parse().unwrap()),
            ..Default::default()
        };
        let error = run_with("can-reach=198.51.100.1", Family::V4, &host, &foreign).unwrap_err();
        assert!(
            matches!(error, DetectError::SourceNotOnInterface { .. }),
            "{error}"
        );
        let v4_only = FakeEnvironment {
            resolved: vec!["203.0.113.5".parse().unwrap()],
            ..Default::default()
        };
        let error = run_with("can-reach=gw.example", Family::V6, &host, &v4_only).unwrap_err();
        assert!(
            error.to_string().ends_with("it has no IPv6 address"),
            "{error}"
        );
    }

    #[test]
    fn kubernetes_internal_ip_takes_the_interface_holding_it() {
        let host = busy_host();
        let environment = FakeEnvironment {
            internal: Some(vec![
                "2001:db8:1::10".parse().unwrap(),
                "198.51.100.10".parse().unwrap(),
            ]),
            ..Default::default()
        };
        let detection =
            run_with("kubernetes-internal-ip", Family::V4, &host, &environment).unwrap();
        assert_eq!(detection.address.to_string(), "198.51.100.10/24");
        let detection =
            run_with("kubernetes-internal-ip", Family::V6, &host, &environment).unwrap();
        assert_eq!(detection.address.to_string(), "2001:db8:1::10/64");
    }

    #[test]
    fn kubernetes_internal_ip_failures_explain_themselves() {
        let host = busy_host();
        let error = run_with(
            "kubernetes-internal-ip",
            Family::V4,
            &host,
            &FakeEnvironment::default(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "kubernetes-internal-ip cannot work here: not running in a Kubernetes cluster"
        );
        let elsewhere = FakeEnvironment {
            internal: Some(vec!["192.0.2.50".parse().unwrap()]),
            ..Default::default()
        };
        let error = run_with("kubernetes-internal-ip", Family::V4, &host, &elsewhere).unwrap_err();
        assert_eq!(
            error.to_string(),
            "kubernetes-internal-ip: 192.0.2.50 (InternalIP of Kubernetes Node \"n1\") is not on any interface of this host"
        );
        let error = run_with("kubernetes-internal-ip", Family::V6, &host, &elsewhere).unwrap_err();
        assert_eq!(
            error.to_string(),
            "kubernetes-internal-ip: InternalIP of Kubernetes Node \"n1\" has no IPv6 address"
        );
    }

    fn decide_setting(setting: &str, family: Family) -> Option<Detection> {
        decide(
            &AddressSetting::parse(setting, family).unwrap(),
            &Method::FirstFound,
            family,
            &busy_host(),
            &FakeEnvironment::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_given_address_takes_its_interfaces_prefix() {
        let detection = decide_setting("198.51.100.11", Family::V4).unwrap();
        assert_eq!(detection.address.to_string(), "198.51.100.11/24");
        assert_eq!(detection.interface.as_deref(), Some("ens32"));
        assert_eq!(detection.method, "IP=198.51.100.11");
        assert!(detection.warnings.is_empty());

        let detection = decide_setting("198.51.100.11/25", Family::V4).unwrap();
        assert_eq!(detection.address.to_string(), "198.51.100.11/25");
        assert_eq!(
            detection.warnings.len(),
            1,
            "prefix differs from the interface's"
        );
    }

    #[test]
    fn a_given_address_no_interface_holds_is_used_with_a_warning() {
        let detection = decide_setting("192.0.2.99", Family::V4).unwrap();
        assert_eq!(detection.address.to_string(), "192.0.2.99/32");
        assert_eq!(detection.interface, None);
        assert_eq!(
            detection.warnings,
            ["IP=192.0.2.99: no interface of this host holds 192.0.2.99; using it as given (/32)"]
        );
        let detection = decide_setting("2001:db8:7::1/64", Family::V6).unwrap();
        assert_eq!(detection.address.to_string(), "2001:db8:7::1/64");
    }

    #[test]
    fn disabled_families_detect_nothing() {
        assert_eq!(decide_setting("none", Family::V4), None);
        assert_eq!(decide_setting("", Family::V6), None);
        assert_eq!(
            decide_setting("autodetect", Family::V6)
                .unwrap()
                .address
                .to_string(),
            "2001:db8:1::10/64"
        );
    }

    #[test]
    fn an_empty_host_says_so() {
        let error = run("first-found", Family::V4, &Snapshot::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no IPv4 address found by first-found: this host has no interfaces"
        );
    }

    #[test]
    fn the_default_skip_list_matches_prefixes_only() {
        assert!(default_skip_matches("^docker", "docker0"));
        assert!(!default_skip_matches("^docker", "mydocker"));
        assert!(default_skip_matches("^lo$", "lo"));
        assert!(!default_skip_matches("^lo$", "lom1"));
        assert!(default_skip_matches("^vxlan\\.tortie", "vxlan.tortie"));
        assert!(!default_skip_matches("^vxlan\\.tortie", "vxlanXtortie"));
    }
}
