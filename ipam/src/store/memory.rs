//! The in-memory store: for tests and benchmarks, and for anything that needs IPAM within
//! one process only. One mutex over a table per kind (objects in slots, found by name
//! through a hash table) and a node index pointing at the slots; the revision is a global
//! counter, as in etcd.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::HashTable;

use super::{Decision, Read, ReadVisitor, Revision, Step, Store, StoreError, Versioned, Visitor};
use crate::model::{Kind, Resource};
use crate::name::Name;

/// A multiply-rotate hash taking eight bytes at a step (the scheme of rustc's FxHash): the
/// keys are names this process chose, not input an attacker controls, so the DoS resistance
/// of the standard SipHash buys nothing here, and a byte-at-a-time hash (FNV) cost more
/// than the table lookup it served.
#[derive(Default)]
struct WordHash(u64);

const WORD_HASH_FACTOR: u64 = 0xf135_7aea_2e62_a9c5;

impl WordHash {
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(WORD_HASH_FACTOR);
    }
}

impl Hasher for WordHash {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // Byte by byte: a copy of a length only known at run time is a call to memcpy,
            // which cost more than the seven shifts at most that this takes.
            let word = rest
                .iter()
                .rev()
                .fold(0u64, |word, &byte| (word << 8) | u64::from(byte));
            self.add(word);
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        // The table takes its bucket from the low bits, which the multiply mixes least.
        self.0.rotate_left(26)
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHash>>;

/// How many kinds there are: one table each.
const KINDS: usize = Kind::ALL.len();

struct Entry {
    value: Arc<Resource>,
    revision: u64,
    node: Option<Name>,
}

/// The objects of one kind. Each lives in a slot that does not move while it exists, so
/// the node index can point at the slot itself: a node's objects are read with one lookup
/// (the node), not one per object (its name).
#[derive(Default)]
struct Table {
    /// Name → slot. Each name's hash is kept with it, so that a lookup that finds nothing
    /// hands its hash to the insert that follows (an assignment's new handle is hashed
    /// once, not twice) and growing the table moves entries without hashing them again.
    slots_by_name: HashTable<Named>,
    slots: Vec<Slot>,
    /// The first empty slot, which links to the next: reused before the vector grows.
    first_vacant: Option<u32>,
}

struct Named {
    hash: u64,
    /// A handle's is the handle's own name, not a copy of it.
    name: Name,
    slot: u32,
}

enum Slot {
    Full(Entry),
    Vacant { next: Option<u32> },
}

fn hash_of(name: &str) -> u64 {
    let mut hasher = WordHash::default();
    hasher.write(name.as_bytes());
    hasher.finish()
}

impl Table {
    fn len(&self) -> usize {
        self.slots_by_name.len()
    }

    /// The slot of `name`, with the hash of `name` for [`Table::insert`].
    fn find(&self, name: &str) -> (u64, Option<u32>) {
        let hash = hash_of(name);
        let slot = self
            .slots_by_name
            .find(hash, |named| {
                named.hash == hash && named.name.as_str() == name
            })
            .map(|named| named.slot);
        (hash, slot)
    }

    fn slot(&self, name: &str) -> Option<u32> {
        self.find(name).1
    }

    fn entry(&self, slot: u32) -> Option<&Entry> {
        match self.slots.get(slot as usize) {
            Some(Slot::Full(entry)) => Some(entry),
            _ => None,
        }
    }

    fn entry_mut(&mut self, slot: u32) -> Option<&mut Entry> {
        match self.slots.get_mut(slot as usize) {
            Some(Slot::Full(entry)) => Some(entry),
            _ => None,
        }
    }

    fn get(&self, name: &str) -> Option<&Entry> {
        self.slot(name).and_then(|slot| self.entry(slot))
    }

    /// Stores `entry` under `name`, which is absent and hashes to `hash`.
    fn insert(&mut self, hash: u64, name: Name, entry: Entry) -> u32 {
        let slot = match self.first_vacant {
            Some(slot) => {
                let previous = std::mem::replace(&mut self.slots[slot as usize], Slot::Full(entry));
                self.first_vacant = match previous {
                    Slot::Vacant { next } => next,
                    // Only vacant slots are linked.
                    Slot::Full(_) => None,
                };
                slot
            }
            None => {
                self.slots.push(Slot::Full(entry));
                (self.slots.len() - 1) as u32
            }
        };
        self.slots_by_name
            .insert_unique(hash, Named { hash, name, slot }, |named| named.hash);
        slot
    }

    fn remove(&mut self, name: &str) -> Option<Entry> {
        let hash = hash_of(name);
        let (named, _) = self
            .slots_by_name
            .find_entry(hash, |named| {
                named.hash == hash && named.name.as_str() == name
            })
            .ok()?
            .remove();
        let slot = named.slot;
        let vacant = Slot::Vacant {
            next: self.first_vacant,
        };
        match std::mem::replace(self.slots.get_mut(slot as usize)?, vacant) {
            Slot::Full(entry) => {
                self.first_vacant = Some(slot);
                Some(entry)
            }
            Slot::Vacant { .. } => None,
        }
    }

