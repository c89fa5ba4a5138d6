//! Reading and writing cluster resources through [`Ipam`]: typed reads, node registration,
//! and the create-or-update and delete that `tortiectl apply` and `delete` run.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::ClusterError;
use super::model::{BGPConfiguration, BGPPeer, DEFAULT_BGP_CONFIGURATION, Node};
use super::validate::{validate_bgp_configuration, validate_bgp_peer, validate_node};
use crate::assign::TunnelType;
use crate::ipam::{Ipam, Typed, backoff};
use crate::model::{IPPool, IPReservation, Kind, Resource};
use crate::pools::validate_pool;
use crate::store::{Decision, Store, StoreError};

/// What a create-or-update did, in calicoctl's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Applied {
    Created,
    /// The object existed and differed; it now holds the new value.
    Configured,
    /// The object already held exactly this value; nothing was written.
    Unchanged,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        })
    }
}

/// A node as [`Ipam::register_node`] left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub node: Node,
    pub applied: Applied,
}

/// What [`Ipam::delete_node`] removed, and what it had to leave.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedNode {
    /// The Node object, if there was one.
    pub node: Option<Node>,
    /// The node's IPIP and VXLAN tunnel addresses, released.
    pub released_tunnel_addresses: Vec<IpAddr>,
    /// The node's blocks that were empty: deleted, with their affinities.
    pub released_blocks: Vec<IpNet>,
    /// The node's blocks that still hold addresses (pods that were never released): kept,
    /// affinity and all. Release them (`tortiectl ipam release --handle ...`, or GC) and
    /// delete the node again.
    pub kept_blocks: Vec<IpNet>,
}

impl<S: Store> Ipam<S> {
    /// [`Store::generation`]: a number that changes whenever anything in the store changes.
    pub fn generation(&self) -> Result<u64, StoreError> {
        self.store.generation()
    }

    fn read_list<T: Typed + Clone>(&self) -> Result<Vec<T>, ClusterError> {
        Ok(self.list_typed(None)?)
    }

    fn read_one<T: Typed + Clone>(&self, name: &str) -> Result<Option<T>, ClusterError> {
        Ok(self.get_typed::<T>(name)?.map(|(value, _)| value))
    }

    /// Every Node, in name order.
    pub fn nodes(&self) -> Result<Vec<Node>, ClusterError> {
        self.read_list()
    }

    pub fn node(&self, name: &str) -> Result<Option<Node>, ClusterError> {
        self.read_one(name)
    }

    /// Every BGPPeer, in name order. [`BGPPeer::applies_to`] picks a node's.
    pub fn bgp_peers(&self) -> Result<Vec<BGPPeer>, ClusterError> {
        self.read_list()
    }

    pub fn bgp_peer(&self, name: &str) -> Result<Option<BGPPeer>, ClusterError> {
        self.read_one(name)
    }

    /// Every stored BGPConfiguration (`default` and any `node.<name>`).
    pub fn bgp_configurations(&self) -> Result<Vec<BGPConfiguration>, ClusterError> {
        self.read_list()
    }

    /// The cluster-wide BGPConfiguration in effect: the stored `default`, or one with every
    /// default ([`BGPConfiguration::cluster_default`]) when none is stored. Its accessors
    /// (`as_number()`, `listen_port()`, ...) give the effective values either way.
    pub fn bgp_configuration(&self) -> Result<BGPConfiguration, ClusterError> {
        Ok(self
            .read_one::<BGPConfiguration>(DEFAULT_BGP_CONFIGURATION)?
            .unwrap_or_else(BGPConfiguration::cluster_default))
    }

    /// The BGPConfiguration in effect on node `node`: the cluster's
    /// ([`Ipam::bgp_configuration`]) with what the node's own `node.<name>` sets laid over
    /// it (Calico's per-node fields: `listenPort`, `logSeverityScreen`,
    /// `nodeMeshMaxRestartTime`; the mesh switch and the AS are cluster-wide only). The
    /// result keeps the name `default`.
    pub fn bgp_configuration_for(&self, node: &str) -> Result<BGPConfiguration, ClusterError> {
        let mut config = self.bgp_configuration()?;
        if let Some(own) = self.read_one::<BGPConfiguration>(&format!("node.{node}"))? {
            config.listen_port = own.listen_port.or(config.listen_port);
            config.log_severity_screen = own.log_severity_screen.or(config.log_severity_screen);
            config.node_mesh_max_restart_time = own
                .node_mesh_max_restart_time
                .or(config.node_mesh_max_restart_time);
        }
        Ok(config)
    }

