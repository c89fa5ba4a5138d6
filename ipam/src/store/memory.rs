//! The in-memory store: for tests and benchmarks, and for anything that needs IPAM within
//! one process only. One mutex over plain maps; the revision is a global counter, as in etcd.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Decision, Revision, Step, Store, StoreError, Versioned, Visitor};
use crate::model::{Kind, Resource};
use crate::name::Name;

/// The key to store `value` under: the handle's own name for a handle (shared, not copied:
/// there is one handle per assignment), else a new one.
fn key_of(value: &Resource, name: &str) -> Name {
    match value {
        Resource::IPAMHandle(handle) if handle.handle_id == *name => handle.handle_id.clone(),
        _ => Name::new(name),
    }
}

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
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
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

struct Entry {
    value: Arc<Resource>,
    revision: u64,
    node: Option<String>,
}

#[derive(Default)]
struct Inner {
    revision: u64,
    /// Keyed by [`Name`]: a handle's key is the handle's own name, not a copy of it.
    objects: [FastMap<Name, Entry>; Kind::COUNT],
    /// node → names per kind, for [`Store::list`] with a node.
    by_node: FastMap<String, [BTreeSet<String>; Kind::COUNT]>,
}

impl Inner {
    fn unindex(&mut self, kind: Kind, name: &str, node: Option<&str>) {
        if let Some(node) = node
            && let Some(names) = self.by_node.get_mut(node)
        {
            names[kind.index()].remove(name);
            if names.iter().all(BTreeSet::is_empty) {
                self.by_node.remove(node);
            }
        }
    }

    fn index(&mut self, kind: Kind, name: &str, node: Option<&str>) {
        if let Some(node) = node {
            if let Some(names) = self.by_node.get_mut(node) {
                names[kind.index()].insert(name.to_string());
            } else {
                let mut names: [BTreeSet<String>; Kind::COUNT] = Default::default();
                names[kind.index()].insert(name.to_string());
                self.by_node.insert(node.to_string(), names);
            }
        }
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

impl Store for MemoryStore {
    fn get(&self, kind: Kind, name: &str) -> Result<Option<Versioned>, StoreError> {
        let inner = self.lock()?;
        Ok(inner.objects[kind.index()]
            .get(name)
            .map(|entry| Versioned {
                value: Arc::clone(&entry.value),
                revision: Revision::number(entry.revision),
            }))
    }

    fn list(&self, kind: Kind, node: Option<&str>) -> Result<Vec<Versioned>, StoreError> {
        let inner = self.lock()?;
        let objects = &inner.objects[kind.index()];
        let versioned = |entry: &Entry| Versioned {
            value: Arc::clone(&entry.value),
            revision: Revision::number(entry.revision),
        };
        Ok(match node {
            // One object or none (the usual number of pools): no order to establish.
            None if objects.len() <= 1 => objects.values().map(versioned).collect(),
            None => {
                // Name order, as the trait promises (a hash map has none of its own).
                let mut entries: Vec<(&Name, &Entry)> = objects.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                entries
                    .into_iter()
                    .map(|(_, entry)| versioned(entry))
                    .collect()
            }
            Some(node) => match inner.by_node.get(node) {
                None => Vec::new(),
                Some(names) => names[kind.index()]
                    .iter()
                    .filter_map(|name| objects.get(name.as_str()))
                    .map(versioned)
                    .collect(),
            },
        })
    }

    fn visit(
        &self,
        kind: Kind,
        node: Option<&str>,
        visitor: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        let inner = self.lock()?;
        let objects = &inner.objects[kind.index()];
        match node {
            None if objects.len() <= 1 => {
                for entry in objects.values() {
                    visitor(&entry.value);
                }
            }
            None => {
                let mut entries: Vec<(&Name, &Entry)> = objects.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (_, entry) in entries {
                    visitor(&entry.value);
                }
            }
            Some(node) => {
                if let Some(names) = inner.by_node.get(node) {
                    for entry in names[kind.index()]
                        .iter()
                        .filter_map(|name| objects.get(name.as_str()))
                    {
                        visitor(&entry.value);
                    }
                }
            }
        }
        Ok(())
    }

    fn create(&self, value: Resource) -> Result<Revision, StoreError> {
        let kind = value.kind();
        let name = value.name();
        let node = value.node().map(str::to_string);
        let mut inner = self.lock()?;
        if inner.objects[kind.index()].contains_key(name.as_str()) {
            return Err(StoreError::AlreadyExists { kind, name });
        }
        inner.revision += 1;
        let revision = inner.revision;
        inner.index(kind, &name, node.as_deref());
        inner.objects[kind.index()].insert(
            key_of(&value, &name),
            Entry {
                value: Arc::new(value),
                revision,
                node,
            },
        );
        Ok(Revision::number(revision))
    }

    fn update(&self, value: Resource, revision: &Revision) -> Result<Revision, StoreError> {
        let kind = value.kind();
        let name = value.name();
        let node = value.node().map(str::to_string);
        let mut inner = self.lock()?;
        let old_node = match inner.objects[kind.index()].get(name.as_str()) {
            None => return Err(StoreError::NotFound { kind, name }),
            Some(entry) if Some(entry.revision) != revision.as_number() => {
                return Err(stale(kind, &name, revision));
            }
            Some(entry) => entry.node.clone(),
        };
        if old_node != node {
            inner.unindex(kind, &name, old_node.as_deref());
            inner.index(kind, &name, node.as_deref());
        }
        inner.revision += 1;
        let new_revision = inner.revision;
        // Present: checked above, under the same lock.
        if let Some(entry) = inner.objects[kind.index()].get_mut(name.as_str()) {
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
        let node = match inner.objects[kind.index()].get(name) {
            None => {
                return Err(StoreError::NotFound {
                    kind,
                    name: name.to_string(),
                });
            }
            Some(entry) if Some(entry.revision) != revision.as_number() => {
                return Err(stale(kind, name, revision));
            }
            Some(entry) => entry.node.clone(),
        };
        inner.objects[kind.index()].remove(name);
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
        let objects = &mut inner.objects[kind.index()];
        let Some(entry) = objects.get_mut(name) else {
            if let Decision::Put(value) = step(None) {
                let node = value.node().map(str::to_string);
                inner.revision += 1;
                let revision = inner.revision;
                inner.index(kind, name, node.as_deref());
                inner.objects[kind.index()].insert(
                    key_of(&value, name),
                    Entry {
                        value: Arc::new(value),
                        revision,
                        node,
                    },
                );
            }
            return Ok(());
        };
        let decision = step(Some(Arc::make_mut(&mut entry.value)));
        let reindex = match decision {
            Decision::Keep => return Ok(()),
            Decision::Delete => {
                let node = objects.remove(name).and_then(|entry| entry.node);
                inner.unindex(kind, name, node.as_deref());
                inner.revision += 1;
                return Ok(());
            }
            Decision::Put(value) => {
                entry.value = Arc::new(value);
                true
            }
            Decision::Updated => true,
        };
        if reindex {
            inner.revision += 1;
            entry.revision = inner.revision;
            let new_node = entry.value.node();
            if new_node != entry.node.as_deref() {
                let old = entry.node.take();
                let new = new_node.map(str::to_string);
                entry.node = new.clone();
                inner.unindex(kind, name, old.as_deref());
                inner.index(kind, name, new.as_deref());
            }
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
