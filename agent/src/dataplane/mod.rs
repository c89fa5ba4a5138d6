//! The dataplane reconciler: makes the kernel's links, addresses, neighbours, routes and
//! sysctls match what the agent wants (DESIGN.md, "How data flows" and "Routing, by pool
//! encapsulation"), over rtnetlink, in the network namespace of the thread that connects.
//!
//! The agent computes a whole [`Desired`] state and calls [`Dataplane::reconcile`], the way
//! a Kubernetes controller works: idempotent, safe to repeat, safe after a crash. It never
//! flushes. Every route it installs carries protocol [`ROUTE_PROTOCOL`] (75, `proto tortie`),
//! so after a restart it tells its own routes from anyone else's: it keeps those still
//! wanted as they are, replaces those that differ, deletes the rest, and never touches a
//! route of another protocol. BGP events go through [`Dataplane::update_routes`], which
//! pipelines its requests (hundreds per `sendmsg`) instead of waiting for each.
//!
//! Choices worth knowing:
//!
//! - A `proto tortie` route is only ever replaced when the kernel says it is ours; new
//!   routes are added with NLM_F_EXCL, so another protocol's route holding the same prefix
//!   (and metric) is reported, never overwritten.
//! - tunl0 is the ipip module's shared fallback device: adopted when IPIP is wanted, left
//!   as it is when not. `vxlan.tortie` is tortie's own and is deleted when not wanted.
//! - Only IPv4 addresses of the tunnel devices are managed; the kernel's IPv6 link-local
//!   on vxlan.tortie stays. `ip_forward` is always on; IPv6 forwarding (which also changes
//!   how the host treats router advertisements) only when an IPv6 route is wanted.
//! - [`Dataplane::update_routes`] trusts what it knows of the kernel (read at connect and
//!   reconcile, kept by its own changes): a route deleted behind its back comes back at
//!   the next [`Dataplane::reconcile`], which re-reads everything.
//!
//! One file per concern: [`plan`] (pure: which route a remote block gets), `links` (tunl0,
//! vxlan.tortie, their addresses), `neighbours` (the VXLAN neighbour and FDB entries),
//! `routes` (kernel routes to and from [`RouteTarget`]s, and the diff), `batch` (the
//! pipelined netlink sender), [`sysctl`] (ip_forward, the protocol's name).

mod batch;
mod error;
mod links;
mod neighbours;
pub mod plan;
mod routes;
pub mod sysctl;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use error::DataplaneError;
pub use links::{TUNL0, VXLAN_DEVICE, host_mtu, ipip_support, vxlan_mac};
pub use plan::{RoutingContext, remote_route};
pub use sysctl::{PROTOCOL_NAMES_DIR, enable_ip_forwarding, write_protocol_name};

/// The route protocol number of every route tortie installs (`proto tortie`). Not one of
/// the numbers `rtnetlink.h` or iproute2's `rt_protos` assign (those stop at 42 below 186).
pub const ROUTE_PROTOCOL: u8 = 75;

/// The prefix of the host side of every pod's veth (Calico's).
pub const POD_LINK_PREFIX: &str = "cali";

/// The VXLAN network identifier of `vxlan.tortie` (Calico's).
pub const VXLAN_VNI: u32 = 4096;
/// The UDP port of `vxlan.tortie` (IANA's VXLAN port, RFC 7348).
pub const VXLAN_PORT: u16 = 4789;

/// Everything the dataplane should hold. What is not here and carries `proto tortie` goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Desired {
    /// The IPIP device, when a pool uses IPIP. `None` leaves an existing tunl0 alone: it
    /// is the ipip module's fallback device, shared with anyone using the module.
    pub tunl0: Option<Tunl0Spec>,
    /// The VXLAN device, when a pool uses VXLAN. `None` deletes `vxlan.tortie`.
    pub vxlan: Option<VxlanSpec>,
    /// The other nodes' VTEPs: one permanent neighbour and one FDB entry each on
    /// `vxlan.tortie`. Entries for VTEPs not listed are removed.
    pub vxlan_peers: Vec<VxlanPeer>,
    /// Every `proto tortie` route wanted in the main table, IPv4 and IPv6.
    pub routes: BTreeMap<IpNet, RouteTarget>,
}