    /// Creates or updates the Node `name`: `update` is shown the stored node (or a new,
    /// empty one) and changes what its caller knows (addresses, AS, tunnel addresses),
    /// leaving what others set (labels, `routeReflectorClusterID`) alone. Retried on a fresh
    /// read when another writer overtakes it, so `update` must decide from what it is shown.
    ///
    /// Refused, with nothing written, when the result is invalid or when another Node
    /// already has the same BGP IPv4 or IPv6 address ([`ClusterError::AddressInUse`]). The
    /// check reads the other nodes before the write: two nodes registering one address at
    /// the same instant can both succeed (there are no multi-object transactions, see
    /// [`Store`]); the next registration of either then reports it.
    pub fn register_node(
        &self,
        name: &str,
        mut update: impl FnMut(&mut Node),
    ) -> Result<Registered, ClusterError> {
        let others: Vec<Node> = self
            .nodes()?
            .into_iter()
            .filter(|other| other.name != name)
            .collect();
        let applied = self.write_checked::<Node>("registering a node", name, |current| {
            let mut node = current.cloned().unwrap_or_else(|| Node::new(name));
            update(&mut node);
            node.name = name.to_string();
            validate_node(&node)?;
            refuse_shared_address(&node, &others)?;
            Ok(node)
        })?;
        let node = self.node(name)?.ok_or_else(|| ClusterError::NotFound {
            kind: Kind::Node,
            name: name.to_string(),
        })?;
        Ok(Registered { node, applied })
    }

    /// Creates or replaces a Node as given (what `tortiectl apply` does), with the same
    /// checks as [`Ipam::register_node`].
    pub fn put_node(&self, node: Node) -> Result<Applied, ClusterError> {
        validate_node(&node)?;
        let others: Vec<Node> = self
            .nodes()?
            .into_iter()
            .filter(|other| other.name != node.name)
            .collect();
        refuse_shared_address(&node, &others)?;
        let name = node.name.clone();
        self.write_checked::<Node>("applying a node", &name, |_| Ok(node.clone()))
    }

    pub fn put_bgp_peer(&self, peer: BGPPeer) -> Result<Applied, ClusterError> {
        validate_bgp_peer(&peer)?;
        let name = peer.name.clone();
        self.write_checked::<BGPPeer>("applying a BGP peer", &name, |_| Ok(peer.clone()))
    }

    pub fn put_bgp_configuration(&self, config: BGPConfiguration) -> Result<Applied, ClusterError> {
        validate_bgp_configuration(&config)?;
        let name = config.name.clone();
        self.write_checked::<BGPConfiguration>("applying a BGP configuration", &name, |_| {
            Ok(config.clone())
        })
    }

    /// Removes a node the way `calicoctl delete node` does: its tunnel addresses are
    /// released, its empty blocks given up (block and affinity), and the Node deleted, in
    /// that order, so a run that stops halfway is finished by running it again. Blocks that
    /// still hold addresses are kept and reported. `NotFound` when there is neither a Node
    /// nor any block affinity of that name.
    pub fn delete_node(&self, name: &str) -> Result<DeletedNode, ClusterError> {
        let node = self.node(name)?;
        let affinities = self.affinities(Some(name))?;
        let tunnel_handles = [TunnelType::Ipip, TunnelType::Vxlan].map(|t| t.handle_id(name));
        let mut has_tunnel = false;
        for handle in &tunnel_handles {
            has_tunnel |= self.handle(handle)?.is_some();
        }
        if node.is_none() && affinities.is_empty() && !has_tunnel {
            return Err(ClusterError::NotFound {
                kind: Kind::Node,
                name: name.to_string(),
            });
        }
        let mut deleted = DeletedNode {
            node: node.clone(),
            ..DeletedNode::default()
        };
        for handle in &tunnel_handles {
            deleted
                .released_tunnel_addresses
                .extend(self.release_handle(handle)?);
        }
        deleted.released_blocks = self.release_empty_blocks(name)?;
        deleted.kept_blocks = self
            .affinities(Some(name))?
            .into_iter()
            .map(|affinity| affinity.cidr)
            .collect();
        if node.is_some() {
            self.write_delete::<Node>("deleting a node", name)?;
        }
        tracing::info!(
            node = name,
            tunnel_addresses = deleted.released_tunnel_addresses.len(),
            released_blocks = deleted.released_blocks.len(),
            kept_blocks = deleted.kept_blocks.len(),
            "deleted node"
        );
        Ok(deleted)
    }

