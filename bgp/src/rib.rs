//! Routes: interned path attributes, the table of every accepted path per prefix, and the
//! RFC 4271 - Section 9.1.2 decision process that picks the best.
//!
//! One table per address family holds, per prefix, every path that passed import policy,
//! from every peer (the post-policy Adj-RIBs-In of RFC 4271 - Section 3.2) with the best
//! first (the Loc-RIB). Keeping them together means one hash lookup per received prefix.
//! A path is a peer index and a pointer to interned attributes: the million routes a full
//! table brings share a few thousand attribute sets.
//!
//! Pure data and decisions: no I/O, no clock; the speaker task owns it.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::packet::{Origin, PathAttributes, SegmentKind};

/// One copy of each distinct attribute set (holo and BIRD do the same): routes hold an
/// `Arc` to it, so a million routes that share attributes share one copy.
#[derive(Debug, Default)]
pub struct AttributeStore {
    sets: HashSet<Arc<PathAttributes>>,
}

impl AttributeStore {
    /// The shared copy of `attributes`, made if it is new.
    pub fn intern(&mut self, attributes: PathAttributes) -> Arc<PathAttributes> {
        if let Some(shared) = self.sets.get(&attributes) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(attributes);
        self.sets.insert(Arc::clone(&shared));
        shared
    }

    /// Forgets the sets no route uses any more; returns how many.
    pub fn collect_garbage(&mut self) -> usize {
        let before = self.sets.len();
        self.sets.retain(|set| Arc::strong_count(set) > 1);
        before - self.sets.len()
    }

    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }
}

/// A peer's index in the speaker's peer table. [`PeerId::LOCAL`] is this speaker itself,
/// for routes it originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

impl PeerId {
    pub const LOCAL: PeerId = PeerId(0);
}

/// What the decision process needs to know about the peer a path came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub address: IpAddr,
    pub router_id: Ipv4Addr,
    /// Learned over iBGP (RFC 4271 - Section 9.1.2.2 (d) prefers eBGP).
    pub internal: bool,
}

/// The peers paths can come from, by [`PeerId`].
pub trait Peers {
    fn peer(&self, id: PeerId) -> Option<&PeerInfo>;
}

impl Peers for HashMap<PeerId, PeerInfo> {
    fn peer(&self, id: PeerId) -> Option<&PeerInfo> {
        self.get(&id)
    }
}

/// One path to a prefix: who sent it, with which attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub peer: PeerId,
    pub attributes: Arc<PathAttributes>,
}

impl Path {
    fn same_as(&self, other: &Path) -> bool {
        self.peer == other.peer && Arc::ptr_eq(&self.attributes, &other.attributes)
    }
}

/// The paths of one prefix, best first. Nearly every prefix has exactly one path, which
/// is kept inline: no allocation per prefix.
#[derive(Debug, Clone)]
enum Paths {
    One(Path),
    Many(Vec<Path>),
}

impl Paths {
    fn as_slice(&self) -> &[Path] {
        match self {
            Paths::One(path) => std::slice::from_ref(path),
            Paths::Many(paths) => paths,
        }
    }
}

/// What happened to a prefix's best path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BestChange {
    /// A new best path (the prefix is new, or its best path changed).
    Best(Path),
    /// No path is left.
    Unreachable,
}

/// Every accepted path per prefix, best first, for one address family.
#[derive(Debug)]
pub struct Table<P> {
    destinations: HashMap<P, Paths>,
}

impl<P> Default for Table<P> {
    fn default() -> Self {
        Table {
            destinations: HashMap::new(),
        }
    }
}

impl<P: Copy + Eq + Hash> Table<P> {
    /// Number of prefixes with at least one path.
    pub fn len(&self) -> usize {
        self.destinations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }

