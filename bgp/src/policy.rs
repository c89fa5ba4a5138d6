//! Import and export policy as plain values: an ordered list of rules, the first that
//! matches decides, with a default for routes no rule matches. A rule matches on the
//! prefix (prefix lists with `ge`/`le`, as FRR and Cisco write them), on communities and
//! on AS path members, and can accept (after setting LOCAL_PREF, MED, communities or
//! prepending) or reject.
//!
//! Pure: the speaker applies a peer's import policy after the protocol's import rules, and
//! its export policy after the export rules ([`crate::propagation`]).

use ipnet::IpNet;

use crate::packet::{Community, PathAttributes};

/// One prefix-list entry: `prefix` with the lengths `ge..=le` allowed inside it. Without
/// `ge` or `le` only the prefix itself matches; with `ge` alone, lengths from `ge` to the
/// longest; with `le` alone, from the prefix's own length to `le`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixMatch {
    pub prefix: IpNet,
    pub ge: Option<u8>,
    pub le: Option<u8>,
}

impl PrefixMatch {
    pub fn exact(prefix: IpNet) -> PrefixMatch {
        PrefixMatch {
            prefix,
            ge: None,
            le: None,
        }
    }

    pub fn matches(&self, candidate: &IpNet) -> bool {
        if !self.prefix.contains(candidate) {
            return false;
        }
        let own = self.prefix.prefix_len();
        let (low, high) = match (self.ge, self.le) {
            (None, None) => (own, own),
            (Some(ge), None) => (ge, self.prefix.max_prefix_len()),
            (None, Some(le)) => (own, le),
            (Some(ge), Some(le)) => (ge, le),
        };
        (low..=high).contains(&candidate.prefix_len())
    }
}

/// What a rule looks at; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Any of these entries (empty: any prefix).
    pub prefixes: Vec<PrefixMatch>,
    /// All of these communities present.
    pub communities: Vec<Community>,
    /// This AS anywhere in the AS path.
    pub as_path_contains: Option<u32>,
}

impl Conditions {
    fn hold(&self, prefix: &IpNet, attributes: &PathAttributes) -> bool {
        (self.prefixes.is_empty() || self.prefixes.iter().any(|entry| entry.matches(prefix)))
            && self
                .communities
                .iter()
                .all(|c| attributes.communities.contains(c))
            && self.as_path_contains.is_none_or(|asn| {
                attributes
                    .as_path
                    .iter()
                    .flat_map(|p| &p.segments)
                    .any(|s| s.asns.contains(&asn))
            })
    }
}

/// A change an accepting rule makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    LocalPref(u32),
    Med(u32),
    AddCommunity(Community),
    RemoveCommunity(Community),
    /// Put `asn` in front of the AS path `times` times.
    Prepend {
        asn: u32,
        times: u8,
    },
}

/// The outcome of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept(Vec<Change>),
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub conditions: Conditions,
    pub verdict: Verdict,
}

/// Rules in order, and what happens to a route none of them matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub default_accept: bool,
}

impl Default for Policy {
    /// Accept everything unchanged.
    fn default() -> Self {
        Policy {
            rules: Vec::new(),
            default_accept: true,
        }
    }
}

/// `attributes` with a rule's `changes` made.
fn changed(mut out: PathAttributes, changes: &[Change]) -> PathAttributes {
    for change in changes {
        match *change {
            Change::LocalPref(value) => out.local_pref = Some(value),
            Change::Med(value) => out.multi_exit_disc = Some(value),
            Change::AddCommunity(community) => {
                if !out.communities.contains(&community) {
                    out.communities.push(community);
                }
            }
            Change::RemoveCommunity(community) => out.communities.retain(|c| *c != community),
            Change::Prepend { asn, times } => {
                for _ in 0..times {
                    crate::propagation::prepend(&mut out, asn);
                }
            }
        }
    }
    out
}

impl Policy {
    /// The attributes `prefix` goes on with, or `None` when the policy rejects it.
    pub fn apply(&self, prefix: &IpNet, attributes: &PathAttributes) -> Option<PathAttributes> {
        match self.verdict(prefix, attributes) {
            None => self.default_accept.then(|| attributes.clone()),
            Some(Verdict::Reject) => None,
            Some(Verdict::Accept(changes)) => Some(changed(attributes.clone(), changes)),
        }
    }

    /// [`Policy::apply`] to attributes the caller gives up: accepted unchanged, they are
    /// handed back without a copy (what an empty policy does to every UPDATE).
    pub fn apply_owned(
        &self,
        prefix: &IpNet,
        attributes: PathAttributes,
    ) -> Option<PathAttributes> {
        match self.verdict(prefix, &attributes) {
            None => self.default_accept.then_some(attributes),
            Some(Verdict::Reject) => None,
            Some(Verdict::Accept(changes)) => Some(changed(attributes, changes)),
        }
    }

