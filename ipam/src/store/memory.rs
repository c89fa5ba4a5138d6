//! The in-memory store: for tests and benchmarks, and for anything that needs IPAM within
//! one process only. One mutex over plain maps; the revision is a global counter, as in etcd.

use std::collections::{BTreeSet, HashMap};
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
    objects: [HashMap<String, Entry>; 6],
    /// node → names per kind, for [`Store::list`] with a node.
    by_node: HashMap<String, [BTreeSet<String>; 6]>,
}

impl Inner {
    fn unindex(&mut self, kind: Kind, name: &str, node: Option<&str>) {
        if let Some(node) = node {
            if let Some(names) = self.by_node.get_mut(node) {
                names[kind.index()].remove(name);
                if names.iter().all(BTreeSet::is_empty) {
                    self.by_node.remove(node);
                }
            }
        }
    }

    fn index(&mut self, kind: Kind, name: &str, node: Option<&str>) {
        if let Some(node) = node {
            if let Some(names) = self.by_node.get_mut(node) {
                names[kind.index()].insert(name.to_string());
            } else {
                let mut names: [BTreeSet<String>; 6] = Default::default();
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
            None => {
                // Name order, as the trait promises (a hash map has none of its own).
                let mut entries: Vec<(&String, &Entry)> = objects.iter().collect();
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
