//! The [`Ipam`] handle: typed reads over the store and the one read-modify-write loop every
//! operation is built from.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::block::IPAMBlock;
use crate::cluster::{BGPConfiguration, BGPPeer, Node};
use crate::error::IpamError;
use crate::model::{
    BlockAffinity, IPAM_CONFIG_NAME, IPAMConfig, IPAMHandle, IPPool, IPReservation, Kind, Resource,
    block_name,
};
use crate::store::{Decision, Store, Versioned};

/// How many times one read-modify-write is retried when another writer overtakes it.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 100;

/// IPAM over a store. Cheap to create; holds no state of its own, so any number of them,
/// in any number of processes, may work on one store at once.
pub struct Ipam<S: Store> {
    pub(crate) store: S,
    pub(crate) max_attempts: u32,
}

/// What a read-modify-write step decided.
pub(crate) enum Change<T, R> {
    /// Write this value (create it if absent), then return R.
    Put(T, R),
    /// The step changed the object it was shown in place: write it, then return R.
    Updated(R),
    /// Delete the object (nothing if absent), then return R.
    Delete(R),
    /// Write nothing; return R.
    Keep(R),
}

/// A store kind with a Rust type.
pub(crate) trait Typed: Sized + Into<Resource> {
    const KIND: Kind;
    fn from_resource(resource: &Resource) -> Option<&Self>;
    fn from_resource_mut(resource: &mut Resource) -> Option<&mut Self>;
}

macro_rules! typed {
    ($type:ident) => {
        impl Typed for $type {
            const KIND: Kind = Kind::$type;
            fn from_resource(resource: &Resource) -> Option<&Self> {
                match resource {
                    Resource::$type(value) => Some(value),
                    _ => None,
                }
            }
            fn from_resource_mut(resource: &mut Resource) -> Option<&mut Self> {
                match resource {
                    Resource::$type(value) => Some(value),
                    _ => None,
                }
            }
        }
        impl From<$type> for Resource {
            fn from(value: $type) -> Resource {
                Resource::$type(value)
            }
        }
    };
}