/// tunl0: adopted (the ipip module creates it in every namespace), its only address the
/// node's tunnel address as a /32, its MTU set, up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tunl0Spec {
    pub address: Ipv4Addr,
    pub mtu: u32,
}

/// `vxlan.tortie`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VxlanSpec {
    /// [`VXLAN_VNI`].
    pub vni: u32,
    /// [`VXLAN_PORT`].
    pub port: u16,
    /// [`vxlan_mac`] of the node's name.
    pub mac: [u8; 6],
    /// The node's address: the source of the outer packets.
    pub local: Ipv4Addr,
    /// The host interface carrying `local`.
    pub parent: String,
    /// The node's VXLAN tunnel address, as a /32.
    pub address: Ipv4Addr,
    /// Host MTU − 50.
    pub mtu: u32,
}

/// Another node's VTEP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VxlanPeer {
    /// Its VXLAN tunnel address (the gateway of routes to its blocks).
    pub tunnel_address: Ipv4Addr,
    /// Its `vxlan.tortie` MAC.
    pub mac: [u8; 6],
    /// Its node address: where encapsulated packets go.
    pub node_address: Ipv4Addr,
}

/// Where a route sends packets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteTarget {
    /// Dropped (own blocks: an unallocated address in them goes nowhere).
    Blackhole,
    /// Through a gateway on `device`. `onlink`: the gateway need not be on a subnet of
    /// the device (tunnels, whose only address is a /32).
    Via {
        gateway: IpAddr,
        device: Device,
        onlink: bool,
    },
    /// Directly on `device` (`scope link`), e.g. a pod's /32 on its `cali…` veth.
    Link { device: Device },
}

/// A device a route leaves through.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Device {
    Tunl0,
    Vxlan,
    Named(String),
}

impl Device {
    /// The interface name.
    pub fn name(&self) -> &str {
        match self {
            Device::Tunl0 => TUNL0,
            Device::Vxlan => VXLAN_DEVICE,
            Device::Named(name) => name,
        }
    }

    /// The device called `name`: [`Device::Tunl0`] and [`Device::Vxlan`] for their names,
    /// so a `Named("tunl0")` and `Tunl0` compare equal once both went through here.
    pub fn from_name(name: &str) -> Device {
        match name {
            TUNL0 => Device::Tunl0,
            VXLAN_DEVICE => Device::Vxlan,
            other => Device::Named(other.to_string()),
        }
    }

    fn canonical(&self) -> Device {
        Device::from_name(self.name())
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl RouteTarget {
    /// The same target with its device named canonically (see [`Device::from_name`]).
    fn canonical(&self) -> RouteTarget {
        match self {
            RouteTarget::Blackhole => RouteTarget::Blackhole,
            RouteTarget::Via {
                gateway,
                device,
                onlink,
            } => RouteTarget::Via {
                gateway: *gateway,
                device: device.canonical(),
                onlink: *onlink,
            },
            RouteTarget::Link { device } => RouteTarget::Link {
                device: device.canonical(),
            },
        }
    }

    /// Whether this is a pod's route: `scope link` on a `cali…` veth. The `tortie` CNI
    /// plugin adds it with the pod's veth (ADD), and the kernel deletes it with the veth
    /// (DEL), so the reconciler neither reads, keeps nor removes such routes: were they part
    /// of its state it would delete every pod's route at its next pass, and after a restart
    /// it could not tell a live pod's route from a stale one better than the kernel does.
    pub fn is_pod_route(&self) -> bool {
        matches!(self, RouteTarget::Link { device } if device.name().starts_with(POD_LINK_PREFIX))
    }

    /// The device the route leaves through, if any.
    pub fn device(&self) -> Option<&Device> {
        match self {
            RouteTarget::Blackhole => None,
            RouteTarget::Via { device, .. } | RouteTarget::Link { device } => Some(device),
        }
    }
}

/// As `ip route` writes it.
impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteTarget::Blackhole => f.write_str("blackhole"),
            RouteTarget::Via {
                gateway,
                device,
                onlink,
            } => {
                write!(f, "via {gateway} dev {device}")?;
                if *onlink {
                    f.write_str(" onlink")?;
                }
                Ok(())
            }
            RouteTarget::Link { device } => write!(f, "dev {device} scope link"),
        }
    }
}