    /// The best path to `prefix`.
    pub fn best<Q>(&self, prefix: &Q) -> Option<&Path>
    where
        P: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.destinations
            .get(prefix)
            .and_then(|paths| paths.as_slice().first())
    }

    /// Every path to `prefix`, best first.
    pub fn paths(&self, prefix: &P) -> &[Path] {
        self.destinations.get(prefix).map_or(&[], Paths::as_slice)
    }

    /// Adds or replaces `path.peer`'s path to `prefix`; returns the change of best path.
    pub fn announce(&mut self, prefix: P, path: Path, peers: &impl Peers) -> Option<BestChange> {
        match self.destinations.get_mut(&prefix) {
            None => {
                self.destinations.insert(prefix, Paths::One(path.clone()));
                Some(BestChange::Best(path))
            }
            Some(Paths::One(existing)) if existing.peer == path.peer => {
                if existing.same_as(&path) {
                    return None;
                }
                *existing = path.clone();
                Some(BestChange::Best(path))
            }
            Some(paths) => {
                let old_best = paths.as_slice()[0].clone();
                let mut list = match std::mem::replace(paths, Paths::Many(Vec::new())) {
                    Paths::One(existing) => vec![existing],
                    Paths::Many(list) => list,
                };
                match list.iter_mut().find(|p| p.peer == path.peer) {
                    Some(slot) => *slot = path,
                    None => list.push(path),
                }
                let best = select_best(&list, peers);
                list.swap(0, best);
                let new_best = list[0].clone();
                *paths = Paths::Many(list);
                (!new_best.same_as(&old_best)).then_some(BestChange::Best(new_best))
            }
        }
    }

    /// Removes `peer`'s path to `prefix`; returns the change of best path.
    pub fn withdraw(&mut self, prefix: P, peer: PeerId, peers: &impl Peers) -> Option<BestChange> {
        let paths = self.destinations.get_mut(&prefix)?;
        match paths {
            Paths::One(existing) => {
                if existing.peer != peer {
                    return None;
                }
                self.destinations.remove(&prefix);
                Some(BestChange::Unreachable)
            }
            Paths::Many(list) => {
                let position = list.iter().position(|p| p.peer == peer)?;
                list.remove(position);
                if position != 0 {
                    // The best path stays first: nothing changes for the Loc-RIB.
                    if list.len() == 1 {
                        let only = list.remove(0);
                        *paths = Paths::One(only);
                    }
                    return None;
                }
                let best = select_best(list, peers);
                list.swap(0, best);
                let new_best = list[0].clone();
                if list.len() == 1 {
                    let only = list.remove(0);
                    *paths = Paths::One(only);
                }
                Some(BestChange::Best(new_best))
            }
        }
    }

    /// Removes every path from `peer` (its session went down); returns the prefixes
    /// whose best path changed.
    pub fn withdraw_peer(&mut self, peer: PeerId, peers: &impl Peers) -> Vec<(P, BestChange)> {
        let prefixes: Vec<P> = self
            .destinations
            .iter()
            .filter(|(_, paths)| paths.as_slice().iter().any(|p| p.peer == peer))
            .map(|(prefix, _)| *prefix)
            .collect();
        prefixes
            .into_iter()
            .filter_map(|prefix| {
                self.withdraw(prefix, peer, peers)
                    .map(|change| (prefix, change))
            })
            .collect()
    }
}

