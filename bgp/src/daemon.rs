//! What `tortie-bgpd` reads and shows: its YAML configuration, and the peer and route
//! tables its control socket answers with (as JSON, and as text for a terminal).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::net::{BGP_PORT, MD5_MAX_KEY_LEN};
use crate::packet::{Community, Family, LargeCommunity, Origin, PathAttributes, SegmentKind};
use crate::policy::{Change, Conditions, Policy, PrefixMatch, Rule, Verdict};
use crate::speaker::{BestRoute, GracefulRestartSettings, PeerConfig, PeerStatus, SpeakerConfig};

/// The configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Address to accept sessions on (default: every IPv4 address).
    #[serde(default = "any_address")]
    pub listen: IpAddr,
    #[serde(default = "bgp_port")]
    pub port: u16,
    /// Where `tortie-bgpd show` finds the daemon.
    pub control_socket: PathBuf,
    /// Makes the daemon a route reflector with this cluster id.
    #[serde(default)]
    pub cluster_id: Option<Ipv4Addr>,
    /// Offer graceful restart (RFC 4724) and keep restarting peers' routes.
    #[serde(default)]
    pub graceful_restart: Option<GracefulRestartConfig>,
    #[serde(default)]
    pub peers: Vec<PeerSettings>,
    #[serde(default)]
    pub originate: Vec<Origination>,
}

/// `graceful_restart:` in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GracefulRestartConfig {
    /// Seconds peers keep our routes while we restart (at most 4095).
    #[serde(default = "default_restart_time")]
    pub restart_time: u16,
    /// Set when starting again with the kernel's routes kept.
    #[serde(default)]
    pub restarting: bool,
}

fn default_restart_time() -> u16 {
    120
}

/// One peer in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSettings {
    pub address: IpAddr,
    pub asn: u32,
    #[serde(default = "bgp_port")]
    pub port: u16,
    #[serde(default)]
    pub passive: bool,
    /// TCP MD5 password (RFC 2385).
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    #[serde(default = "default_keepalive_time")]
    pub keepalive_time: u16,
    /// TTL security (RFC 5082): how many hops away the peer may be.
    #[serde(default)]
    pub ttl_security: Option<u8>,
    #[serde(default)]
    pub route_reflector_client: bool,
    #[serde(default)]
    pub next_hop_self: bool,
    /// Source address of the session and the next hop announced to the peer; defaults to
    /// `listen` when that is a specific address.
    #[serde(default)]
    pub local_address: Option<IpAddr>,
    /// Address families to offer: `ipv4`, `ipv6` (default: the family of `address`).
    #[serde(default)]
    pub families: Option<Vec<FamilyName>>,
    /// Policy for routes from the peer (default: accept all).
    #[serde(default)]
    pub import: Option<PolicySettings>,
    /// Policy for routes to the peer (default: accept all).
    #[serde(default)]
    pub export: Option<PolicySettings>,
}

/// An address family as the configuration file names it (unicast is implied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FamilyName {
    Ipv4,
    Ipv6,
}

impl From<FamilyName> for Family {
    fn from(name: FamilyName) -> Family {
        match name {
            FamilyName::Ipv4 => Family::IPV4_UNICAST,
            FamilyName::Ipv6 => Family::IPV6_UNICAST,
        }
    }
}

/// A policy in the configuration file: rules in order, the first that matches decides.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    #[serde(default)]
    pub rules: Vec<RuleSettings>,
    /// What happens to routes no rule matches.
    #[serde(default = "accept")]
    pub default: Decision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Accept,
    Reject,
}

fn accept() -> Decision {
    Decision::Accept
}

/// One rule: conditions (all must hold), a decision, and for an accept what to change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// Prefix-list entries, any of which may match: `10.0.0.0/8`, `10.0.0.0/8 le 24`,
    /// `10.0.0.0/8 ge 26 le 26`.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Communities that must all be present, as `asn:value`.
    #[serde(default)]
    pub communities: Vec<String>,
    #[serde(default)]
    pub as_path_contains: Option<u32>,
    pub action: Decision,
    #[serde(default)]
    pub set_local_pref: Option<u32>,
    #[serde(default)]
    pub set_med: Option<u32>,
    #[serde(default)]
    pub add_communities: Vec<String>,
    #[serde(default)]
    pub remove_communities: Vec<String>,
    /// Prepend this speaker's AS this many times.
    #[serde(default)]
    pub prepend: Option<u8>,
}