/// What a reconcile or route update did. Counts cover every item the dataplane manages
/// (routes, device settings, addresses, neighbour and FDB entries, the sysctl).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub added: usize,
    pub replaced: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Items that could not be made as wanted: the rest went ahead.
    pub failures: Vec<Failure>,
    /// Set when IPIP was asked for (a [`Desired`] with `tunl0`): whether the kernel has it.
    pub ipip: Option<IpipSupport>,
}

/// One item that could not be made as wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// What, e.g. `route 198.18.3.0/26 via 198.51.100.2 dev tunl0 onlink`.
    pub what: String,
    /// Why, e.g. the kernel's error, with the fix when there is one.
    pub why: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

impl Report {
    /// How many items changed.
    pub fn changes(&self) -> usize {
        self.added + self.replaced + self.removed
    }

    /// Whether everything was already as wanted and nothing failed.
    pub fn is_unchanged(&self) -> bool {
        self.changes() == 0 && self.failures.is_empty()
    }

    /// The failures in one line for a log or a status field, at most `shown` of them
    /// spelled out (one missing device can fail thousands of routes), or `None`.
    pub fn failure_summary(&self, shown: usize) -> Option<String> {
        if self.failures.is_empty() {
            return None;
        }
        let mut summary = self
            .failures
            .iter()
            .take(shown.max(1))
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let more = self.failures.len().saturating_sub(shown.max(1));
        if more > 0 {
            summary.push_str(&format!("; and {more} more"));
        }
        Some(summary)
    }

    fn fail(&mut self, what: impl Into<String>, why: impl fmt::Display) {
        let failure = Failure {
            what: what.into(),
            why: why.to_string(),
        };
        tracing::warn!(what = %failure.what, why = %failure.why, "dataplane item failed");
        self.failures.push(failure);
    }

    fn merge(&mut self, other: Report) {
        self.added += other.added;
        self.replaced += other.replaced;
        self.removed += other.removed;
        self.unchanged += other.unchanged;
        self.failures.extend(other.failures);
        if other.ipip.is_some() {
            self.ipip = other.ipip;
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} added, {} replaced, {} removed, {} unchanged, {} failed",
            self.added,
            self.replaced,
            self.removed,
            self.unchanged,
            self.failures.len()
        )
    }
}

/// Whether the kernel can make IPIP tunnels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum IpipSupport {
    Available,
    /// `reason` says what failed and names the fix (`modprobe ipip`, or a VXLAN pool).
    Missing {
        reason: String,
    },
}

impl IpipSupport {
    pub fn is_available(&self) -> bool {
        matches!(self, IpipSupport::Available)
    }
}

impl fmt::Display for IpipSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpipSupport::Available => f.write_str("IPIP available"),
            IpipSupport::Missing { reason } => f.write_str(reason),
        }
    }
}