    /// Creates or updates any kind an operator writes (IPPool, IPReservation, Node,
    /// BGPPeer, BGPConfiguration), validated as its own `put` or `create` would.
    /// A pool's `cidr` and `blockSize` cannot change once it exists (its blocks are cut
    /// by them), and a pool may not overlap another.
    pub fn apply_resource(&self, resource: Resource) -> Result<Applied, ClusterError> {
        match resource {
            Resource::Node(node) => self.put_node(node),
            Resource::BGPPeer(peer) => self.put_bgp_peer(peer),
            Resource::BGPConfiguration(config) => self.put_bgp_configuration(config),
            Resource::IPPool(pool) => self.put_pool(pool),
            Resource::IPReservation(reservation) => {
                super::validate::validate_name(Kind::IPReservation, &reservation.name)?;
                let name = reservation.name.clone();
                self.write_checked::<IPReservation>("applying a reservation", &name, |_| {
                    Ok(reservation.clone())
                })
            }
            other => Err(ClusterError::ReadOnly { kind: other.kind() }),
        }
    }

    fn put_pool(&self, pool: IPPool) -> Result<Applied, ClusterError> {
        validate_pool(&pool)?;
        refuse_pool_change(&pool, &self.pools()?)?;
        let name = pool.name.clone();
        self.write_checked::<IPPool>("applying a pool", &name, |_| Ok(pool.clone()))
    }

