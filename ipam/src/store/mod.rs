//! Where IPAM keeps its objects: a key-value store with compare-and-swap.
//!
//! Every object is addressed by kind and name and carries an opaque [`Revision`] that
//! changes on every write. An update or delete names the revision it read; if the object
//! changed since, the store refuses with [`StoreError::Conflict`] and the caller re-reads.
//! That is exactly what etcd offers (a transaction comparing `mod_revision`) and what the
//! Kubernetes API offers (`replace` with `metadata.resourceVersion`), so either can back
//! this trait with no change to the IPAM code. There are no multi-object transactions:
//! IPAM orders its single-object writes so that a crash between any two leaves a state
//! that [`crate::Ipam::check`] names and [`crate::Ipam::gc`] finishes.

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::model::{Kind, Resource};

/// An object's version. Numeric for the stores here and etcd (mod revision); a string for
/// Kubernetes, whose `resourceVersion` is documented as opaque. Only ever compared for
/// equality and handed back to the store that issued it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision(RevisionRepr);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RevisionRepr {
    Number(u64),
    Text(Arc<str>),
}

impl Revision {
    pub fn number(value: u64) -> Revision {
        Revision(RevisionRepr::Number(value))
    }

    pub fn text(value: &str) -> Revision {
        Revision(RevisionRepr::Text(Arc::from(value)))
    }

    pub fn as_number(&self) -> Option<u64> {
        match &self.0 {
            RevisionRepr::Number(value) => Some(*value),
            RevisionRepr::Text(_) => None,
        }
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            RevisionRepr::Number(value) => write!(f, "{value}"),
            RevisionRepr::Text(value) => f.write_str(value),
        }
    }
}

/// An object as read, with the revision to hand back when writing it.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub value: Arc<Resource>,
    pub revision: Revision,
}

/// Store failures. `Conflict`, `AlreadyExists` and `NotFound` on a write are the
/// compare-and-swap outcomes IPAM retries; the rest are reported.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name} changed since it was read (revision {expected} is stale)")]
    Conflict {
        kind: Kind,
        name: String,
        expected: Revision,
    },
    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: Kind, name: String },
    #[error("{kind} {name} does not exist")]
    NotFound { kind: Kind, name: String },
    #[error("datastore {location}: {what}: {source}")]
    Backend {
        location: String,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("datastore {location}: {kind} {name} does not parse: {problem}")]
    Corrupt {
        location: String,
        kind: Kind,
        name: String,
        problem: String,
    },
    #[error(
        "{path}: not a tortie datastore ({why}); point --datastore at a tortie database or at a path that does not exist yet"
    )]
    Foreign { path: PathBuf, why: String },
}

impl StoreError {
    /// Whether re-reading and trying again can succeed.
    pub fn is_contention(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. }
                | StoreError::AlreadyExists { .. }
                | StoreError::NotFound { .. }
        )
    }
}

/// What a read-modify-write step decided about the object it was shown.
pub enum Decision {
    /// Write this value (create the object if it was absent).
    Put(Resource),
    /// The step changed the object it was shown, in place: write that.
    Updated,
    /// Delete the object (nothing if it was absent).
    Delete,
    /// Write nothing. A step that returns this must not have changed the object.
    Keep,
}

/// A read-modify-write step, as [`Store::apply`] runs it.
pub type Step<'a> = dyn FnMut(Option<&mut Resource>) -> Decision + 'a;

/// What [`Store::visit`] shows each object to: the shared object itself, which the visitor
/// may keep (a reference count, not a copy).
pub type Visitor<'a> = dyn FnMut(&Arc<Resource>) + 'a;

/// One of the reads [`Store::visit_each`] makes: every object of a kind, or those of one
/// node, as [`Store::visit`] would show them.
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    pub kind: Kind,
    pub node: Option<&'a str>,
}

impl<'a> Read<'a> {
    /// Every object of `kind`.
    pub fn all(kind: Kind) -> Read<'a> {
        Read { kind, node: None }
    }

    /// The objects of `kind` that belong to `node`.
    pub fn of_node(kind: Kind, node: &'a str) -> Read<'a> {
        Read {
            kind,
            node: Some(node),
        }
    }
}

/// What [`Store::visit_each`] shows each object to, with the index of the read (in the
/// slice it was given) that found it.
pub type ReadVisitor<'a> = dyn FnMut(usize, &Arc<Resource>) + 'a;

/// A key-value store with per-object compare-and-swap. See the module docs.
pub trait Store: Send + Sync {
    /// One object, or `None`.
    fn get(&self, kind: Kind, name: &str) -> Result<Option<Versioned>, StoreError>;