    /// Every entry, in name order (a hash map has none of its own).
    fn in_name_order(&self) -> Vec<&Entry> {
        let mut named: Vec<(&Name, u32)> = self
            .slots_by_name
            .iter()
            .map(|named| (&named.name, named.slot))
            .collect();
        named.sort_unstable_by(|a, b| a.0.cmp(b.0));
        named
            .into_iter()
            .filter_map(|(_, slot)| self.entry(slot))
            .collect()
    }
}

/// A node's objects of each kind: name → slot, in name order.
type NodeIndex = [BTreeMap<Name, u32>; KINDS];

#[derive(Default)]
struct Inner {
    revision: u64,
    tables: [Table; KINDS],
    /// node → its objects per kind, for [`Store::list`] with a node.
    by_node: FastMap<Name, NodeIndex>,
}

impl Inner {
    fn unindex(&mut self, kind: Kind, name: &str, node: Option<&str>) {
        if let Some(node) = node
            && let Some(names) = self.by_node.get_mut(node)
        {
            names[kind.index()].remove(name);
            if names.iter().all(BTreeMap::is_empty) {
                self.by_node.remove(node);
            }
        }
    }

    fn index(&mut self, kind: Kind, name: &Name, node: Option<&Name>, slot: u32) {
        if let Some(node) = node {
            let names = match self.by_node.get_mut(node.as_str()) {
                Some(names) => names,
                None => self.by_node.entry(node.clone()).or_default(),
            };
            names[kind.index()].insert(name.clone(), slot);
        }
    }

    /// Stores a new object under `name`, which is absent and hashes to `hash`.
    fn insert(&mut self, kind: Kind, hash: u64, name: Name, value: Resource) -> u64 {
        let node = value.node().map(Name::new);
        self.revision += 1;
        let revision = self.revision;
        let slot = self.tables[kind.index()].insert(
            hash,
            name.clone(),
            Entry {
                value: Arc::new(value),
                revision,
                node: node.clone(),
            },
        );
        self.index(kind, &name, node.as_ref(), slot);
        revision
    }

    /// Shows `visitor` what [`Store::visit`] promises, under the caller's lock.
    fn visit(&self, kind: Kind, node: Option<&str>, visitor: &mut dyn FnMut(&Arc<Resource>)) {
        let table = &self.tables[kind.index()];
        match node {
            // One object or none (the usual number of pools): no order to establish.
            None if table.len() <= 1 => {
                // Through the names, not the slots: after many deletions most slots may
                // be vacant.
                for named in table.slots_by_name.iter() {
                    if let Some(entry) = table.entry(named.slot) {
                        visitor(&entry.value);
                    }
                }
            }
            None => {
                for entry in table.in_name_order() {
                    visitor(&entry.value);
                }
            }
            Some(node) => {
                if let Some(names) = self.by_node.get(node) {
                    for &slot in names[kind.index()].values() {
                        if let Some(entry) = table.entry(slot) {
                            visitor(&entry.value);
                        }
                    }
                }
            }
        }
    }
}

/// The key to store `value` under: the handle's own name for a handle (shared, not copied:
/// there is one handle per assignment), else a new one.
fn key_of(value: &Resource, name: &str) -> Name {
    match value {
        Resource::IPAMHandle(handle) if handle.handle_id == *name => handle.handle_id.clone(),
        _ => Name::new(name),
    }
}

/// See the module docs.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        // A step that panicked while changing an object in place (`apply`) may have left it
        // half-changed; refuse to go on rather than serve it.
        self.inner.lock().map_err(|_| StoreError::Backend {
            location: "memory".to_string(),
            what: "locking the store".to_string(),
            source:
                "a thread panicked while changing the store; its contents can no longer be trusted"
                    .into(),
        })
    }
}

fn stale(kind: Kind, name: &str, expected: &Revision) -> StoreError {
    StoreError::Conflict {
        kind,
        name: name.to_string(),
        expected: expected.clone(),
    }
}

fn versioned(entry: &Entry) -> Versioned {
    Versioned {
        value: Arc::clone(&entry.value),
        revision: Revision::number(entry.revision),
    }
}

impl Store for MemoryStore {
    fn get(&self, kind: Kind, name: &str) -> Result<Option<Versioned>, StoreError> {
        let inner = self.lock()?;
        Ok(inner.tables[kind.index()].get(name).map(versioned))
    }

    fn list(&self, kind: Kind, node: Option<&str>) -> Result<Vec<Versioned>, StoreError> {
        let inner = self.lock()?;
        let mut listed = Vec::new();
        let table = &inner.tables[kind.index()];
        match node {
            None => listed.extend(table.in_name_order().into_iter().map(versioned)),
            Some(node) => {
                if let Some(names) = inner.by_node.get(node) {
                    listed.extend(
                        names[kind.index()]
                            .values()
                            .filter_map(|&slot| table.entry(slot))
                            .map(versioned),
                    );
                }
            }
        }
        Ok(listed)
    }