/// A prefix the daemon announces, from the configuration file or from an `announce`
/// request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origination {
    pub prefix: IpNet,
    /// Standard communities as `asn:value`.
    #[serde(default)]
    pub communities: Vec<String>,
    /// Large communities (RFC 8092) as `global:local1:local2`.
    #[serde(default)]
    pub large_communities: Vec<String>,
    #[serde(default)]
    pub med: Option<u32>,
}

fn any_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

fn bgp_port() -> u16 {
    BGP_PORT
}

fn default_hold_time() -> u16 {
    90
}

fn default_keepalive_time() -> u16 {
    30
}

/// A configuration file that cannot be used; says which part and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration does not parse: {0}")]
    Syntax(String),
    #[error("router_id 0.0.0.0 is not allowed: set a non-zero router id")]
    RouterId,
    #[error("graceful_restart.restart_time {0} is over the 4095 seconds the capability can carry")]
    RestartTime(u16),
    #[error("peer {0} is listed twice")]
    DuplicatePeer(IpAddr),
    #[error("peer {peer}: hold_time {hold_time} is not allowed: use 0 or at least 3")]
    HoldTime { peer: IpAddr, hold_time: u16 },
    #[error(
        "peer {0}: set local_address (the source address and next hop for this peer), or listen on a specific address"
    )]
    LocalAddress(IpAddr),
    #[error("peer {0}: password longer than {MD5_MAX_KEY_LEN} octets")]
    Password(IpAddr),
    #[error("originate {prefix}: community {value:?} is not asn:value with two 16-bit numbers")]
    Community { prefix: IpNet, value: String },
    #[error(
        "originate {prefix}: large community {value:?} is not global:local1:local2 with three 32-bit numbers"
    )]
    LargeCommunity { prefix: IpNet, value: String },
    #[error("peer {peer}: policy community {value:?} is not asn:value with two 16-bit numbers")]
    PolicyCommunity { peer: IpAddr, value: String },
    #[error(
        "peer {peer}: prefix-list entry {value:?} is not PREFIX [ge N] [le N] with lengths that fit the prefix"
    )]
    PrefixEntry { peer: IpAddr, value: String },
}