/// RFC 4271 - Section 9.1.2.2: LOCAL_PREF a route learned over eBGP gets when import
/// policy sets none (the value BIRD, FRR and GoBGP use).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// The index of the best of `paths`: the highest degree of preference (RFC 4271 -
/// Section 9.1.1), then the tie-breaking of Section 9.1.2.2, with RFC 4456 - Section 9 for
/// route reflection. Each step keeps only the candidates that are best by one
/// criterion, as the RFC describes it: the MED step compares only paths from the same
/// neighbouring AS, so this is not a sort order.
pub fn select_best(paths: &[Path], peers: &impl Peers) -> usize {
    let mut candidates: Vec<usize> = (0..paths.len()).collect();
    let attributes = |i: usize| &*paths[i].attributes;
    let peer = |i: usize| peers.peer(paths[i].peer);

    // This speaker's own routes first (a node prefers the blocks it originates).
    keep_best(&mut candidates, |i| {
        u8::from(paths[i].peer != PeerId::LOCAL)
    });
    // Section 9.1.1: the highest degree of preference, which is LOCAL_PREF.
    keep_best(&mut candidates, |i| {
        std::cmp::Reverse(attributes(i).local_pref.unwrap_or(DEFAULT_LOCAL_PREF))
    });
    // (a) the shortest AS_PATH.
    keep_best(&mut candidates, |i| {
        attributes(i).as_path.as_ref().map_or(0, |p| p.length())
    });
    // (b) the lowest ORIGIN.
    keep_best(&mut candidates, |i| {
        attributes(i).origin.unwrap_or(Origin::Incomplete)
    });
    // (c) the lowest MULTI_EXIT_DISC among paths from the same neighbouring AS; an absent
    // MED is the lowest value.
    let neighbour_as = |i: usize| first_as(attributes(i));
    let med = |i: usize| attributes(i).multi_exit_disc.unwrap_or(0);
    let snapshot = candidates.clone();
    candidates.retain(|&i| {
        snapshot
            .iter()
            .all(|&j| neighbour_as(j) != neighbour_as(i) || med(j) >= med(i))
    });
    // (d) eBGP before iBGP.
    keep_best(&mut candidates, |i| peer(i).is_some_and(|p| p.internal));
    // (e) the lowest interior cost to the next hop: tortie runs no IGP, all are equal.
    // RFC 4456 - Section 9: the shortest CLUSTER_LIST.
    keep_best(&mut candidates, |i| attributes(i).cluster_list.len());
    // (f) the lowest BGP Identifier, ORIGINATOR_ID standing in for it (RFC 4456).
    keep_best(&mut candidates, |i| {
        attributes(i)
            .originator_id
            .or(peer(i).map(|p| p.router_id))
            .map_or(u32::MAX, u32::from)
    });
    // (g) the lowest peer address.
    keep_best(&mut candidates, |i| peer(i).map(|p| p.address));
    candidates.first().copied().unwrap_or(0)
}

/// Keeps the candidates whose key is the smallest.
fn keep_best<K: Ord>(candidates: &mut Vec<usize>, key: impl Fn(usize) -> K) {
    if candidates.len() < 2 {
        return;
    }
    let Some(best) = candidates.iter().map(|&i| key(i)).min() else {
        return;
    };
    candidates.retain(|&i| key(i).cmp(&best) == Ordering::Equal);
}