    fn visit(
        &self,
        kind: Kind,
        node: Option<&str>,
        visitor: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        self.lock()?.visit(kind, node, visitor);
        Ok(())
    }

    fn visit_each(
        &self,
        reads: &[Read<'_>],
        visitor: &mut ReadVisitor<'_>,
    ) -> Result<(), StoreError> {
        let inner = self.lock()?;
        for (index, read) in reads.iter().enumerate() {
            inner.visit(read.kind, read.node, &mut |resource| {
                visitor(index, resource)
            });
        }
        Ok(())
    }

    fn create(&self, value: Resource) -> Result<Revision, StoreError> {
        let kind = value.kind();
        let name = value.name();
        let mut inner = self.lock()?;
        let (hash, slot) = inner.tables[kind.index()].find(&name);
        if slot.is_some() {
            return Err(StoreError::AlreadyExists { kind, name });
        }
        let key = key_of(&value, &name);
        Ok(Revision::number(inner.insert(kind, hash, key, value)))
    }

    fn update(&self, value: Resource, revision: &Revision) -> Result<Revision, StoreError> {
        let kind = value.kind();
        let name = value.name();
        let mut inner = self.lock()?;
        let Some(slot) = inner.tables[kind.index()].slot(&name) else {
            return Err(StoreError::NotFound { kind, name });
        };
        let old_node = match inner.tables[kind.index()].entry(slot) {
            None => return Err(StoreError::NotFound { kind, name }),
            Some(entry) if Some(entry.revision) != revision.as_number() => {
                return Err(stale(kind, &name, revision));
            }
            Some(entry) => entry.node.clone(),
        };
        let node = value.node().map(Name::new);
        if old_node != node {
            inner.unindex(kind, &name, old_node.as_deref());
            inner.index(kind, &Name::new(&name), node.as_ref(), slot);
        }
        inner.revision += 1;
        let new_revision = inner.revision;
        // Present: checked above, under the same lock.
        if let Some(entry) = inner.tables[kind.index()].entry_mut(slot) {
            *entry = Entry {
                value: Arc::new(value),
                revision: new_revision,
                node,
            };
        }
        Ok(Revision::number(new_revision))
    }

    fn delete(&self, kind: Kind, name: &str, revision: &Revision) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        match inner.tables[kind.index()].get(name) {
            None => {
                return Err(StoreError::NotFound {
                    kind,
                    name: name.to_string(),
                });
            }
            Some(entry) if Some(entry.revision) != revision.as_number() => {
                return Err(stale(kind, name, revision));
            }
            Some(_) => {}
        }
        let node = inner.tables[kind.index()]
            .remove(name)
            .and_then(|entry| entry.node);
        inner.unindex(kind, name, node.as_deref());
        inner.revision += 1;
        Ok(())
    }

    fn apply(&self, kind: Kind, name: &str, step: &mut Step<'_>) -> Result<(), StoreError> {
        self.apply_locked(kind, name, step)
    }

    /// The global revision counter, which every write (deletes too) moves on.
    fn generation(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.revision)
    }
}

impl MemoryStore {
    /// [`Store::apply`] under the lock: the step sees the stored object itself (copied
    /// only if a reader still holds it), so nothing is copied and nothing can conflict.
    fn apply_locked(&self, kind: Kind, name: &str, step: &mut Step<'_>) -> Result<(), StoreError> {
        let mut guard = self.lock()?;
        let inner = &mut *guard;
        let table = &mut inner.tables[kind.index()];
        let (hash, slot) = table.find(name);
        let found = slot.and_then(|slot| Some(slot).zip(table.entry_mut(slot)));
        let Some((slot, entry)) = found else {
            if let Decision::Put(value) = step(None) {
                let key = key_of(&value, name);
                inner.insert(kind, hash, key, value);
            }
            return Ok(());
        };
        match step(Some(Arc::make_mut(&mut entry.value))) {
            Decision::Keep => return Ok(()),
            Decision::Delete => {
                let node = table.remove(name).and_then(|entry| entry.node);
                inner.unindex(kind, name, node.as_deref());
                inner.revision += 1;
                return Ok(());
            }
            Decision::Put(value) => entry.value = Arc::new(value),
            Decision::Updated => {}
        }
        inner.revision += 1;
        entry.revision = inner.revision;
        let new_node = entry.value.node();
        if new_node != entry.node.as_deref() {
            let old = entry.node.take();
            let new = new_node.map(Name::new);
            entry.node = new.clone();
            inner.unindex(kind, name, old.as_deref());
            inner.index(kind, &Name::new(name), new.as_ref(), slot);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_the_compare_and_swap_contract() {
        super::super::conformance::run(&super::MemoryStore::new());
    }
}