    /// The verdict of the first rule whose conditions hold; `None` when none does.
    fn verdict(&self, prefix: &IpNet, attributes: &PathAttributes) -> Option<&Verdict> {
        self.rules
            .iter()
            .find(|rule| rule.conditions.hold(prefix, attributes))
            .map(|rule| &rule.verdict)
    }

    /// Whether the outcome can differ between prefixes that share attributes; when not,
    /// the speaker applies the policy once per UPDATE instead of once per prefix.
    pub fn depends_on_prefix(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| !rule.conditions.prefixes.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::packet::{AsPath, AsSegment, Origin, SegmentKind};

    fn net(text: &str) -> IpNet {
        text.parse().expect("literal prefix")
    }

    fn route() -> PathAttributes {
        PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath {
                segments: vec![AsSegment {
                    kind: SegmentKind::Sequence,
                    asns: vec![64513, 64600],
                }],
            }),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 2)),
            communities: vec![Community(0xFC00_0001)],
            ..PathAttributes::default()
        }
    }

    #[test]
    fn prefix_lists_follow_ge_and_le() {
        let exact = PrefixMatch::exact(net("10.0.0.0/8"));
        assert!(exact.matches(&net("10.0.0.0/8")));
        assert!(!exact.matches(&net("10.1.0.0/16")));
        let pod_blocks = PrefixMatch {
            prefix: net("10.0.0.0/8"),
            ge: Some(26),
            le: Some(26),
        };
        assert!(pod_blocks.matches(&net("10.1.2.64/26")));
        assert!(!pod_blocks.matches(&net("10.1.2.0/24")));
        assert!(!pod_blocks.matches(&net("192.0.2.0/26")));
        let anything_longer = PrefixMatch {
            prefix: net("198.51.100.0/24"),
            ge: Some(25),
            le: None,
        };
        assert!(anything_longer.matches(&net("198.51.100.7/32")));
        assert!(!anything_longer.matches(&net("198.51.100.0/24")));
        let up_to = PrefixMatch {
            prefix: net("198.51.100.0/24"),
            ge: None,
            le: Some(25),
        };
        assert!(up_to.matches(&net("198.51.100.0/24")) && up_to.matches(&net("198.51.100.128/25")));
        assert!(!up_to.matches(&net("198.51.100.0/26")));
        let v6 = PrefixMatch {
            prefix: net("2001:db8::/32"),
            ge: Some(122),
            le: Some(122),
        };
        assert!(v6.matches(&net("2001:db8:0:1::40/122")));
    }

    #[test]
    fn the_first_matching_rule_decides_and_the_default_covers_the_rest() {
        let policy = Policy {
            rules: vec![
                Rule {
                    conditions: Conditions {
                        prefixes: vec![PrefixMatch::exact(net("203.0.113.0/24"))],
                        ..Conditions::default()
                    },
                    verdict: Verdict::Reject,
                },
                Rule {
                    conditions: Conditions {
                        communities: vec![Community(0xFC00_0001)],
                        ..Conditions::default()
                    },
                    verdict: Verdict::Accept(vec![
                        Change::LocalPref(200),
                        Change::AddCommunity(Community(7)),
                    ]),
                },
            ],
            default_accept: false,
        };
        assert_eq!(policy.apply(&net("203.0.113.0/24"), &route()), None);
        let accepted = policy
            .apply(&net("198.51.100.0/24"), &route())
            .expect("accepted");
        assert_eq!(accepted.local_pref, Some(200));
        assert_eq!(
            accepted.communities,
            vec![Community(0xFC00_0001), Community(7)]
        );
        let plain = PathAttributes {
            communities: Vec::new(),
            ..route()
        };
        assert_eq!(policy.apply(&net("198.51.100.0/24"), &plain), None);
        assert!(policy.depends_on_prefix());
        assert_eq!(
            Policy::default().apply(&net("198.51.100.0/24"), &plain),
            Some(plain)
        );
    }

    #[test]
    fn accepting_rules_set_med_remove_communities_and_prepend() {
        let policy = Policy {
            rules: vec![Rule {
                conditions: Conditions {
                    as_path_contains: Some(64600),
                    ..Conditions::default()
                },
                verdict: Verdict::Accept(vec![
                    Change::Med(50),
                    Change::RemoveCommunity(Community(0xFC00_0001)),
                    Change::Prepend {
                        asn: 64512,
                        times: 2,
                    },
                ]),
            }],
            default_accept: true,
        };
        let out = policy
            .apply(&net("198.51.100.0/24"), &route())
            .expect("accepted");
        assert_eq!(out.multi_exit_disc, Some(50));
        assert!(out.communities.is_empty());
        assert_eq!(
            out.as_path.map(|p| p.segments[0].asns.clone()),
            Some(vec![64512, 64512, 64513, 64600])
        );
        assert!(!policy.depends_on_prefix());
    }
}