    /// Every object of a kind, in name order; with `node`, only those that belong to it
    /// ([`Resource::node`]): an indexed read, not a scan.
    fn list(&self, kind: Kind, node: Option<&str>) -> Result<Vec<Versioned>, StoreError>;

    /// A borrowed read: shows `visitor` every object that [`Store::list`] would return, in
    /// the same order, without collecting them or their revisions. For reads that only decide
    /// (IPAM's hot path reads a node's affinities and blocks this way); a write still goes
    /// through [`Store::apply`] or a compare-and-swap, which read again. This default is
    /// `list`; a store that holds objects in memory overrides it to show them in place,
    /// under its lock, so `visitor` must not call back into the store.
    fn visit(
        &self,
        kind: Kind,
        node: Option<&str>,
        visitor: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        for versioned in self.list(kind, node)? {
            visitor(&versioned.value);
        }
        Ok(())
    }

    /// Several borrowed reads in one call: shows `visitor` what [`Store::visit`] would for
    /// each of `reads`, in turn. This default is one `visit` after another; the memory
    /// store overrides it to make them all under one lock, and SQLite in one read
    /// transaction (so they also see one state of the store). An assignment starts with
    /// five reads this way.
    fn visit_each(
        &self,
        reads: &[Read<'_>],
        visitor: &mut ReadVisitor<'_>,
    ) -> Result<(), StoreError> {
        for (index, read) in reads.iter().enumerate() {
            self.visit(read.kind, read.node, &mut |resource| {
                visitor(index, resource)
            })?;
        }
        Ok(())
    }

    /// Creates an object; `AlreadyExists` if its name is taken.
    fn create(&self, value: Resource) -> Result<Revision, StoreError>;

    /// Replaces an object if it is still at `revision`; `Conflict` if it changed,
    /// `NotFound` if it is gone.
    fn update(&self, value: Resource, revision: &Revision) -> Result<Revision, StoreError>;

    /// Deletes an object if it is still at `revision`; `Conflict` if it changed,
    /// `NotFound` if it is gone.
    fn delete(&self, kind: Kind, name: &str, revision: &Revision) -> Result<(), StoreError>;

    /// The store's generation: a number that changes on every committed create, update or
    /// delete of any object, by this handle or any other (another process on the same
    /// SQLite file included), and never goes back. It is one cheap read, so a watcher can
    /// poll it every few hundred milliseconds and re-read what it watches only when it
    /// moved. Equal numbers mean nothing was written in between; a larger one says that
    /// something was, not what or how much. (Compare only numbers from one store; etcd's
    /// header revision and a Kubernetes list's resourceVersion give the same signal.)
    ///
    /// This default has nothing to offer and says so; every store here overrides it.
    fn generation(&self) -> Result<u64, StoreError> {
        Err(StoreError::Backend {
            location: std::any::type_name::<Self>().to_string(),
            what: "reading the store's generation".to_string(),
            source: "this store offers no change signal; list the objects to see changes".into(),
        })
    }

    /// Reads one object, lets `step` decide, and writes the decision. This default is a
    /// `get` and then a compare-and-swap on the revision read: if another writer got there
    /// first it fails with a contention error ([`StoreError::is_contention`]) and the caller
    /// runs the step again on a fresh read, which is what etcd and Kubernetes offer. A store
    /// that can hold the object still while the step runs (the memory store under its lock,
    /// SQLite inside its write transaction) overrides this to do it in one go, with no
    /// contention errors and no copy of the object.
    fn apply(&self, kind: Kind, name: &str, step: &mut Step<'_>) -> Result<(), StoreError> {
        let current = self.get(kind, name)?;
        let mut copy: Option<Resource> =
            current.as_ref().map(|versioned| (*versioned.value).clone());
        let decision = step(copy.as_mut());
        match (decision, current, copy) {
            (Decision::Keep, _, _) | (Decision::Delete, None, _) | (Decision::Updated, None, _) => {
                Ok(())
            }
            (Decision::Put(value), None, _) => self.create(value).map(|_| ()),
            (Decision::Put(value), Some(read), _) => self.update(value, &read.revision).map(|_| ()),
            (Decision::Updated, Some(read), Some(changed)) => {
                self.update(changed, &read.revision).map(|_| ())
            }
            (Decision::Updated, Some(_), None) => Ok(()),
            (Decision::Delete, Some(read), _) => self.delete(kind, name, &read.revision),
        }
    }
}

/// A store behind a `Box` or an `Arc` is the store itself.
macro_rules! forward_store {
    ($($pointer:ident),*) => {$(
        impl<T: Store + ?Sized> Store for $pointer<T> {
            fn get(&self, kind: Kind, name: &str) -> Result<Option<Versioned>, StoreError> {
                (**self).get(kind, name)
            }
            fn list(&self, kind: Kind, node: Option<&str>) -> Result<Vec<Versioned>, StoreError> {
                (**self).list(kind, node)
            }
            fn visit(
                &self,
                kind: Kind,
                node: Option<&str>,
                visitor: &mut Visitor<'_>,
            ) -> Result<(), StoreError> {
                (**self).visit(kind, node, visitor)
            }
            fn visit_each(
                &self,
                reads: &[Read<'_>],
                visitor: &mut ReadVisitor<'_>,
            ) -> Result<(), StoreError> {
                (**self).visit_each(reads, visitor)
            }
            fn create(&self, value: Resource) -> Result<Revision, StoreError> {
                (**self).create(value)
            }
            fn update(&self, value: Resource, revision: &Revision) -> Result<Revision, StoreError> {
                (**self).update(value, revision)
            }
            fn delete(&self, kind: Kind, name: &str, revision: &Revision) -> Result<(), StoreError> {
                (**self).delete(kind, name, revision)
            }
            fn apply(&self, kind: Kind, name: &str, step: &mut Step<'_>) -> Result<(), StoreError> {
                (**self).apply(kind, name, step)
            }
            fn generation(&self) -> Result<u64, StoreError> {
                (**self).generation()
            }
        }
    )*};
}
forward_store!(Box, Arc);

/// The compare-and-swap contract every backend must keep, run against each one.
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;
    use crate::model::{AffinityState, BlockAffinity, IPPool};

    fn pool(name: &str, cidr: &str) -> Resource {
        Resource::IPPool(IPPool::new(name, cidr.parse().unwrap()))
    }

    fn affinity(node: &str, cidr: &str) -> Resource {
        Resource::BlockAffinity(BlockAffinity {
            node: node.to_string(),
            cidr: cidr.parse().unwrap(),
            state: AffinityState::Pending,
            timestamp: 0,
        })
    }

    pub(crate) fn run(store: &dyn Store) {
        // Create, then a second create of the same name is refused.
        let first = store.create(pool("a", "198.18.0.0/16")).unwrap();
        assert!(matches!(
            store.create(pool("a", "198.19.0.0/16")),
            Err(StoreError::AlreadyExists { .. })
        ));
        let read = store.get(Kind::IPPool, "a").unwrap().unwrap();
        assert_eq!(read.revision, first);
        assert_eq!(*read.value, pool("a", "198.18.0.0/16"));

        // Update at the current revision succeeds and moves the revision on.
        let second = store.update(pool("a", "198.19.0.0/16"), &first).unwrap();
        assert_ne!(first, second);
        // A stale update or delete is refused and changes nothing.
        assert!(matches!(
            store.update(pool("a", "203.0.113.0/24"), &first),
            Err(StoreError::Conflict { .. })
        ));
        assert!(matches!(
            store.delete(Kind::IPPool, "a", &first),
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(
            *store.get(Kind::IPPool, "a").unwrap().unwrap().value,
            pool("a", "198.19.0.0/16")
        );

        // Delete at the current revision; then the object is gone and a recreate gets a
        // revision never seen before (no ABA: the old revision cannot match again).
        store.delete(Kind::IPPool, "a", &second).unwrap();
        assert!(store.get(Kind::IPPool, "a").unwrap().is_none());
        assert!(matches!(
            store.update(pool("a", "198.18.0.0/16"), &second),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.delete(Kind::IPPool, "a", &second),
            Err(StoreError::NotFound { .. })
        ));
        let third = store.create(pool("a", "198.18.0.0/16")).unwrap();
        assert!(third != first && third != second);

        // Lists are per kind, in name order, and filter by node through the index.
        store.create(affinity("node-b", "192.0.2.0/26")).unwrap();
        store.create(affinity("node-a", "192.0.2.64/26")).unwrap();
        let a2 = store.create(affinity("node-a", "192.0.2.128/26")).unwrap();
        let all = store.list(Kind::BlockAffinity, None).unwrap();
        assert_eq!(all.len(), 3);
        let names: Vec<String> = all.iter().map(|v| v.value.name()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(
            store
                .list(Kind::BlockAffinity, Some("node-a"))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            store
                .list(Kind::BlockAffinity, Some("node-c"))
                .unwrap()
                .len(),
            0
        );
        assert_eq!(store.list(Kind::IPPool, None).unwrap().len(), 1);
        // A borrowed read shows what a list returns, in the same order.
        for node in [None, Some("node-a"), Some("node-c")] {
            let mut visited = Vec::new();
            store
                .visit(Kind::BlockAffinity, node, &mut |resource| {
                    visited.push((**resource).clone())
                })
                .unwrap();
            let listed: Vec<Resource> = store
                .list(Kind::BlockAffinity, node)
                .unwrap()
                .iter()
                .map(|versioned| (*versioned.value).clone())
                .collect();
            assert_eq!(visited, listed, "visit and list differ for node {node:?}");
        }
        // Several reads in one call show, read by read, what each visit shows.
        let reads = [
            Read::all(Kind::IPPool),
            Read::of_node(Kind::BlockAffinity, "node-a"),
            Read::all(Kind::BlockAffinity),
        ];
        let mut seen: Vec<(usize, Resource)> = Vec::new();
        store
            .visit_each(&reads, &mut |read, resource| {
                seen.push((read, (**resource).clone()))
            })
            .unwrap();
        let mut expected = Vec::new();
        for (index, read) in reads.iter().enumerate() {
            store
                .visit(read.kind, read.node, &mut |resource| {
                    expected.push((index, (**resource).clone()))
                })
                .unwrap();
        }
        assert_eq!(seen, expected);
        assert_eq!(seen.len(), 1 + 2 + 3);
        let name = BlockAffinity::name_for("node-a", &"192.0.2.128/26".parse().unwrap());
        store.delete(Kind::BlockAffinity, &name, &a2).unwrap();
        assert_eq!(
            store
                .list(Kind::BlockAffinity, Some("node-a"))
                .unwrap()
                .len(),
            1
        );

        cluster_kinds(store);
    }

    /// Node, BGPPeer and BGPConfiguration are stored like every other kind, and the
    /// generation moves on every committed write, deletes included, and on nothing else.
    fn cluster_kinds(store: &dyn Store) {
        use crate::cluster::{BGPConfiguration, BGPPeer, Node, NodeBGPSpec};

        let mut node = Node::new("node-a");
        node.bgp = Some(NodeBGPSpec {
            ipv4_address: Some("198.51.100.10/24".parse().unwrap()),
            as_number: Some(65001),
            ..NodeBGPSpec::default()
        });
        node.labels.insert("rack".to_string(), "r1".to_string());
        let peer = BGPPeer {
            name: "tor".to_string(),
            peer_ip: Some("192.0.2.1:1790".to_string()),
            as_number: Some(64513),
            max_restart_time: Some(std::time::Duration::from_secs(90)),
            ..BGPPeer::default()
        };
        let config = BGPConfiguration {
            node_to_node_mesh_enabled: Some(false),
            ..BGPConfiguration::cluster_default()
        };
        let mut generation = store.generation().unwrap();
        fn moved(store: &dyn Store, generation: &mut u64, what: &str) {
            let now = store.generation().unwrap();
            assert!(
                now > *generation,
                "{what}: generation {now} did not move past {generation}"
            );
            *generation = now;
        }
        let mut revisions = Vec::new();
        for value in [
            Resource::Node(node.clone()),
            Resource::BGPPeer(peer.clone()),
            Resource::BGPConfiguration(config.clone()),
        ] {
            let kind = value.kind();
            let name = value.name();
            revisions.push(store.create(value.clone()).unwrap());
            moved(store, &mut generation, "create");
            assert!(matches!(
                store.create(value.clone()),
                Err(StoreError::AlreadyExists { .. })
            ));
            let read = store.get(kind, &name).unwrap().unwrap();
            assert_eq!(*read.value, value);
            assert_eq!(store.list(kind, None).unwrap().len(), 1);
        }
        let unchanged = store.generation().unwrap();
        assert!(store.get(Kind::Node, "node-a").unwrap().is_some());
        assert!(store.list(Kind::BGPPeer, None).unwrap().len() == 1);
        assert_eq!(
            store.generation().unwrap(),
            unchanged,
            "reads are not writes"
        );

        node.labels
            .insert("route-reflector".to_string(), "true".to_string());
        let updated = store
            .update(Resource::Node(node.clone()), &revisions[0])
            .unwrap();
        moved(store, &mut generation, "update");
        assert!(matches!(
            store.update(Resource::Node(node.clone()), &revisions[0]),
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(store.generation().unwrap(), generation, "a refused write");
        store.delete(Kind::Node, "node-a", &updated).unwrap();
        moved(store, &mut generation, "delete");
        store.delete(Kind::BGPPeer, "tor", &revisions[1]).unwrap();
        moved(store, &mut generation, "delete");
        store
            .apply(Kind::BGPConfiguration, "default", &mut |_| Decision::Keep)
            .unwrap();
        assert_eq!(store.generation().unwrap(), generation, "apply that keeps");
        store
            .apply(Kind::BGPConfiguration, "default", &mut |_| Decision::Delete)
            .unwrap();
        moved(store, &mut generation, "apply that deletes");
        for kind in [Kind::Node, Kind::BGPPeer, Kind::BGPConfiguration] {
            assert!(store.list(kind, None).unwrap().is_empty(), "{kind}");
        }
    }
}