typed!(IPPool);
typed!(IPAMBlock);
typed!(BlockAffinity);
typed!(IPAMHandle);
typed!(IPAMConfig);
typed!(IPReservation);
typed!(Node);
typed!(BGPPeer);
typed!(BGPConfiguration);

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl<S: Store> Ipam<S> {
    pub fn new(store: S) -> Ipam<S> {
        Ipam {
            store,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Changes how many times one write is retried under contention (at least once).
    pub fn with_max_attempts(mut self, attempts: u32) -> Ipam<S> {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub(crate) fn get_typed<T: Typed + Clone>(
        &self,
        name: &str,
    ) -> Result<Option<(T, Versioned)>, IpamError> {
        match self.store.get(T::KIND, name)? {
            None => Ok(None),
            Some(versioned) => {
                let value = T::from_resource(&versioned.value)
                    .ok_or_else(|| IpamError::WrongKind {
                        kind: T::KIND,
                        name: name.to_string(),
                    })?
                    .clone();
                Ok(Some((value, versioned)))
            }
        }
    }

    pub(crate) fn list_typed<T: Typed + Clone>(
        &self,
        node: Option<&str>,
    ) -> Result<Vec<T>, IpamError> {
        self.store
            .list(T::KIND, node)?
            .into_iter()
            .map(|versioned| {
                T::from_resource(&versioned.value)
                    .cloned()
                    .ok_or_else(|| IpamError::WrongKind {
                        kind: T::KIND,
                        name: versioned.value.name(),
                    })
            })
            .collect()
    }

    /// The cluster's IPAMConfig, or the defaults if none is stored.
    pub fn config(&self) -> Result<IPAMConfig, IpamError> {
        Ok(self
            .get_typed::<IPAMConfig>(IPAM_CONFIG_NAME)?
            .map(|(config, _)| config)
            .unwrap_or_default())
    }

    pub fn set_config(&self, config: IPAMConfig) -> Result<(), IpamError> {
        self.modify::<IPAMConfig, ()>("setting IPAMConfig", IPAM_CONFIG_NAME, |_| {
            Ok(Change::Put(config.clone(), ()))
        })
    }

    pub fn pools(&self) -> Result<Vec<IPPool>, IpamError> {
        self.list_typed(None)
    }

    pub fn pool(&self, name: &str) -> Result<Option<IPPool>, IpamError> {
        Ok(self.get_typed::<IPPool>(name)?.map(|(pool, _)| pool))
    }

    pub fn reservations(&self) -> Result<Vec<IPReservation>, IpamError> {
        self.list_typed(None)
    }

    /// Adds or replaces a reservation. Addresses already allocated inside it stay allocated;
    /// automatic assignment skips the rest from now on.
    pub fn set_reservation(&self, reservation: IPReservation) -> Result<(), IpamError> {
        let name = reservation.name.clone();
        self.modify::<IPReservation, ()>("setting IPReservation", &name, |_| {
            Ok(Change::Put(reservation.clone(), ()))
        })
    }

    pub fn block(&self, cidr: &IpNet) -> Result<Option<IPAMBlock>, IpamError> {
        Ok(self
            .get_typed::<IPAMBlock>(&block_name(cidr))?
            .map(|(block, _)| block))
    }

    pub fn blocks(&self) -> Result<Vec<IPAMBlock>, IpamError> {
        self.list_typed(None)
    }

    /// Blocks whose affinity is `node` (one indexed read).
    pub fn blocks_of(&self, node: &str) -> Result<Vec<IPAMBlock>, IpamError> {
        self.list_typed(Some(node))
    }

    /// Affinities, of one node or all.
    pub fn affinities(&self, node: Option<&str>) -> Result<Vec<BlockAffinity>, IpamError> {
        self.list_typed(node)
    }

    pub fn handle(&self, handle_id: &str) -> Result<Option<IPAMHandle>, IpamError> {
        Ok(self
            .get_typed::<IPAMHandle>(handle_id)?
            .map(|(handle, _)| handle))
    }

    pub fn handles(&self) -> Result<Vec<IPAMHandle>, IpamError> {
        self.list_typed(None)
    }

    /// Reads one object, lets `step` decide, and writes the decision atomically
    /// ([`Store::apply`]); when another writer got there first, reads again and lets `step`
    /// decide again, up to `max_attempts` times. `step` must therefore decide from what it
    /// is shown alone, and change the object in place only when it returns
    /// [`Change::Updated`].
    pub(crate) fn modify<T: Typed + Clone, R>(
        &self,
        operation: &str,
        name: &str,
        mut step: impl FnMut(Option<&mut T>) -> Result<Change<T, R>, IpamError>,
    ) -> Result<R, IpamError> {
        for attempt in 0..self.max_attempts {
            let mut outcome: Option<Result<R, IpamError>> = None;
            let applied = self
                .store
                .apply(T::KIND, name, &mut |current: Option<&mut Resource>| {
                    let typed = match current {
                        None => None,
                        Some(resource) => match T::from_resource_mut(resource) {
                            Some(typed) => Some(typed),
                            None => {
                                outcome = Some(Err(IpamError::WrongKind {
                                    kind: T::KIND,
                                    name: name.to_string(),
                                }));
                                return Decision::Keep;
                            }
                        },
                    };
                    match step(typed) {
                        Err(error) => {
                            outcome = Some(Err(error));
                            Decision::Keep
                        }
                        Ok(Change::Keep(result)) => {
                            outcome = Some(Ok(result));
                            Decision::Keep
                        }
                        Ok(Change::Updated(result)) => {
                            outcome = Some(Ok(result));
                            Decision::Updated
                        }
                        Ok(Change::Put(value, result)) => {
                            outcome = Some(Ok(result));
                            Decision::Put(value.into())
                        }
                        Ok(Change::Delete(result)) => {
                            outcome = Some(Ok(result));
                            Decision::Delete
                        }
                    }
                });
            match applied {
                Ok(()) => {
                    return outcome.unwrap_or_else(|| {
                        Err(IpamError::InvalidArgument {
                            what: format!(
                                "{operation}: the datastore finished without running the change"
                            ),
                        })
                    });
                }
                Err(error) if error.is_contention() => {
                    tracing::debug!(operation, kind = %T::KIND, name, attempt, "overtaken by another writer; retrying");
                    backoff(attempt);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(IpamError::TooManyConflicts {
            operation: operation.to_string(),
            attempts: self.max_attempts,
        })
    }
}

/// Waits a little after losing a compare-and-swap race: not at all the first times (the
/// winner is usually done already), then a random, growing delay so that writers that keep
/// colliding spread out instead of colliding again in step.
pub(crate) fn backoff(attempt: u32) {
    if attempt < 2 {
        std::thread::yield_now();
        return;
    }
    let ceiling_micros = 20u64 << attempt.min(10);
    std::thread::sleep(Duration::from_micros(random_below(
        ceiling_micros.min(20_000),
    )));
}

thread_local! {
    static RANDOM: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
}

/// A xorshift step: jitter only, nothing depends on its quality.
fn random_below(bound: u64) -> u64 {
    RANDOM.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x % bound.max(1)
    })
}

/// A stable hash of a node name (FNV-1a): where the node starts looking for a free block.
/// Stable across processes and builds, so a node looks at the same blocks first every time.
pub(crate) fn node_hash(node: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Shared read-only inputs of one assignment.
pub(crate) struct Reserved(pub(crate) Vec<IpNet>);

impl Reserved {
    pub(crate) fn contains(&self, address: std::net::IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&address))
    }

    /// Free addresses of a block automatic assignment may take.
    pub(crate) fn assignable(&self, block: &IPAMBlock) -> u32 {
        if self.0.is_empty() {
            block.unallocated.len() as u32
        } else {
            block.assignable(&|address| self.contains(address))
        }
    }

    /// Whether every address of `block` is reserved.
    pub(crate) fn covers(&self, block: &IpNet) -> bool {
        self.0.iter().any(|net| net.contains(block))
    }
}