/// The kernel's dataplane, seen through netlink sockets opened in the network namespace of
/// the thread that called [`Dataplane::connect`]. Needs a tokio runtime.
pub struct Dataplane {
    handle: rtnetlink::Handle,
    connection: tokio::task::JoinHandle<()>,
    sender: batch::Sender,
    links: links::LinkIndex,
    /// The `proto tortie` routes believed to be in the kernel: read at connect and at
    /// every reconcile, kept up to date by every change made. Lets a BGP event that
    /// changes nothing cost no syscall, and tells an update whether a prefix is ours to
    /// replace.
    installed: HashMap<IpNet, RouteTarget>,
    /// The namespace's `net.ipv4.ip_forward` and `net.ipv6.conf.all.forwarding`, opened
    /// with the sockets.
    ip_forward: sysctl::IpForward,
    ipv6_forward: sysctl::IpForward,
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Dataplane {
    /// Opens the netlink sockets (and the `ip_forward` sysctl) in the calling thread's
    /// network namespace and reads the `proto tortie` routes already there. Everything the
    /// dataplane does afterwards happens in that namespace, whichever thread polls it.
    pub async fn connect() -> Result<Dataplane, DataplaneError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| DataplaneError::Socket {
                purpose: "rtnetlink requests",
                source,
            })?;
        let connection = tokio::spawn(connection);
        let sender = batch::Sender::open()?;
        let mut dataplane = Dataplane {
            handle,
            connection,
            sender,
            links: links::LinkIndex::default(),
            installed: HashMap::new(),
            ip_forward: sysctl::IpForward::ipv4(),
            ipv6_forward: sysctl::IpForward::ipv6(),
        };
        dataplane.links = links::LinkIndex::read(&dataplane.handle).await?;
        let in_kernel = routes::dump(&dataplane.handle, &dataplane.links).await?;
        dataplane.installed = routes::installed(&in_kernel);
        Ok(dataplane)
    }

    /// Makes the kernel match `desired`, in this order: `ip_forward`, tunl0, vxlan.tortie,
    /// its neighbours and FDB, routes (missing added, different replaced, `proto tortie`
    /// routes not wanted deleted; other protocols' routes untouched). Idempotent: run
    /// twice, the second run changes nothing. A failing item is reported and the rest
    /// goes ahead; an error means the kernel could not be read or talked to at all.
    #[tracing::instrument(name = "dataplane_reconcile", skip_all, fields(routes = desired.routes.len()))]
    pub async fn reconcile(&mut self, desired: &Desired) -> Result<Report, DataplaneError> {
        let mut report = Report::default();
        match self.ip_forward.enable() {
            Ok(true) => report.replaced += 1,
            Ok(false) => report.unchanged += 1,
            Err(why) => report.fail("net.ipv4.ip_forward=1", why),
        }
        if desired
            .routes
            .keys()
            .any(|prefix| matches!(prefix, IpNet::V6(_)))
        {
            match self.ipv6_forward.enable() {
                Ok(true) => report.replaced += 1,
                Ok(false) => report.unchanged += 1,
                Err(why) => report.fail("net.ipv6.conf.all.forwarding=1", why),
            }
        }
        self.links = links::LinkIndex::read(&self.handle).await?;
        if let Some(spec) = &desired.tunl0 {
            report.merge(links::ensure_tunl0(&self.handle, &self.links, spec).await?);
        }
        match &desired.vxlan {
            Some(spec) => report.merge(links::ensure_vxlan(&self.handle, &self.links, spec).await?),
            None => report.merge(links::remove_vxlan(&self.handle, &self.links).await?),
        }
        self.links = links::LinkIndex::read(&self.handle).await?;
        if desired.vxlan.is_some()
            && let Some(index) = self.links.index(VXLAN_DEVICE)
        {
            report.merge(neighbours::reconcile(&self.handle, index, &desired.vxlan_peers).await?);
        }
        let in_kernel = routes::dump(&self.handle, &self.links).await?;
        let changes = routes::diff(&in_kernel, &desired.routes);
        // Rebuilt from what the kernel has now: the kept routes, then every change made.
        self.installed.clear();
        report.merge(self.apply_route_changes(changes).await?);
        if report.changes() > 0 || !report.failures.is_empty() {
            tracing::info!(%report, "dataplane reconciled");
        } else {
            tracing::debug!(%report, "dataplane already as wanted");
        }
        Ok(report)
    }

    /// Adds or replaces `upserts` and deletes `removals` (their `proto tortie` routes
    /// only), all pipelined; removals go first. An upsert already installed as wanted (as
    /// far as this dataplane knows: it does not re-read the kernel, a reconcile does)
    /// costs nothing.
    #[tracing::instrument(
        name = "dataplane_update_routes",
        skip_all,
        fields(upserts = upserts.len(), removals = removals.len())
    )]
    pub async fn update_routes(
        &mut self,
        upserts: &[(IpNet, RouteTarget)],
        removals: &[IpNet],
    ) -> Result<Report, DataplaneError> {
        let mut changes = routes::Changes::default();
        for (prefix, target) in upserts {
            // Keyed by network, as the kernel keys routes (see routes::diff).
            let prefix = prefix.trunc();
            let target = target.canonical();
            match self.installed.get(&prefix) {
                Some(installed) if *installed == target => changes.unchanged += 1,
                Some(_) => changes.replace.push((prefix, target)),
                None => changes.add.push((prefix, target)),
            }
        }
        changes.remove.extend(
            removals
                .iter()
                .map(|prefix| routes::Removal::ByPrefix(prefix.trunc())),
        );
        let needs_links = changes
            .add
            .iter()
            .chain(&changes.replace)
            .filter_map(|(_, target)| target.device())
            .any(|device| self.links.index(device.name()).is_none());
        if needs_links {
            self.links = links::LinkIndex::read(&self.handle).await?;
        }
        self.apply_route_changes(changes).await
    }

    /// The `proto tortie` routes in the main table now, as the kernel has them. Routes of
    /// ours with a shape tortie never installs (multipath, another metric) are left out.
    pub async fn routes(&mut self) -> Result<BTreeMap<IpNet, RouteTarget>, DataplaneError> {
        self.links = links::LinkIndex::read(&self.handle).await?;
        let in_kernel = routes::dump(&self.handle, &self.links).await?;
        Ok(in_kernel
            .into_iter()
            .filter_map(|(prefix, routes)| {
                routes
                    .into_iter()
                    .find_map(|route| route.target)
                    .map(|target| (prefix, target))
            })
            .collect())
    }

    /// Whether the kernel of this namespace can make IPIP tunnels (see [`ipip_support`]).
    pub async fn ipip_support(&mut self) -> Result<IpipSupport, DataplaneError> {
        links::probe_ipip(&self.handle).await
    }

    /// The MTU of `interface` (see [`host_mtu`]).
    pub async fn host_mtu(&mut self, interface: &str) -> Result<u32, DataplaneError> {
        links::link_mtu(&self.handle, interface).await
    }

    async fn apply_route_changes(
        &mut self,
        changes: routes::Changes,
    ) -> Result<Report, DataplaneError> {
        let applied =
            routes::apply(&mut self.sender, &self.links, changes, &mut self.installed).await?;
        let mut report = applied.report;
        let mut retry = routes::Changes::default();
        if !applied.stale_device.is_empty() {
            // ENODEV: a device was deleted and made again since its index was read
            // (a pod's veth, vxlan.tortie recreated). Read the indexes again, once.
            self.links = links::LinkIndex::read(&self.handle).await?;
            for (prefix, target, replace) in applied.stale_device {
                if replace {
                    retry.replace.push((prefix, target));
                } else {
                    retry.add.push((prefix, target));
                }
            }
        }
        if !applied.conflicts.is_empty() {
            // Adds refused because the prefix's slot (its metric and TOS) is taken
            // (EEXIST): by a route of ours this process did not know about (added behind
            // its back, or left by a run before a restart not reconciled yet), which is
            // replaced or kept; or by another protocol's, which is reported and left alone.
            let in_kernel = routes::dump(&self.handle, &self.links).await?;
            for (prefix, target) in applied.conflicts {
                let ours = in_kernel.get(&prefix).map(Vec::as_slice).unwrap_or(&[]);
                if ours.iter().any(|route| route.is(&target)) {
                    self.installed.insert(prefix, target);
                    report.unchanged += 1;
                } else if ours.iter().any(|route| route.default_slot) {
                    retry.replace.push((prefix, target));
                } else {
                    report.fail(
                        format!("route {prefix} {target}"),
                        "a route of another protocol already holds this prefix in the main \
                         table; tortie leaves other protocols' routes alone: remove it, or \
                         give it another metric",
                    );
                }
            }
        }
        if !retry.add.is_empty() || !retry.replace.is_empty() {
            let again =
                routes::apply(&mut self.sender, &self.links, retry, &mut self.installed).await?;
            report.merge(again.report);
            let unresolved = again
                .conflicts
                .into_iter()
                .map(|(prefix, target)| (prefix, target, "the prefix is taken"))
                .chain(again.stale_device.into_iter().map(|(prefix, target, _)| {
                    (prefix, target, "its device does not exist (ENODEV)")
                }));
            for (prefix, target, why) in unresolved {
                report.fail(format!("route {prefix} {target}"), why);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent can hold a [`Dataplane`] in a task of a multi-threaded runtime and spawn
    /// its futures: its sockets stay in the namespace they were opened in, whichever
    /// thread uses them later. Type-checking the closure is the test; it never runs.
    #[test]
    fn the_dataplane_and_its_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let _check = |dataplane: &mut Dataplane, desired: &Desired| {
            assert_send(dataplane);
            assert_send(&Dataplane::connect());
            assert_send(&dataplane.reconcile(desired));
            assert_send(&dataplane.update_routes(&[], &[]));
            assert_send(&dataplane.routes());
            assert_send(&dataplane.ipip_support());
        };
    }

    #[test]
    fn devices_named_like_the_tunnels_are_the_tunnels() {
        assert_eq!(Device::from_name("tunl0"), Device::Tunl0);
        assert_eq!(Device::from_name("vxlan.tortie"), Device::Vxlan);
        assert_eq!(Device::from_name("eth0"), Device::Named("eth0".to_string()));
        let named = RouteTarget::Link {
            device: Device::Named("vxlan.tortie".to_string()),
        };
        assert_eq!(
            named.canonical(),
            RouteTarget::Link {
                device: Device::Vxlan
            }
        );
    }

    #[test]
    fn a_desired_state_survives_json() {
        let desired = Desired {
            vxlan_peers: vec![VxlanPeer {
                tunnel_address: "198.18.1.1".parse().unwrap(),
                mac: vxlan_mac("node-b"),
                node_address: "198.51.100.2".parse().unwrap(),
            }],
            routes: BTreeMap::from([
                ("198.18.0.0/26".parse().unwrap(), RouteTarget::Blackhole),
                (
                    "198.18.1.0/26".parse().unwrap(),
                    RouteTarget::Via {
                        gateway: "198.18.1.1".parse().unwrap(),
                        device: Device::Vxlan,
                        onlink: true,
                    },
                ),
            ]),
            ..Desired::default()
        };
        let json = serde_json::to_string(&desired).unwrap();
        assert_eq!(serde_json::from_str::<Desired>(&json).unwrap(), desired);
    }

    #[test]
    fn a_failure_summary_spells_out_the_first_few() {
        let mut report = Report::default();
        assert_eq!(report.failure_summary(2), None);
        for n in 0..5 {
            report.fail(format!("route 198.18.{n}.0/26"), "no such device");
        }
        assert_eq!(
            report.failure_summary(2).as_deref(),
            Some(
                "route 198.18.0.0/26: no such device; route 198.18.1.0/26: no such device; \
                 and 3 more"
            )
        );
    }

    #[test]
    fn targets_read_as_ip_route_writes_them() {
        let via = RouteTarget::Via {
            gateway: "198.51.100.2".parse().unwrap(),
            device: Device::Tunl0,
            onlink: true,
        };
        assert_eq!(via.to_string(), "via 198.51.100.2 dev tunl0 onlink");
        assert_eq!(RouteTarget::Blackhole.to_string(), "blackhole");
        let link = RouteTarget::Link {
            device: Device::Named("cali0123456789a".to_string()),
        };
        assert_eq!(link.to_string(), "dev cali0123456789a scope link");
    }
}

#[cfg(test)]
mod pod_route_tests {
    use super::*;

    #[test]
    fn only_link_routes_on_cali_devices_are_pods() {
        let link = |name: &str| RouteTarget::Link {
            device: Device::Named(name.to_string()),
        };
        assert!(link("cali0123456789a").is_pod_route());
        assert!(!link("eth0").is_pod_route());
        assert!(!RouteTarget::Blackhole.is_pod_route());
        let via = RouteTarget::Via {
            gateway: "198.51.100.1".parse().unwrap(),
            device: Device::Named("cali0123456789a".to_string()),
            onlink: false,
        };
        assert!(!via.is_pod_route());
    }
}
