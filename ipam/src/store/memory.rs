//! The in-memory store: for tests and benchmarks, and for anything that needs IPAM within
//! one process only. One mutex over plain maps; the revision is a global counter, as in etcd.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Revision, Store, StoreError, Versioned};
use crate::model::{Kind, Resource};

struct Entry {
    value: Arc<Resource>,
    revision: u64,
    node: Option<String>,
}

#[derive(Default)]
struct Inner {
    revision: u64,
    objects: [BTreeMap<String, Entry>; 6],
    /// (kind, node) → names, for [`Store::list`] with a node.
    by_node: HashMap<(Kind, String), BTreeSet<String>>,
}

impl Inner {
    fn unindex(&mut self, kind: Kind, name: &str, node: Option<&str>) {
        if let Some(node) = node {
            let key = (kind, node.to_string());
            if let Some(names) = self.by_node.get_mut(&key) {
                names.remove(name);
                if names.is_empty() {
                    self.by_node.remove(&key);
                }
            }
        }
    }

    fn index(&mut self, kind: Kind, name: &str, node: Option<&str>) {
        if let Some(node) = node {
            self.by_node
                .entry((kind, node.to_string()))
                .or_default()
                .insert(name.to_string());
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

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated (every write is
        // a single insert or remove), so a poisoned lock is still safe to use.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let inner = self.lock();
        Ok(inner.objects[kind.index()]
            .get(name)
            .map(|entry| Versioned {
                value: Arc::clone(&entry.value),
                revision: Revision::number(entry.revision),
            }))
    }

    fn list(&self, kind: Kind, node: Option<&str>) -> Result<Vec<Versioned>, StoreError> {
        let inner = self.lock();
        let objects = &inner.objects[kind.index()];
        let versioned = |entry: &Entry| Versioned {
            value: Arc::clone(&entry.value),
            revision: Revision::number(entry.revision),
        };
        Ok(match node {
            None => objects.values().map(versioned).collect(),
            Some(node) => match inner.by_node.get(&(kind, node.to_string())) {
                None => Vec::new(),
                Some(names) => names
                    .iter()
                    .filter_map(|name| objects.get(name))
                    .map(versioned)
                    .collect(),
            },
        })
    }

    fn create(&self, value: Resource) -> Result<Revision, StoreError> {
        let kind = value.kind();
        let name = value.name();
        let node = value.node().map(str::to_string);
        let mut inner = self.lock();
        if inner.objects[kind.index()].contains_key(&name) {
            return Err(StoreError::AlreadyExists { kind, name });
        }
        inner.revision += 1;
        let revision = inner.revision;
        inner.index(kind, &name, node.as_deref());
        inner.objects[kind.index()].insert(
            name,
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
        let mut inner = self.lock();
        let old_node = match inner.objects[kind.index()].get(&name) {
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
        inner.objects[kind.index()].insert(
            name,
            Entry {
                value: Arc::new(value),
                revision: new_revision,
                node,
            },
        );
        Ok(Revision::number(new_revision))
    }

    fn delete(&self, kind: Kind, name: &str, revision: &Revision) -> Result<(), StoreError> {
        let mut inner = self.lock();
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
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_the_compare_and_swap_contract() {
        super::super::conformance::run(&super::MemoryStore::new());
    }
}