impl DaemonConfig {
    /// Parses and checks a configuration file's text.
    pub fn parse(text: &str) -> Result<DaemonConfig, ConfigError> {
        let config: DaemonConfig =
            serde_saphyr::from_str(text).map_err(|error| ConfigError::Syntax(error.to_string()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.router_id.is_unspecified() {
            return Err(ConfigError::RouterId);
        }
        if let Some(gr) = self.graceful_restart.filter(|gr| gr.restart_time > 4095) {
            return Err(ConfigError::RestartTime(gr.restart_time));
        }
        let mut seen = std::collections::HashSet::new();
        for peer in &self.peers {
            if !seen.insert(peer.address) {
                return Err(ConfigError::DuplicatePeer(peer.address));
            }
            if matches!(peer.hold_time, 1 | 2) {
                return Err(ConfigError::HoldTime {
                    peer: peer.address,
                    hold_time: peer.hold_time,
                });
            }
            if peer
                .password
                .as_ref()
                .is_some_and(|p| p.len() > MD5_MAX_KEY_LEN)
            {
                return Err(ConfigError::Password(peer.address));
            }
            self.local_address(peer)?;
            for policy in [&peer.import, &peer.export].into_iter().flatten() {
                policy.to_policy(peer.address, self.asn)?;
            }
        }
        for origination in &self.originate {
            origination.attributes()?;
        }
        Ok(())
    }

    pub fn speaker(&self) -> SpeakerConfig {
        SpeakerConfig {
            asn: self.asn,
            router_id: self.router_id,
            cluster_id: self.cluster_id,
            graceful_restart: self.graceful_restart.map(|gr| GracefulRestartSettings {
                restart_time: gr.restart_time,
                restarting: gr.restarting,
            }),
        }
    }

    /// The address this daemon uses toward `peer`.
    pub fn local_address(&self, peer: &PeerSettings) -> Result<IpAddr, ConfigError> {
        match peer.local_address {
            Some(address) => Ok(address),
            None if !self.listen.is_unspecified() => Ok(self.listen),
            None => Err(ConfigError::LocalAddress(peer.address)),
        }
    }

    /// The speaker's view of `peer`.
    pub fn peer(&self, peer: &PeerSettings) -> Result<PeerConfig, ConfigError> {
        let label = if peer.asn == self.asn {
            "internal"
        } else {
            "external"
        };
        Ok(PeerConfig {
            passive: peer.passive,
            hold_time: peer.hold_time,
            keepalive_time: peer.keepalive_time,
            route_reflector_client: peer.route_reflector_client,
            next_hop_self: peer.next_hop_self,
            label: label.to_string(),
            families: match &peer.families {
                Some(names) => names.iter().copied().map(Family::from).collect(),
                None => PeerConfig::new(peer.address, peer.asn, peer.address).families,
            },
            import_policy: peer
                .import
                .as_ref()
                .map(|p| p.to_policy(peer.address, self.asn))
                .transpose()?
                .unwrap_or_default(),
            export_policy: peer
                .export
                .as_ref()
                .map(|p| p.to_policy(peer.address, self.asn))
                .transpose()?
                .unwrap_or_default(),
            ..PeerConfig::new(peer.address, peer.asn, self.local_address(peer)?)
        })
    }
}

impl Origination {
    /// The attributes the daemon originates the prefix with.
    pub fn attributes(&self) -> Result<PathAttributes, ConfigError> {
        let communities = self
            .communities
            .iter()
            .map(|value| {
                parse_community(value).ok_or_else(|| ConfigError::Community {
                    prefix: self.prefix,
                    value: value.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let large_communities = self
            .large_communities
            .iter()
            .map(|value| {
                parse_large_community(value).ok_or_else(|| ConfigError::LargeCommunity {
                    prefix: self.prefix,
                    value: value.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PathAttributes {
            communities,
            large_communities,
            multi_exit_disc: self.med,
            ..PathAttributes::default()
        })
    }
}

impl PolicySettings {
    /// The policy value; `asn` is this speaker's, for `prepend`.
    pub fn to_policy(&self, peer: IpAddr, asn: u32) -> Result<Policy, ConfigError> {
        let community = |value: &String| {
            parse_community(value).ok_or_else(|| ConfigError::PolicyCommunity {
                peer,
                value: value.clone(),
            })
        };
        let rules = self
            .rules
            .iter()
            .map(|rule| {
                let conditions = Conditions {
                    prefixes: rule
                        .prefixes
                        .iter()
                        .map(|value| {
                            parse_prefix_entry(value).ok_or_else(|| ConfigError::PrefixEntry {
                                peer,
                                value: value.clone(),
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    communities: rule
                        .communities
                        .iter()
                        .map(community)
                        .collect::<Result<_, _>>()?,
                    as_path_contains: rule.as_path_contains,
                };
                let verdict = match rule.action {
                    Decision::Reject => Verdict::Reject,
                    Decision::Accept => {
                        let mut changes = Vec::new();
                        changes.extend(rule.set_local_pref.map(Change::LocalPref));
                        changes.extend(rule.set_med.map(Change::Med));
                        for value in &rule.add_communities {
                            changes.push(Change::AddCommunity(community(value)?));
                        }
                        for value in &rule.remove_communities {
                            changes.push(Change::RemoveCommunity(community(value)?));
                        }
                        changes.extend(rule.prepend.map(|times| Change::Prepend { asn, times }));
                        Verdict::Accept(changes)
                    }
                };
                Ok(Rule {
                    conditions,
                    verdict,
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Policy {
            rules,
            default_accept: self.default == Decision::Accept,
        })
    }
}

/// `PREFIX [ge N] [le N]`, with lengths no shorter than the prefix's and no longer than
/// the family allows.
fn parse_prefix_entry(value: &str) -> Option<PrefixMatch> {
    let mut words = value.split_whitespace();
    let prefix: IpNet = words.next()?.parse().ok()?;
    let (mut ge, mut le) = (None, None);
    while let Some(keyword) = words.next() {
        let length: u8 = words.next()?.parse().ok()?;
        if length < prefix.prefix_len() || length > prefix.max_prefix_len() {
            return None;
        }
        match keyword {
            "ge" if ge.is_none() => ge = Some(length),
            "le" if le.is_none() => le = Some(length),
            _ => return None,
        }
    }
    if let (Some(ge), Some(le)) = (ge, le)
        && ge > le
    {
        return None;
    }
    Some(PrefixMatch { prefix, ge, le })
}

fn parse_community(value: &str) -> Option<Community> {
    let (high, low) = value.split_once(':')?;
    let (high, low): (u16, u16) = (high.trim().parse().ok()?, low.trim().parse().ok()?);
    Some(Community((u32::from(high) << 16) | u32::from(low)))
}

fn parse_large_community(value: &str) -> Option<LargeCommunity> {
    let mut parts = value.split(':').map(|part| part.trim().parse::<u32>().ok());
    let community = LargeCommunity {
        global_admin: parts.next()??,
        local_data_1: parts.next()??,
        local_data_2: parts.next()??,
    };
    parts.next().is_none().then_some(community)
}

/// One row of `show peers` (and of `tortiectl node status`): JSON keys in camelCase, as
/// the node agent's status around it and Calico's resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRow {
    pub address: IpAddr,
    pub asn: u32,
    pub peer_type: String,
    pub state: String,
    /// Seconds since the Unix epoch at the last state change.
    pub since: u64,
    /// Why the session last went down, if it did.
    pub info: String,
    pub received: usize,
    pub accepted: usize,
    pub advertised: usize,
}

impl From<&PeerStatus> for PeerRow {
    fn from(status: &PeerStatus) -> PeerRow {
        PeerRow {
            address: status.address,
            asn: status.asn,
            peer_type: status.label.clone(),
            state: status.state.to_string(),
            since: status
                .since
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            info: status.last_error.clone().unwrap_or_default(),
            received: status.received,
            accepted: status.accepted,
            advertised: status.advertised,
        }
    }
}

/// One row of `show rib`: a prefix's best route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRow {
    pub prefix: IpNet,
    pub next_hop: Option<IpAddr>,
    pub as_path: String,
    pub origin: String,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    pub communities: Vec<String>,
    /// Large communities as `global:local1:local2`.
    #[serde(default)]
    pub large_communities: Vec<String>,
    /// Route reflection's ORIGINATOR_ID and CLUSTER_LIST (RFC 4456 - Section 8).
    #[serde(default)]
    pub originator_id: Option<Ipv4Addr>,
    #[serde(default)]
    pub cluster_list: Vec<Ipv4Addr>,
    /// The peer it was learned from, or `local`.
    pub from: String,
    pub paths: usize,
    /// Kept from a gracefully restarting peer, not yet refreshed.
    #[serde(default)]
    pub stale: bool,
}

impl From<&BestRoute> for RouteRow {
    fn from(route: &BestRoute) -> RouteRow {
        let attributes = &route.attributes;
        let as_path = attributes
            .as_path
            .iter()
            .flat_map(|path| &path.segments)
            .map(|segment| {
                let asns: Vec<String> = segment.asns.iter().map(u32::to_string).collect();
                match segment.kind {
                    SegmentKind::Sequence => asns.join(" "),
                    SegmentKind::Set => format!("{{{}}}", asns.join(" ")),
                    SegmentKind::ConfedSequence => format!("({})", asns.join(" ")),
                    SegmentKind::ConfedSet => format!("[{}]", asns.join(" ")),
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        RouteRow {
            prefix: route.prefix,
            next_hop: attributes.route_next_hop(),
            as_path,
            origin: match attributes.origin {
                Some(Origin::Igp) => "igp",
                Some(Origin::Egp) => "egp",
                Some(Origin::Incomplete) | None => "incomplete",
            }
            .to_string(),
            local_pref: attributes.local_pref,
            med: attributes.multi_exit_disc,
            communities: attributes
                .communities
                .iter()
                .map(|c| format!("{}:{}", c.0 >> 16, c.0 & 0xFFFF))
                .collect(),
            large_communities: attributes
                .large_communities
                .iter()
                .map(|c| format!("{}:{}:{}", c.global_admin, c.local_data_1, c.local_data_2))
                .collect(),
            originator_id: attributes.originator_id,
            cluster_list: attributes.cluster_list.clone(),
            from: route
                .from
                .map_or_else(|| "local".to_string(), |address| address.to_string()),
            paths: route.paths,
            stale: route.stale,
        }
    }
}

/// Lays out rows under a header, columns as wide as their widest cell.
fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `show peers` as text, with calicoctl's columns and counters.
pub fn render_peers(rows: &[PeerRow], now: u64) -> String {
    if rows.is_empty() {
        return "No peers found.\n".to_string();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.address.to_string(),
                row.peer_type.clone(),
                row.state.clone(),
                format!("{}s", now.saturating_sub(row.since)),
                format!("{}/{}/{}", row.received, row.accepted, row.advertised),
                row.info.clone(),
            ]
        })
        .collect();
    render(
        &[
            "PEER ADDRESS",
            "PEER TYPE",
            "STATE",
            "SINCE",
            "RCVD/ACPT/ADV",
            "INFO",
        ],
        &cells,
    )
}

/// `show rib` as text.
pub fn render_routes(rows: &[RouteRow]) -> String {
    if rows.is_empty() {
        return "No routes.\n".to_string();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.prefix.to_string(),
                row.next_hop.map_or_else(String::new, |n| n.to_string()),
                row.as_path.clone(),
                row.origin.clone(),
                if row.stale {
                    format!("{} (stale)", row.from)
                } else {
                    row.from.clone()
                },
                row.communities.join(" "),
            ]
        })
        .collect();
    render(
        &[
            "PREFIX",
            "NEXT HOP",
            "AS PATH",
            "ORIGIN",
            "FROM",
            "COMMUNITIES",
        ],
        &cells,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
asn: 64512
router_id: 192.0.2.1
listen: 192.0.2.1
control_socket: /run/tortie-bgpd.sock
graceful_restart:
  restart_time: 90
peers:
  - address: 192.0.2.2
    asn: 64513
    password: s3cret
    ttl_security: 1
    families: [ipv4, ipv6]
  - address: 192.0.2.3
    asn: 64512
    passive: true
    hold_time: 30
    route_reflector_client: true
originate:
  - prefix: 198.51.100.0/24
    communities: ["64512:100"]
  - prefix: 2001:db8:100::/48
    large_communities: ["64512:1:2"]
"#;

    #[test]
    fn an_example_configuration_parses_with_defaults() {
        let config = DaemonConfig::parse(EXAMPLE).expect("valid");
        assert_eq!((config.asn, config.port), (64512, 179));
        assert_eq!(
            config.speaker().graceful_restart,
            Some(GracefulRestartSettings {
                restart_time: 90,
                restarting: false
            })
        );
        assert_eq!(config.peers[0].hold_time, 90);
        assert_eq!(config.peers[0].ttl_security, Some(1));
        let first = config.peer(&config.peers[0]).expect("valid peer");
        assert_eq!(
            first.families,
            vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]
        );
        let peer = config.peer(&config.peers[1]).expect("valid peer");
        assert_eq!(
            (peer.label.as_str(), peer.hold_time, peer.passive),
            ("internal", 30, true)
        );
        assert_eq!(peer.local_address, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let attributes = config.originate[0].attributes().expect("valid");
        assert_eq!(attributes.communities, vec![Community((64512 << 16) | 100)]);
        let attributes = config.originate[1].attributes().expect("valid");
        assert_eq!(
            attributes.large_communities,
            vec![LargeCommunity {
                global_admin: 64512,
                local_data_1: 1,
                local_data_2: 2
            }]
        );
    }

    #[test]
    fn policies_are_read_into_values() {
        let text = EXAMPLE.replace(
            "    route_reflector_client: true\n",
            "    route_reflector_client: true\n    import:\n      default: reject\n      rules:\n        - prefixes: [\"10.0.0.0/8 ge 26 le 26\"]\n          communities: [\"64512:1\"]\n          action: accept\n          set_local_pref: 200\n          prepend: 2\n",
        );
        let config = DaemonConfig::parse(&text).expect("valid");
        let peer = config.peer(&config.peers[1]).expect("valid peer");
        let policy = peer.import_policy;
        assert!(!policy.default_accept);
        assert_eq!(
            policy.rules[0].conditions.prefixes,
            vec![PrefixMatch {
                prefix: "10.0.0.0/8".parse().expect("literal"),
                ge: Some(26),
                le: Some(26)
            }]
        );
        assert_eq!(
            policy.rules[0].verdict,
            Verdict::Accept(vec![
                Change::LocalPref(200),
                Change::Prepend {
                    asn: 64512,
                    times: 2
                }
            ])
        );
        let bad = text.replace("ge 26 le 26", "ge 4");
        assert!(matches!(
            DaemonConfig::parse(&bad),
            Err(ConfigError::PrefixEntry { .. })
        ));
        let bad = text.replace("\"64512:1\"", "\"x\"");
        assert!(matches!(
            DaemonConfig::parse(&bad),
            Err(ConfigError::PolicyCommunity { .. })
        ));
    }

    #[test]
    fn bad_configurations_say_what_is_wrong() {
        let unknown = EXAMPLE.replace("ttl_security: 1", "ttl_securty: 1");
        assert!(
            matches!(DaemonConfig::parse(&unknown), Err(ConfigError::Syntax(m)) if m.contains("ttl_securty"))
        );
        let no_local = EXAMPLE.replace("listen: 192.0.2.1\n", "");
        assert_eq!(
            DaemonConfig::parse(&no_local),
            Err(ConfigError::LocalAddress(IpAddr::V4(Ipv4Addr::new(
                192, 0, 2, 2
            ))))
        );
        let community = EXAMPLE.replace("64512:100", "64512-100");
        assert!(matches!(
            DaemonConfig::parse(&community),
            Err(ConfigError::Community { .. })
        ));
        for bad in ["64512:1", "64512:1:2:3", "64512:x:2"] {
            let large = EXAMPLE.replace("64512:1:2", bad);
            assert!(
                matches!(
                    DaemonConfig::parse(&large),
                    Err(ConfigError::LargeCommunity { .. })
                ),
                "{bad}"
            );
        }
        let hold = EXAMPLE.replace("hold_time: 30", "hold_time: 2");
        assert!(matches!(
            DaemonConfig::parse(&hold),
            Err(ConfigError::HoldTime { hold_time: 2, .. })
        ));
        let twice = EXAMPLE.replace("192.0.2.3", "192.0.2.2");
        assert!(matches!(
            DaemonConfig::parse(&twice),
            Err(ConfigError::DuplicatePeer(_))
        ));
    }

    #[test]
    fn route_rows_mark_stale_routes_and_read_older_json() {
        // JSON from before large communities, route reflection and staleness were shown.
        let older = r#"[{"prefix":"198.18.0.0/24","next_hop":"192.0.2.2","as_path":"64513",
            "origin":"igp","local_pref":null,"med":null,"communities":[],
            "from":"192.0.2.2","paths":1}]"#;
        let mut rows: Vec<RouteRow> = serde_json::from_str(older).expect("parses");
        assert!(!rows[0].stale && rows[0].large_communities.is_empty());
        assert_eq!(rows[0].originator_id, None);
        assert!(!render_routes(&rows).contains("(stale)"));
        rows[0].stale = true;
        assert!(
            render_routes(&rows).contains("192.0.2.2 (stale)"),
            "{}",
            render_routes(&rows)
        );
    }

    #[test]
    fn the_peer_table_reads_like_calicoctl() {
        let rows = vec![PeerRow {
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
            asn: 64513,
            peer_type: "external".to_string(),
            state: "Established".to_string(),
            since: 100,
            info: String::new(),
            received: 3,
            accepted: 2,
            advertised: 1,
        }];
        let text = render_peers(&rows, 160);
        assert_eq!(
            text,
            "PEER ADDRESS  PEER TYPE  STATE        SINCE  RCVD/ACPT/ADV  INFO\n\
             192.0.2.2     external   Established  60s    3/2/1\n"
        );
        assert_eq!(render_peers(&[], 0), "No peers found.\n");
        let json = serde_json::to_string(&rows).expect("serializes");
        assert_eq!(
            serde_json::from_str::<Vec<PeerRow>>(&json).expect("parses"),
            rows
        );
    }
}
