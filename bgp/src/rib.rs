//! Routes: interned path attributes, the table of every accepted path per prefix, and the
//! RFC 4271 - Section 9.1.2 decision process that picks the best.
//!
//! One table per address family holds, per prefix, every path that passed import policy,
//! from every peer (the post-policy Adj-RIBs-In of RFC 4271 - Section 3.2) with the best
//! first (the Loc-RIB). Keeping them together means one hash lookup per received prefix.
//! A path is a peer index and the index of its interned attributes (8 octets): the million
//! routes a full table brings share a few thousand attribute sets.
//!
//! Pure data and decisions: no I/O, no clock; the speaker task owns it.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::packet::{Origin, PathAttributes, SegmentKind};

/// An interned attribute set, by index into the [`AttributeStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttributeId(u32);

#[derive(Debug)]
struct AttributeSlot {
    /// Shared, so that best-route changes hand the agent the set without copying it.
    attributes: Arc<PathAttributes>,
    hash: u64,
    /// Paths in tables that use this set. Counted by hand, not with an `Arc`: the store
    /// has one owner, and a full table costs a million reference count changes, which as
    /// atomic operations were half of the ingest time.
    references: u32,
}

/// One copy of each distinct attribute set (holo and BIRD do the same): a million routes
/// that share attributes share one copy, and a path names its set by a 4-octet index.
#[derive(Debug, Default)]
pub struct AttributeStore {
    slots: Vec<Option<AttributeSlot>>,
    /// The sets by their hash: nearly always one per hash, kept inline.
    by_hash: HashMap<u64, SameHash, FastHash>,
    free: Vec<u32>,
    /// Sets whose count was zero at some point since the last collection (new ones, and
    /// ones whose last path went): the only candidates [`AttributeStore::collect_garbage`]
    /// looks at, so a collection after every UPDATE costs what that UPDATE changed, not a
    /// scan of every set (which made a table of 89,000 sets take seconds).
    unreferenced: Vec<AttributeId>,
}

/// The ids of the sets that share one hash.
#[derive(Debug)]
enum SameHash {
    One(AttributeId),
    Many(Vec<AttributeId>),
}

impl SameHash {
    fn ids(&self) -> &[AttributeId] {
        match self {
            SameHash::One(id) => std::slice::from_ref(id),
            SameHash::Many(ids) => ids,
        }
    }
}