    /// Checks a batch of resources (one `tortiectl apply -f` file) against the store and
    /// against each other, in order, before any of it is written: no two nodes with one
    /// address, no overlapping pools, no pool whose CIDR or block size would change.
    /// Returns the position of the first resource refused, with why. (The store can still
    /// change between this check and the writes; each write checks again.)
    pub fn check_resources(&self, resources: &[Resource]) -> Result<(), (usize, ClusterError)> {
        let at = |index: usize| move |error: ClusterError| (index, error);
        let mut nodes: Vec<Node> = self.nodes().map_err(at(0))?;
        let mut pools: Vec<IPPool> = self.pools().map_err(|e| (0, e.into()))?;
        for (index, resource) in resources.iter().enumerate() {
            match resource {
                Resource::Node(node) => {
                    nodes.retain(|other| other.name != node.name);
                    refuse_shared_address(node, &nodes).map_err(at(index))?;
                    nodes.push(node.clone());
                }
                Resource::IPPool(pool) => {
                    refuse_pool_change(pool, &pools).map_err(at(index))?;
                    pools.retain(|other| other.name != pool.name);
                    pools.push(pool.clone());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Deletes one object by kind and name, as `tortiectl delete` does: a Node through
    /// [`Ipam::delete_node`], a pool through [`Ipam::delete_pool`] (refused while addresses
    /// are in use), the other operator kinds directly. `NotFound` names kind and name.
    pub fn delete_resource(&self, kind: Kind, name: &str) -> Result<(), ClusterError> {
        let not_found = || ClusterError::NotFound {
            kind,
            name: name.to_string(),
        };
        match kind {
            Kind::Node => self.delete_node(name).map(|_| ()),
            Kind::IPPool => {
                if self.pool(name)?.is_none() {
                    return Err(not_found());
                }
                Ok(self.delete_pool(name)?)
            }
            Kind::BGPPeer => self.write_delete::<BGPPeer>("deleting a BGP peer", name),
            Kind::BGPConfiguration => {
                self.write_delete::<BGPConfiguration>("deleting a BGP configuration", name)
            }
            Kind::IPReservation => {
                self.write_delete::<IPReservation>("deleting a reservation", name)
            }
            other => Err(ClusterError::ReadOnly { kind: other }),
        }
    }

    /// Create-or-update through [`Store::apply`]: `decide` is shown the stored value and
    /// returns the one to store (or an error, and nothing is written); an equal value is
    /// not written at all. Retried on a fresh read when overtaken.
    fn write_checked<T: Typed + Clone + PartialEq>(
        &self,
        operation: &str,
        name: &str,
        mut decide: impl FnMut(Option<&T>) -> Result<T, ClusterError>,
    ) -> Result<Applied, ClusterError> {
        for attempt in 0..self.max_attempts {
            let mut outcome: Option<Result<Applied, ClusterError>> = None;
            let applied = self.store.apply(T::KIND, name, &mut |current| {
                let current = match current {
                    None => None,
                    Some(resource) => match T::from_resource(resource) {
                        Some(typed) => Some(typed),
                        None => {
                            outcome = Some(Err(crate::IpamError::WrongKind {
                                kind: T::KIND,
                                name: name.to_string(),
                            }
                            .into()));
                            return Decision::Keep;
                        }
                    },
                };
                match decide(current) {
                    Err(error) => {
                        outcome = Some(Err(error));
                        Decision::Keep
                    }
                    Ok(value) if current == Some(&value) => {
                        outcome = Some(Ok(Applied::Unchanged));
                        Decision::Keep
                    }
                    Ok(value) => {
                        outcome = Some(Ok(if current.is_some() {
                            Applied::Configured
                        } else {
                            Applied::Created
                        }));
                        Decision::Put(value.into())
                    }
                }
            });
            match applied {
                Ok(()) => {
                    return outcome.unwrap_or_else(|| {
                        Err(ClusterError::TooManyConflicts {
                            operation: format!(
                                "{operation}: the datastore finished without running the change"
                            ),
                            attempts: attempt + 1,
                        })
                    });
                }
                Err(error) if error.is_contention() => backoff(attempt),
                Err(error) => return Err(error.into()),
            }
        }
        Err(ClusterError::TooManyConflicts {
            operation: format!("{operation} {name}"),
            attempts: self.max_attempts,
        })
    }

    /// Deletes one object of an operator kind; `NotFound` when it is absent.
    fn write_delete<T: Typed>(&self, operation: &str, name: &str) -> Result<(), ClusterError> {
        for attempt in 0..self.max_attempts {
            let mut existed = false;
            let applied = self.store.apply(T::KIND, name, &mut |current| {
                existed = current.is_some();
                if existed {
                    Decision::Delete
                } else {
                    Decision::Keep
                }
            });
            match applied {
                Ok(()) if existed => return Ok(()),
                Ok(()) => {
                    return Err(ClusterError::NotFound {
                        kind: T::KIND,
                        name: name.to_string(),
                    });
                }
                Err(error) if error.is_contention() => backoff(attempt),
                Err(error) => return Err(error.into()),
            }
        }
        Err(ClusterError::TooManyConflicts {
            operation: format!("{operation} {name}"),
            attempts: self.max_attempts,
        })
    }
}

/// Refuses `node` if one of its BGP addresses is another node's.
fn refuse_shared_address(node: &Node, others: &[Node]) -> Result<(), ClusterError> {
    for address in node.bgp_addresses() {
        if let Some(other) = others
            .iter()
            .find(|other| other.bgp_addresses().contains(&address))
        {
            return Err(ClusterError::AddressInUse {
                node: node.name.clone(),
                address,
                other: other.name.clone(),
            });
        }
    }
    Ok(())
}

/// Refuses `pool` if it overlaps another of `pools`, or changes the CIDR or block size of
/// the one of its name (its blocks are cut by them).
fn refuse_pool_change(pool: &IPPool, pools: &[IPPool]) -> Result<(), ClusterError> {
    for other in pools {
        if other.name == pool.name {
            for (field, before, after) in [
                ("spec.cidr", other.cidr.to_string(), pool.cidr.to_string()),
                (
                    "spec.blockSize",
                    other.block_size.to_string(),
                    pool.block_size.to_string(),
                ),
            ] {
                if before != after {
                    return Err(ClusterError::Invalid {
                        kind: Kind::IPPool,
                        name: pool.name.clone(),
                        field: field.to_string(),
                        problem: format!(
                            "cannot change from {before} to {after} (the pool's blocks are cut by it); create a new pool, move the pods, then delete this one"
                        ),
                    });
                }
            }
        } else if other.cidr.contains(&pool.cidr.network())
            || pool.cidr.contains(&other.cidr.network())
        {
            return Err(crate::IpamError::PoolOverlap {
                pool: pool.name.clone(),
                cidr: pool.cidr,
                other: other.name.clone(),
                other_cidr: other.cidr,
            }
            .into());
        }
    }
    Ok(())
}