/// The neighbouring AS of a path for the MED comparison: the first AS of its first
/// AS_SEQUENCE; `None` for a path from inside the AS (or confederation).
fn first_as(attributes: &PathAttributes) -> Option<u32> {
    let path = attributes.as_path.as_ref()?;
    let segment = path
        .segments
        .iter()
        .find(|s| !matches!(s.kind, SegmentKind::ConfedSequence | SegmentKind::ConfedSet))?;
    match segment.kind {
        SegmentKind::Sequence => segment.asns.first().copied(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use ipnet::Ipv4Net;

    use super::*;
    use crate::packet::{AsPath, AsSegment};

    fn prefix(text: &str) -> Ipv4Net {
        text.parse().expect("literal prefix")
    }

    fn path_via(asns: &[u32]) -> PathAttributes {
        PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath {
                segments: if asns.is_empty() {
                    Vec::new()
                } else {
                    vec![AsSegment {
                        kind: SegmentKind::Sequence,
                        asns: asns.to_vec(),
                    }]
                },
            }),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 254)),
            ..PathAttributes::default()
        }
    }

    /// Peers 1..=4: 1 and 2 external, 3 and 4 internal; router ids and addresses rise with
    /// the index.
    fn peers() -> HashMap<PeerId, PeerInfo> {
        (1..=4u8)
            .map(|i| {
                let info = PeerInfo {
                    address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + i)),
                    router_id: Ipv4Addr::new(198, 51, 100, i),
                    internal: i > 2,
                };
                (PeerId(u32::from(i)), info)
            })
            .collect()
    }

    fn path(store: &mut AttributeStore, peer: u32, attributes: PathAttributes) -> Path {
        Path {
            peer: PeerId(peer),
            attributes: store.intern(attributes),
        }
    }

    /// Which of two paths (given in both orders) the decision picks, by peer.
    fn winner(a: Path, b: Path) -> PeerId {
        let peers = peers();
        let first = [a.clone(), b.clone()];
        let second = [b, a];
        let one = first[select_best(&first, &peers)].peer;
        let other = second[select_best(&second, &peers)].peer;
        assert_eq!(one, other, "the order of candidates must not matter");
        one
    }

    #[test]
    fn equal_attributes_are_stored_once_and_forgotten_when_unused() {
        let mut store = AttributeStore::default();
        let a = store.intern(path_via(&[64513]));
        let b = store.intern(path_via(&[64513]));
        let c = store.intern(path_via(&[64514]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(store.len(), 2);
        drop(c);
        assert_eq!(store.collect_garbage(), 1);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_new_prefix_is_best_and_a_repeat_changes_nothing() {
        let (mut store, peers, mut table) = (AttributeStore::default(), peers(), Table::default());
        let first = path(&mut store, 1, path_via(&[64513]));
        let change = table.announce(prefix("198.51.100.0/24"), first.clone(), &peers);
        assert_eq!(change, Some(BestChange::Best(first.clone())));
        assert_eq!(
            table.announce(prefix("198.51.100.0/24"), first, &peers),
            None
        );
        let replaced = path(&mut store, 1, path_via(&[64513, 64520]));
        let change = table.announce(prefix("198.51.100.0/24"), replaced.clone(), &peers);
        assert_eq!(change, Some(BestChange::Best(replaced)));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn withdrawals_promote_the_next_best_and_end_in_unreachable() {
        let (mut store, peers, mut table) = (AttributeStore::default(), peers(), Table::default());
        let block = prefix("198.51.100.0/26");
        let short = path(&mut store, 1, path_via(&[64513]));
        let long = path(&mut store, 2, path_via(&[64514, 64515]));
        table.announce(block, long.clone(), &peers);
        assert_eq!(
            table.announce(block, short.clone(), &peers),
            Some(BestChange::Best(short.clone()))
        );
        // A worse path arriving again or going away does not change the best.
        assert_eq!(table.announce(block, long.clone(), &peers), None);
        assert_eq!(table.withdraw(block, PeerId(2), &peers), None);
        table.announce(block, long.clone(), &peers);
        assert_eq!(
            table.withdraw(block, PeerId(1), &peers),
            Some(BestChange::Best(long))
        );
        assert_eq!(table.withdraw(block, PeerId(1), &peers), None);
        assert_eq!(
            table.withdraw(block, PeerId(2), &peers),
            Some(BestChange::Unreachable)
        );
        assert!(table.is_empty());
    }

    #[test]
    fn a_peer_going_down_takes_its_paths_with_it() {
        let (mut store, peers, mut table) = (AttributeStore::default(), peers(), Table::default());
        let from_one = path(&mut store, 1, path_via(&[64513]));
        let from_two = path(&mut store, 2, path_via(&[64514, 64515]));
        table.announce(prefix("198.51.100.0/26"), from_one.clone(), &peers);
        table.announce(prefix("198.51.100.64/26"), from_one, &peers);
        table.announce(prefix("198.51.100.64/26"), from_two.clone(), &peers);
        let mut changes = table.withdraw_peer(PeerId(1), &peers);
        changes.sort_by_key(|(p, _)| *p);
        assert_eq!(
            changes,
            vec![
                (prefix("198.51.100.0/26"), BestChange::Unreachable),
                (prefix("198.51.100.64/26"), BestChange::Best(from_two)),
            ]
        );
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn own_routes_beat_learned_ones() {
        let mut store = AttributeStore::default();
        let own = path(&mut store, 0, path_via(&[]));
        let learned = path(
            &mut store,
            1,
            PathAttributes {
                local_pref: Some(1000),
                ..path_via(&[])
            },
        );
        assert_eq!(winner(own, learned), PeerId::LOCAL);
    }

    #[test]
    fn higher_local_pref_then_shorter_as_path_then_lower_origin() {
        let mut store = AttributeStore::default();
        let preferred = PathAttributes {
            local_pref: Some(200),
            ..path_via(&[64513, 64514, 64515])
        };
        assert_eq!(
            winner(
                path(&mut store, 1, preferred),
                path(&mut store, 2, path_via(&[64514]))
            ),
            PeerId(1)
        );
        // An AS_SET counts as one, confederation segments as none.
        let with_set = PathAttributes {
            as_path: Some(AsPath {
                segments: vec![
                    AsSegment {
                        kind: SegmentKind::ConfedSequence,
                        asns: vec![65001, 65002, 65003],
                    },
                    AsSegment {
                        kind: SegmentKind::Set,
                        asns: vec![64513, 64514, 64515],
                    },
                ],
            }),
            ..path_via(&[])
        };
        assert_eq!(
            winner(
                path(&mut store, 1, with_set),
                path(&mut store, 2, path_via(&[64514, 64520]))
            ),
            PeerId(1)
        );
        let incomplete = PathAttributes {
            origin: Some(Origin::Incomplete),
            ..path_via(&[64513])
        };
        assert_eq!(
            winner(
                path(&mut store, 1, incomplete),
                path(&mut store, 2, path_via(&[64514]))
            ),
            PeerId(2)
        );
    }

    #[test]
    fn med_is_compared_only_between_paths_from_the_same_neighbouring_as() {
        let mut store = AttributeStore::default();
        let med = |asn: u32, med: u32| PathAttributes {
            multi_exit_disc: Some(med),
            ..path_via(&[asn])
        };
        // Same neighbour AS: the lower MED wins, though its router id is higher.
        assert_eq!(
            winner(
                path(&mut store, 1, med(64513, 50)),
                path(&mut store, 2, med(64513, 10))
            ),
            PeerId(2)
        );
        // Different neighbour ASes: MED is not compared; the lower router id decides.
        assert_eq!(
            winner(
                path(&mut store, 1, med(64513, 50)),
                path(&mut store, 2, med(64514, 10))
            ),
            PeerId(1)
        );
        // RFC 4271's three-path case: peer 2's lower MED removes peer 1 (same AS 64513);
        // peer 3 (AS 64514, internal) is only removed by the eBGP step.
        let paths = [
            path(&mut store, 1, med(64513, 50)),
            path(&mut store, 2, med(64513, 10)),
            path(&mut store, 3, med(64514, 0)),
        ];
        assert_eq!(paths[select_best(&paths, &peers())].peer, PeerId(2));
    }

    #[test]
    fn ebgp_beats_ibgp_then_cluster_list_then_router_id_then_address() {
        let mut store = AttributeStore::default();
        assert_eq!(
            winner(
                path(&mut store, 3, path_via(&[64513])),
                path(&mut store, 2, path_via(&[64514]))
            ),
            PeerId(2)
        );
        let reflected = PathAttributes {
            cluster_list: vec![Ipv4Addr::new(192, 0, 2, 100)],
            ..path_via(&[64513])
        };
        assert_eq!(
            winner(
                path(&mut store, 3, reflected),
                path(&mut store, 4, path_via(&[64513]))
            ),
            PeerId(4)
        );
        // ORIGINATOR_ID stands in for the router id: peer 4's route came from 198.51.100.1.
        let originated = PathAttributes {
            originator_id: Some(Ipv4Addr::new(198, 51, 100, 1)),
            ..path_via(&[64513])
        };
        assert_eq!(
            winner(
                path(&mut store, 3, path_via(&[64513])),
                path(&mut store, 4, originated)
            ),
            PeerId(4)
        );
        // Same router id behind two sessions: the lower peer address.
        let mut same_id = peers();
        for info in same_id.values_mut() {
            info.router_id = Ipv4Addr::new(198, 51, 100, 9);
            info.address = match info.address {
                IpAddr::V4(address) => IpAddr::V6(Ipv6Addr::from(
                    u128::from(u32::from(address)) | 0x2001_0db8 << 96,
                )),
                v6 => v6,
            };
        }
        let paths = [
            path(&mut store, 2, path_via(&[64513])),
            path(&mut store, 1, path_via(&[64514])),
        ];
        assert_eq!(paths[select_best(&paths, &same_id)].peer, PeerId(1));
    }
}