impl AttributeStore {
    /// The id of `attributes`, stored if new. An id stays valid while a path holds it,
    /// and otherwise until the next [`AttributeStore::collect_garbage`], which the owner
    /// runs between batches of UPDATEs: so an UPDATE's attributes can be interned first
    /// and its prefixes announced after.
    pub fn intern(&mut self, attributes: PathAttributes) -> AttributeId {
        // A folded multiply, not SipHash: sets come from peers, but a peer can only make
        // its own sets collide, which costs it lookups in its own share of the store.
        let mut hasher = PrefixHasher::default();
        attributes.hash(&mut hasher);
        let hash = hasher.finish();
        if let Some(ids) = self.by_hash.get(&hash)
            && let Some(id) = ids
                .ids()
                .iter()
                .copied()
                .find(|&id| self.slot(id).is_some_and(|s| *s.attributes == attributes))
        {
            return id;
        }
        let slot = AttributeSlot {
            attributes: Arc::new(attributes),
            hash,
            references: 0,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = Some(slot);
                index
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        let id = AttributeId(index);
        match self.by_hash.entry(hash) {
            Entry::Vacant(vacant) => {
                vacant.insert(SameHash::One(id));
            }
            Entry::Occupied(mut occupied) => {
                let same = occupied.get_mut();
                *same = SameHash::Many([same.ids(), &[id]].concat());
            }
        }
        self.unreferenced.push(id);
        id
    }

    /// The attributes of `id`, while some path (or the caller, since interning) holds it.
    pub fn get(&self, id: AttributeId) -> Option<&PathAttributes> {
        self.slot(id).map(|slot| &*slot.attributes)
    }

    /// The attributes of `id`, shared.
    pub fn shared(&self, id: AttributeId) -> Option<Arc<PathAttributes>> {
        self.slot(id).map(|slot| Arc::clone(&slot.attributes))
    }

    fn slot(&self, id: AttributeId) -> Option<&AttributeSlot> {
        self.slots.get(id.0 as usize).and_then(Option::as_ref)
    }

    fn retain(&mut self, id: AttributeId) {
        if let Some(Some(slot)) = self.slots.get_mut(id.0 as usize) {
            slot.references += 1;
        }
    }

    fn release(&mut self, id: AttributeId) {
        if let Some(Some(slot)) = self.slots.get_mut(id.0 as usize) {
            slot.references = slot.references.saturating_sub(1);
            if slot.references == 0 {
                self.unreferenced.push(id);
            }
        }
    }

    fn free_slot(&mut self, id: AttributeId) {
        let Some(slot) = self.slots.get_mut(id.0 as usize).and_then(Option::take) else {
            return;
        };
        if let Entry::Occupied(mut occupied) = self.by_hash.entry(slot.hash) {
            let rest: Vec<AttributeId> = occupied
                .get()
                .ids()
                .iter()
                .copied()
                .filter(|&other| other != id)
                .collect();
            match rest.as_slice() {
                [] => {
                    occupied.remove();
                }
                [only] => *occupied.get_mut() = SameHash::One(*only),
                _ => *occupied.get_mut() = SameHash::Many(rest),
            }
        }
        self.free.push(id.0);
    }

    /// Frees the sets no path uses any more; returns how many.
    pub fn collect_garbage(&mut self) -> usize {
        let mut freed = 0;
        for id in std::mem::take(&mut self.unreferenced) {
            // A candidate may have gained paths since, or be listed twice (freed by then).
            if self.slot(id).is_some_and(|slot| slot.references == 0) {
                self.free_slot(id);
                freed += 1;
            }
        }
        freed
    }

    /// Number of distinct sets stored.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A peer's index in the speaker's peer table. [`PeerId::LOCAL`] is this speaker itself,
/// for routes it originates; `u32::MAX` is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

impl PeerId {
    pub const LOCAL: PeerId = PeerId(0);
    /// Marks a table entry whose paths live in the multi-path side table.
    const MANY: PeerId = PeerId(u32::MAX);
    const STALE_BIT: u32 = 1 << 31;

    /// The id under which a gracefully restarting peer's previous routes wait (RFC 4724
    /// - Section 4.2): peers are numbered below 2^31.
    pub fn stale(self) -> PeerId {
        PeerId(self.0 | Self::STALE_BIT)
    }

    /// The peer itself, for a stale id as for its own.
    pub fn base(self) -> PeerId {
        if self == Self::MANY {
            self
        } else {
            PeerId(self.0 & !Self::STALE_BIT)
        }
    }
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

/// One path to a prefix: who sent it, with which attributes. Eight octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    pub peer: PeerId,
    pub attributes: AttributeId,
}

/// What happened to a prefix's best path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BestChange {
    /// A new best path (the prefix is new, or its best path changed).
    Best(Path),
    /// No path is left.
    Unreachable,
}

/// The hasher of the speaker's and the RIB's own maps (prefixes, attribute sets, peer and
/// attribute ids): [`PrefixHasher`].
pub type FastHash = BuildHasherDefault<PrefixHasher>;

/// A fast hash for prefixes (a folded multiply, as ahash and rustc's FxHash do): the
/// table is keyed by values from the wire, but one peer can only flood its own table,
/// which max-prefix limits bound, so SipHash's resistance is not worth its cost here.
#[derive(Debug, Default, Clone, Copy)]
pub struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut octets = [0u8; 8];
            octets.copy_from_slice(word);
            self.mix(u64::from_le_bytes(octets));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut octets = [0u8; 8];
            octets[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(octets));
        }
    }

    // The fixed-size writes each take one mix, rather than the default's detour through
    // `write` (the lengths and values of attribute sets are most of what they hash).
    fn write_u8(&mut self, value: u8) {
        self.mix(u64::from(value));
    }

    fn write_u16(&mut self, value: u16) {
        self.mix(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.mix(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.mix(value as u64);
    }

    fn write_u128(&mut self, value: u128) {
        self.mix(value as u64);
        self.mix((value >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl PrefixHasher {
    fn mix(&mut self, value: u64) {
        const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
        let product = u128::from(self.0 ^ value) * u128::from(MULTIPLIER);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

/// Every accepted path per prefix, best first, for one address family.
///
/// An entry is one [`Path`] (8 octets) when the prefix has a single path, as nearly every
/// prefix has; otherwise its paths sit in a side table. With the prefix that is 16 octets
/// per prefix in the hash table.
#[derive(Debug)]
pub struct Table<P> {
    destinations: HashMap<P, Path, BuildHasherDefault<PrefixHasher>>,
    many: Vec<Vec<Path>>,
    free_many: Vec<u32>,
    /// Paths per peer, kept as they come and go so that the peer table's "accepted"
    /// costs nothing to read.
    counts: HashMap<PeerId, usize, BuildHasherDefault<PrefixHasher>>,
}

impl<P> Default for Table<P> {
    fn default() -> Self {
        Table {
            destinations: HashMap::default(),
            many: Vec::new(),
            free_many: Vec::new(),
            counts: HashMap::default(),
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

    fn paths_of<'a>(&'a self, entry: &'a Path) -> &'a [Path] {
        if entry.peer == PeerId::MANY {
            self.many
                .get(entry.attributes.0 as usize)
                .map_or(&[], Vec::as_slice)
        } else {
            std::slice::from_ref(entry)
        }
    }

    /// How many prefixes `peer` has a path to.
    pub fn paths_from(&self, peer: PeerId) -> usize {
        self.counts.get(&peer).copied().unwrap_or(0)
    }

    fn uncount(&mut self, peer: PeerId) {
        if let Some(count) = self.counts.get_mut(&peer) {
            *count = count.saturating_sub(1);
        }
    }

    /// Every prefix with a path, in no particular order.
    pub fn prefixes(&self) -> impl Iterator<Item = P> + '_ {
        self.destinations.keys().copied()
    }

    /// The best path to `prefix`.
    pub fn best(&self, prefix: &P) -> Option<Path> {
        self.destinations
            .get(prefix)
            .and_then(|entry| self.paths_of(entry).first().copied())
    }

    /// Every path to `prefix`, best first.
    pub fn paths(&self, prefix: &P) -> &[Path] {
        self.destinations
            .get(prefix)
            .map_or(&[], |entry| self.paths_of(entry))
    }

    /// Adds or replaces `path.peer`'s path to `prefix`; returns the change of best path.
    pub fn announce(
        &mut self,
        prefix: P,
        path: Path,
        store: &mut AttributeStore,
        peers: &impl Peers,
    ) -> Option<BestChange> {
        store.retain(path.attributes);
        let entry = match self.destinations.get_mut(&prefix) {
            None => {
                self.destinations.insert(prefix, path);
                *self.counts.entry(path.peer).or_default() += 1;
                return Some(BestChange::Best(path));
            }
            Some(entry) => entry,
        };
        if entry.peer == path.peer {
            let old = std::mem::replace(entry, path);
            store.release(old.attributes);
            return (old != path).then_some(BestChange::Best(path));
        }
        // A second path, or one more: the entry's paths live in the side table.
        let index = if entry.peer == PeerId::MANY {
            entry.attributes.0 as usize
        } else {
            let first = *entry;
            let index = match self.free_many.pop() {
                Some(index) => {
                    self.many[index as usize] = vec![first];
                    index
                }
                None => {
                    self.many.push(vec![first]);
                    (self.many.len() - 1) as u32
                }
            };
            *entry = Path {
                peer: PeerId::MANY,
                attributes: AttributeId(index),
            };
            index as usize
        };
        let list = self.many.get_mut(index)?;
        let old_best = list.first().copied();
        match list.iter_mut().find(|p| p.peer == path.peer) {
            Some(slot) => store.release(std::mem::replace(slot, path).attributes),
            None => {
                list.push(path);
                *self.counts.entry(path.peer).or_default() += 1;
            }
        }
        let best = select_best(list, store, peers);
        list.swap(0, best);
        let new_best = list[0];
        (Some(new_best) != old_best).then_some(BestChange::Best(new_best))
    }

    /// Removes `peer`'s path to `prefix`; returns the change of best path.
    pub fn withdraw(
        &mut self,
        prefix: P,
        peer: PeerId,
        store: &mut AttributeStore,
        peers: &impl Peers,
    ) -> Option<BestChange> {
        let entry = self.destinations.get_mut(&prefix)?;
        if entry.peer != PeerId::MANY {
            if entry.peer != peer {
                return None;
            }
            store.release(entry.attributes);
            self.destinations.remove(&prefix);
            self.uncount(peer);
            return Some(BestChange::Unreachable);
        }
        let index = entry.attributes.0;
        let list = self.many.get_mut(index as usize)?;
        let position = list.iter().position(|p| p.peer == peer)?;
        store.release(list.remove(position).attributes);
        if let Some(count) = self.counts.get_mut(&peer) {
            *count = count.saturating_sub(1);
        }
        if list.is_empty() {
            self.free_many.push(index);
            self.destinations.remove(&prefix);
            return Some(BestChange::Unreachable);
        }
        let change = if position == 0 {
            let best = select_best(list, store, peers);
            list.swap(0, best);
            list.first().copied().map(BestChange::Best)
        } else {
            // The best path stays first: nothing changes for the Loc-RIB.
            None
        };
        if let [only] = list.as_slice() {
            *entry = *only;
            list.clear();
            self.free_many.push(index);
        }
        change
    }

    /// Moves every path of `from` to `to`, replacing a path `to` already has for the
    /// same prefix; returns the prefixes whose best path changed by that replacement. This
    /// is how a restarting peer's routes become stale ones (RFC 4724 - Section 4.2); `to`
    /// must be described in `peers` as `from` is.
    pub fn rename_peer(
        &mut self,
        from: PeerId,
        to: PeerId,
        store: &mut AttributeStore,
        peers: &impl Peers,
    ) -> Vec<(P, BestChange)> {
        let mut moved = 0;
        let mut replaced = 0;
        let mut changes = Vec::new();
        let renamed = |path: Path| {
            if path.peer == from {
                Path { peer: to, ..path }
            } else {
                path
            }
        };
        for (prefix, entry) in self.destinations.iter_mut() {
            if entry.peer == from {
                entry.peer = to;
                moved += 1;
                continue;
            }
            if entry.peer != PeerId::MANY {
                continue;
            }
            let index = entry.attributes.0;
            let Some(list) = self.many.get_mut(index as usize) else {
                continue;
            };
            if !list.iter().any(|p| p.peer == from) {
                continue;
            }
            let Some(before) = list.first().copied().map(renamed) else {
                continue;
            };
            if let Some(position) = list.iter().position(|p| p.peer == to) {
                store.release(list.remove(position).attributes);
                replaced += 1;
            }
            for path in list.iter_mut().filter(|p| p.peer == from) {
                path.peer = to;
                moved += 1;
            }
            let best = select_best(list, store, peers);
            list.swap(0, best);
            if list[0] != before {
                changes.push((*prefix, BestChange::Best(list[0])));
            }
            // One path left: back inline, as everywhere else.
            if let [only] = list.as_slice() {
                *entry = *only;
                list.clear();
                self.free_many.push(index);
            }
        }
        self.counts.remove(&from);
        let count = self.counts.entry(to).or_default();
        *count = (*count + moved).saturating_sub(replaced);
        changes
    }

    /// Removes every path from `peer` (its session went down); returns the prefixes
    /// whose best path changed.
    pub fn withdraw_peer(
        &mut self,
        peer: PeerId,
        store: &mut AttributeStore,
        peers: &impl Peers,
    ) -> Vec<(P, BestChange)> {
        let prefixes: Vec<P> = self
            .destinations
            .iter()
            .filter(|(_, entry)| self.paths_of(entry).iter().any(|p| p.peer == peer))
            .map(|(prefix, _)| *prefix)
            .collect();
        prefixes
            .into_iter()
            .filter_map(|prefix| {
                self.withdraw(prefix, peer, store, peers)
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
pub fn select_best(paths: &[Path], store: &AttributeStore, peers: &impl Peers) -> usize {
    let mut candidates: Vec<usize> = (0..paths.len()).collect();
    let empty = PathAttributes::default();
    let attributes = |i: usize| store.get(paths[i].attributes).unwrap_or(&empty);
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
        crate::testing::path_through(asns, Ipv4Addr::new(192, 0, 2, 254))
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
    fn winner(store: &AttributeStore, a: Path, b: Path) -> PeerId {
        let peers = peers();
        let one = [a, b][select_best(&[a, b], store, &peers)].peer;
        let other = [b, a][select_best(&[b, a], store, &peers)].peer;
        assert_eq!(one, other, "the order of candidates must not matter");
        one
    }

    #[test]
    fn equal_attributes_are_stored_once_and_freed_when_unused() {
        let (mut store, peers, mut table) = (AttributeStore::default(), peers(), Table::default());
        let a = store.intern(path_via(&[64513]));
        let b = store.intern(path_via(&[64513]));
        let c = store.intern(path_via(&[64514]));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(store.len(), 2);
        table.announce(
            prefix("198.51.100.0/24"),
            Path {
                peer: PeerId(1),
                attributes: a,
            },
            &mut store,
            &peers,
        );
        // c was interned for nothing: garbage.
        assert_eq!(store.collect_garbage(), 1);
        assert_eq!(store.get(c), None);
        // The last path using a goes: a is garbage too, and its slot is reused.
        table.withdraw(prefix("198.51.100.0/24"), PeerId(1), &mut store, &peers);
        assert_eq!(store.collect_garbage(), 1);
        assert!(store.is_empty());
        let d = store.intern(path_via(&[64515]));
        assert_eq!(
            store
                .get(d)
                .and_then(|attributes| attributes.as_path.as_ref())
                .map(|p| p.length()),
            Some(1)
        );
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_new_prefix_is_best_and_a_repeat_changes_nothing() {
        let (mut store, peers, mut table) = (AttributeStore::default(), peers(), Table::default());
        let block = prefix("198.51.100.0/24");
        let first = path(&mut store, 1, path_via(&[64513]));
        assert_eq!(
            table.announce(block, first, &mut store, &peers),
            Some(BestChange::Best(first))
        );
        assert_eq!(table.announce(block, first, &mut store, &peers), None);
        let replaced = path(&mut store, 1, path_via(&[64513, 64520]));
        assert_eq!(
            table.announce(block, replaced, &mut store, &peers),
            Some(BestChange::Best(replaced))
        );
        assert_eq!(table.len(), 1);
        // The replaced set is no longer referenced.
        assert_eq!(store.collect_garbage(), 1);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn withdrawals_promote_the_next_best_and_end_in_unreachable() {
        let (mut store, peers, mut table) = (AttributeStore::default(), peers(), Table::default());
        let block = prefix("198.51.100.0/26");
        let short = path(&mut store, 1, path_via(&[64513]));
        let long = path(&mut store, 2, path_via(&[64514, 64515]));
        table.announce(block, long, &mut store, &peers);
        assert_eq!(
            table.announce(block, short, &mut store, &peers),
            Some(BestChange::Best(short))
        );
        assert_eq!(table.paths(&block), &[short, long]);
        assert_eq!(
            (table.paths_from(PeerId(1)), table.paths_from(PeerId(2))),
            (1, 1)
        );
        // A worse path arriving again or going away does not change the best.
        assert_eq!(table.announce(block, long, &mut store, &peers), None);
        assert_eq!(table.withdraw(block, PeerId(2), &mut store, &peers), None);
        assert_eq!(table.paths(&block), &[short]);
        table.announce(block, long, &mut store, &peers);
        assert_eq!(
            table.withdraw(block, PeerId(1), &mut store, &peers),
            Some(BestChange::Best(long))
        );
        assert_eq!(table.withdraw(block, PeerId(1), &mut store, &peers), None);
        assert_eq!(
            table.withdraw(block, PeerId(2), &mut store, &peers),
            Some(BestChange::Unreachable)
        );
        assert_eq!(
            (table.paths_from(PeerId(1)), table.paths_from(PeerId(2))),
            (0, 0)
        );
        assert_eq!(store.collect_garbage(), 2);
        assert!(table.is_empty() && store.is_empty());
    }

    #[test]
    fn a_peer_going_down_takes_its_paths_with_it() {
        let (mut store, peers, mut table) = (AttributeStore::default(), peers(), Table::default());
        let from_one = path(&mut store, 1, path_via(&[64513]));
        let from_two = path(&mut store, 2, path_via(&[64514, 64515]));
        table.announce(prefix("198.51.100.0/26"), from_one, &mut store, &peers);
        table.announce(prefix("198.51.100.64/26"), from_one, &mut store, &peers);
        table.announce(prefix("198.51.100.64/26"), from_two, &mut store, &peers);
        let mut changes = table.withdraw_peer(PeerId(1), &mut store, &peers);
        changes.sort_by_key(|(p, _)| *p);
        assert_eq!(
            changes,
            vec![
                (prefix("198.51.100.0/26"), BestChange::Unreachable),
                (prefix("198.51.100.64/26"), BestChange::Best(from_two)),
            ]
        );
        assert_eq!(table.len(), 1);
        assert_eq!(store.collect_garbage(), 1);
        assert_eq!(store.len(), 1);
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
        assert_eq!(winner(&store, own, learned), PeerId::LOCAL);
    }

    #[test]
    fn higher_local_pref_then_shorter_as_path_then_lower_origin() {
        let mut store = AttributeStore::default();
        let preferred = path(
            &mut store,
            1,
            PathAttributes {
                local_pref: Some(200),
                ..path_via(&[64513, 64514, 64515])
            },
        );
        let shorter = path(&mut store, 2, path_via(&[64514]));
        assert_eq!(winner(&store, preferred, shorter), PeerId(1));
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
        let with_set = path(&mut store, 1, with_set);
        let two = path(&mut store, 2, path_via(&[64514, 64520]));
        assert_eq!(winner(&store, with_set, two), PeerId(1));
        let incomplete = path(
            &mut store,
            1,
            PathAttributes {
                origin: Some(Origin::Incomplete),
                ..path_via(&[64513])
            },
        );
        let igp = path(&mut store, 2, path_via(&[64514]));
        assert_eq!(winner(&store, incomplete, igp), PeerId(2));
    }

    #[test]
    fn med_is_compared_only_between_paths_from_the_same_neighbouring_as() {
        let mut store = AttributeStore::default();
        let med = |asn: u32, med: u32| PathAttributes {
            multi_exit_disc: Some(med),
            ..path_via(&[asn])
        };
        // Same neighbour AS: the lower MED wins, though its router id is higher.
        let (high, low) = (
            path(&mut store, 1, med(64513, 50)),
            path(&mut store, 2, med(64513, 10)),
        );
        assert_eq!(winner(&store, high, low), PeerId(2));
        // Different neighbour ASes: MED is not compared; the lower router id decides.
        let (high, low) = (
            path(&mut store, 1, med(64513, 50)),
            path(&mut store, 2, med(64514, 10)),
        );
        assert_eq!(winner(&store, high, low), PeerId(1));
        // Three paths: peer 2's lower MED removes peer 1 (same AS 64513); peer 3 (AS
        // 64514, internal) is only removed by the eBGP step.
        let paths = [
            path(&mut store, 1, med(64513, 50)),
            path(&mut store, 2, med(64513, 10)),
            path(&mut store, 3, med(64514, 0)),
        ];
        assert_eq!(paths[select_best(&paths, &store, &peers())].peer, PeerId(2));
    }

    #[test]
    fn ebgp_beats_ibgp_then_cluster_list_then_router_id_then_address() {
        let mut store = AttributeStore::default();
        let (internal, external) = (
            path(&mut store, 3, path_via(&[64513])),
            path(&mut store, 2, path_via(&[64514])),
        );
        assert_eq!(winner(&store, internal, external), PeerId(2));
        let reflected = PathAttributes {
            cluster_list: vec![Ipv4Addr::new(192, 0, 2, 100)],
            ..path_via(&[64513])
        };
        let (reflected, direct) = (
            path(&mut store, 3, reflected),
            path(&mut store, 4, path_via(&[64513])),
        );
        assert_eq!(winner(&store, reflected, direct), PeerId(4));
        // ORIGINATOR_ID stands in for the router id: peer 4's route came from 198.51.100.1.
        let originated = PathAttributes {
            originator_id: Some(Ipv4Addr::new(198, 51, 100, 1)),
            ..path_via(&[64513])
        };
        let (three, four) = (
            path(&mut store, 3, path_via(&[64513])),
            path(&mut store, 4, originated),
        );
        assert_eq!(winner(&store, three, four), PeerId(4));
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
        assert_eq!(paths[select_best(&paths, &store, &same_id)].peer, PeerId(1));
    }

    #[test]
    fn the_prefix_hash_spreads_24s_over_the_low_bits() {
        // hashbrown indexes buckets by the low bits: /24s, whose low address octet is
        // zero, must not collide there.
        let buckets: std::collections::HashSet<u64> = (0..1024u32)
            .map(|i| {
                let mut hasher = PrefixHasher::default();
                Ipv4Net::new(Ipv4Addr::from(0x0A00_0000 + (i << 8)), 24)
                    .expect("valid")
                    .hash(&mut hasher);
                hasher.finish() & 1023
            })
            .collect();
        assert!(
            buckets.len() > 600,
            "{} distinct buckets of 1024",
            buckets.len()
        );
    }

    #[test]
    fn renaming_a_peer_keeps_best_paths_and_replaces_older_stale_ones() {
        let (mut store, mut peers, mut table) =
            (AttributeStore::default(), peers(), Table::default());
        let stale = PeerId(1).stale();
        if let Some(info) = peers.get(&PeerId(1)).cloned() {
            peers.insert(stale, info);
        }
        let (one, two) = (prefix("198.51.100.0/26"), prefix("198.51.100.64/26"));
        let old = path(&mut store, 1, path_via(&[64513, 64600]));
        table.announce(one, old, &mut store, &peers);
        table.announce(two, old, &mut store, &peers);
        table.announce(
            two,
            path(&mut store, 2, path_via(&[64514, 64600, 64601])),
            &mut store,
            &peers,
        );
        assert!(
            table
                .rename_peer(PeerId(1), stale, &mut store, &peers)
                .is_empty()
        );
        assert_eq!(table.best(&one).map(|p| p.peer), Some(stale));
        assert_eq!(table.best(&two).map(|p| p.peer), Some(stale));
        assert_eq!(
            (table.paths_from(PeerId(1)), table.paths_from(stale)),
            (0, 2)
        );
        // The peer comes back with one route and goes again: its new path replaces the
        // stale one.
        table.announce(
            one,
            path(&mut store, 1, path_via(&[64513])),
            &mut store,
            &peers,
        );
        assert!(
            table
                .rename_peer(PeerId(1), stale, &mut store, &peers)
                .is_empty()
        );
        assert_eq!(table.paths(&one).len(), 1);
        assert_eq!(table.paths_from(stale), 2);
        let changes = table.withdraw_peer(stale, &mut store, &peers);
        assert_eq!(changes.len(), 2);
        assert_eq!(table.best(&two).map(|p| p.peer), Some(PeerId(2)));
    }
}
