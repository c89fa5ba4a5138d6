//! `tortie-node run`: the agent's core. One task owns the node's state and is fed events —
//! best-route changes from the speaker, datastore changes, local API calls, timers, signals
//! — and after each it brings the speaker (peers, originated prefixes) and the kernel
//! (devices, routes) to what the state asks for.
//!
//! Restart safety: the kernel's `proto tortie` routes outlive the agent. On start the agent
//! treats the ones it finds as stale-but-kept (it is "restarting", RFC 4724's Restart State),
//! announces graceful restart so peers keep its routes, and removes a kept route only once
//! every peer has sent End-of-RIB without it (or the restart time ran out), so a route that
//! is still right is never taken away, not even for a moment.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use ipnet::{IpNet, Ipv4Net};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tortie_autodetect::Detection;
use tortie_bgp::daemon::PeerRow;
use tortie_bgp::neighbor::State;
use tortie_bgp::packet::Family as BgpFamily;
use tortie_bgp::speaker::{GracefulRestartSettings, PeerStatus, RouteChange, SpeakerConfig};
use tortie_ipam::block::ATTRIBUTE_NODE;
use tortie_ipam::model::{EncapsulationMode, Family, IPPool};
use tortie_ipam::{AutoAssignArgs, Ipam, SqliteStore, Store, TunnelType};
use tracing::{error, info, warn};

use crate::api::{self, Call, IpipStatus, NodeStatus, Request, Response};
use crate::dataplane::plan::{IPIP_OVERHEAD, VXLAN_V4_OVERHEAD, tunnel_mtu};
use crate::dataplane::{
    self, Dataplane, Desired, IpipSupport, RouteTarget, RoutingContext, Tunl0Spec, VxlanPeer,
    VxlanSpec,
};
use crate::node::bgp::Bgp;
use crate::node::cluster::{self, ClusterView, NodeRegistration};
use crate::node::config::{DatastoreConfig, NodeConfig, router_id};
use crate::node::http;
use crate::node::mesh::{self, WantedPeer};

/// How many dataplane failures a status line lists (the rest are counted).
const FAILURES_SHOWN: usize = 3;
/// How often the datastore is asked whether anything changed (one cheap read).
const DATASTORE_POLL: Duration = Duration::from_millis(100);
/// How often the node's address is re-detected, besides on netlink address events.
const ADDRESS_RECHECK: Duration = Duration::from_secs(10);
/// How often the whole dataplane is reconciled even when nothing changed: puts back what
/// someone removed behind the agent's back (route updates in between trust the agent's
/// own view of the kernel).
const RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// For this long after start every peer must be up for the node to be ready; afterwards
/// one is enough (a node with one dead neighbour still routes).
const READY_ALL_PEERS_FOR: Duration = Duration::from_secs(30);

type Store_ = SqliteStore;

/// The node's own state, owned by the core task.
struct Agent {
    config: NodeConfig,
    ipam: Arc<Ipam<Store_>>,
    started: Instant,
    started_unix: u64,
    ipv4: Option<Detection>,
    ipv6: Option<Detection>,
    host_interface: String,
    host_mtu: Option<u32>,
    asn: u32,
    bgp: Bgp,
    /// What the running speaker was started with; a change of AS or route reflector
    /// cluster id in the datastore restarts it.
    speaker: SpeakerConfig,
    port: u16,
    routes_tx: mpsc::UnboundedSender<Vec<RouteChange>>,
    dataplane: Dataplane,
    ipip: IpipSupport,

    generation: Option<u64>,
    view: ClusterView,
    own_blocks: BTreeSet<IpNet>,
    addresses_in_use: u64,
    wanted_peers: Vec<WantedPeer>,
    /// Best routes learned from peers: prefix → next hop.
    learned: BTreeMap<IpNet, IpAddr>,
    /// Routes found in the kernel at start, kept until every peer confirmed or dropped them.
    kept: BTreeMap<IpNet, RouteTarget>,
    kept_until: Option<Instant>,
    /// What the kernel holds, as far as the agent asked for it.
    programmed: BTreeMap<IpNet, RouteTarget>,
    reconcile_errors: u64,
    dataplane_error: Option<String>,
    datastore_error: Option<String>,
}

/// Runs the agent until SIGTERM or SIGINT. Kernel routes are left in place on the way out.
pub async fn run(config: NodeConfig) -> Result<()> {
    let started = Instant::now();
    let started_unix = unix_now();
    let report = crate::autodetect::run(&config.addresses)
        .await
        .map_err(|failure| {
            let (crate::autodetect::Failure::Config(text)
            | crate::autodetect::Failure::Detect(text)) = failure;
            anyhow::anyhow!("{text}")
        })?;
    for warning in &report.warnings {
        warn!("{warning}");
    }
    let (ipv4, ipv6) = (report.ipv4, report.ipv6);
    let host_interface = ipv4
        .as_ref()
        .or(ipv6.as_ref())
        .and_then(|d| d.interface.clone())
        .unwrap_or_default();
    info!(node = %config.node_name, ipv4 = ?ipv4.as_ref().map(|d| d.address), ipv6 = ?ipv6.as_ref().map(|d| d.address), interface = %host_interface, "node address");

    let DatastoreConfig::Sqlite(path) = &config.datastore;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the datastore's directory {}", parent.display()))?;
    }
    let store = SqliteStore::open(path)
        .with_context(|| format!("opening the datastore {}", path.display()))?;
    let ipam = Arc::new(Ipam::new(store));

    if config.default_pools {
        ensure_default_pools(&ipam, &config)?;
    }
    let view = cluster::load(&ipam).context("reading the cluster's resources")?;
    let previous = view.node(&config.node_name);
    let labels = previous.map(|n| n.labels.clone()).unwrap_or_default();
    // Registered first, so that a node whose address another node already has is refused
    // before it claims anything.
    let mut registration = NodeRegistration::keeping(
        &config.node_name,
        ipv4.as_ref().map(|d| d.address),
        ipv6.as_ref().map(|d| d.address),
        config.asn,
        previous,
    );
    cluster::register(&ipam, &registration)?;

    // The node's blocks and tunnel addresses, before it announces anything.
    for (family, detected) in [(Family::V4, ipv4.is_some()), (Family::V6, ipv6.is_some())] {
        if detected {
            match ipam.ensure_block(&config.node_name, &labels, family) {
                Ok(Some(block)) => info!(%block, "own block"),
                Ok(None) => warn!(?family, "no pool has a block for this node"),
                Err(error) => warn!(%error, "claiming a block"),
            }
        }
    }
    let pools = ipam.pools().context("reading the IP pools")?;
    let tunnel = |kind: TunnelType, uses: fn(&IPPool) -> bool| -> Result<Option<Ipv4Addr>> {
        if ipv4.is_none() || !pools.iter().any(|p| !p.disabled && uses(p)) {
            return Ok(None);
        }
        match ipam.assign_tunnel_address(&config.node_name, &labels, kind)? {
            IpAddr::V4(address) => Ok(Some(address)),
            IpAddr::V6(_) => Ok(None),
        }
    };
    let ipip_tunnel = tunnel(TunnelType::Ipip, |p| {
        p.ipip_mode != EncapsulationMode::Never
    })
    .context("assigning the IPIP tunnel address")?;
    let vxlan_tunnel = tunnel(TunnelType::Vxlan, |p| {
        p.vxlan_mode != EncapsulationMode::Never
    })
    .context("assigning the VXLAN tunnel address")?;
    registration.ipip_tunnel = ipip_tunnel;
    registration.vxlan_tunnel = vxlan_tunnel;
    registration.vxlan_mac = vxlan_tunnel.map(|_| dataplane::vxlan_mac(&config.node_name));
    cluster::register(&ipam, &registration)?;
    let view = cluster::load(&ipam).context("reading the cluster's resources")?;
    let me = view.node(&config.node_name).cloned();
    let asn = me
        .as_ref()
        .and_then(|n| n.mesh.asn)
        .unwrap_or(view.settings.default_asn);

    // The kernel side.
    let mut dataplane = Dataplane::connect().await.context("opening netlink")?;
    if let Err(error) = dataplane::write_protocol_name(&config.protocol_names_dir) {
        warn!(%error, "cannot name protocol 75 for iproute2 (routes still carry it)");
    }
    dataplane::enable_ip_forwarding().context("enabling net.ipv4.ip_forward")?;
    let ipip = dataplane::ipip_support()
        .await
        .unwrap_or_else(|error| IpipSupport::Missing {
            reason: format!("cannot tell whether the kernel has IPIP: {error}"),
        });
    let host_mtu = match dataplane::host_mtu(&host_interface).await {
        Ok(mtu) => Some(mtu),
        Err(error) => {
            warn!(%error, interface = %host_interface, "host MTU unknown; tunnels get the fallback MTU");
            None
        }
    };
    let kept = dataplane
        .routes()
        .await
        .context("reading proto tortie routes")?;
    let restarting = !kept.is_empty();
    if restarting {
        info!(
            routes = kept.len(),
            "restarting: keeping the routes found in the kernel until peers confirm them"
        );
    }

    // The speaker.
    let restart_time = view.settings.restart_time.as_secs().min(4095) as u16;
    let speaker = SpeakerConfig {
        asn,
        router_id: router_id(
            ipv4.as_ref().and_then(|d| match d.address {
                IpNet::V4(net) => Some(net.addr()),
                IpNet::V6(_) => None,
            }),
            &config.node_name,
        ),
        cluster_id: me.as_ref().and_then(|n| n.mesh.route_reflector_cluster_id),
        graceful_restart: Some(GracefulRestartSettings {
            restart_time,
            restarting,
        }),
    };
    let port = config.bgp_port.unwrap_or(view.settings.port);
    let (routes_tx, mut routes_rx) = mpsc::unbounded_channel();
    let bgp = Bgp::start(speaker, port, routes_tx.clone())
        .await
        .with_context(|| format!("listening for BGP on port {port}"))?;

    // The local API and the health endpoint.
    let (calls_tx, mut calls) = mpsc::channel::<Call>(64);
    let socket = config.socket_path();
    let listener = api::bind(&socket)
        .with_context(|| format!("binding the local API {}", socket.display()))?;
    tokio::spawn(api::serve(listener, calls_tx.clone()));
    if let Some(address) = config.http_listen {
        let listener = http::bind(address)
            .await
            .with_context(|| format!("binding the health endpoint {address}"))?;
        tokio::spawn(http::serve(listener, calls_tx.clone()));
    }
    drop(calls_tx);

    let mut agent = Agent {
        ipam,
        started,
        started_unix,
        ipv4,
        ipv6,
        host_interface,
        host_mtu,
        asn,
        bgp,
        speaker,
        port,
        routes_tx,
        dataplane,
        ipip,
        generation: None,
        view,
        own_blocks: BTreeSet::new(),
        addresses_in_use: 0,
        wanted_peers: Vec::new(),
        learned: BTreeMap::new(),
        kept_until: restarting
            .then(|| Instant::now() + Duration::from_secs(u64::from(restart_time))),
        kept,
        programmed: BTreeMap::new(),
        reconcile_errors: 0,
        dataplane_error: None,
        datastore_error: None,
        config,
    };
    if let IpipSupport::Missing { reason } = &agent.ipip
        && agent.ipip_required()
    {
        error!("{reason}");
    }
    agent.resync().await?;
    info!(node = %agent.config.node_name, "tortie-node is running");

    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut poll = tokio::time::interval(DATASTORE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recheck = tokio::time::interval(ADDRESS_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut addresses = crate::node::watch::address_events().context("watching address changes")?;
    let mut periodic = tokio::time::interval(RECONCILE_EVERY);
    periodic.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    periodic.tick().await;
    loop {
        tokio::select! {
            Some(batch) = routes_rx.recv() => {
                let mut changes = batch;
                // Whatever else is queued goes into the same kernel round.
                while let Ok(more) = routes_rx.try_recv() {
                    changes.extend(more);
                }
                agent.route_changes(changes).await;
            }
            Some(call) = calls.recv() => {
                let response = agent.answer(call.request).await;
                let _ = call.reply.send(response);
            }
            _ = poll.tick() => {
                if let Err(error) = agent.poll().await {
                    warn!("{error:#}");
                }
            }
            _ = recheck.tick() => agent.recheck_address().await,
            _ = periodic.tick() => agent.reconcile().await,
            Some(()) = addresses.recv() => agent.recheck_address().await,
            _ = terminate.recv() => { info!("SIGTERM: stopping; kernel routes stay"); break; }
            _ = interrupt.recv() => { info!("SIGINT: stopping; kernel routes stay"); break; }
        }
        if !agent.bgp.is_running() {
            bail!("the BGP speaker stopped");
        }
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Creates the default pools when the datastore has none (Calico does the same on first
/// start), tolerating another node doing it at the same moment.
fn ensure_default_pools(ipam: &Ipam<Store_>, config: &NodeConfig) -> Result<()> {
    if !ipam.pools().context("reading the IP pools")?.is_empty() {
        return Ok(());
    }
    for settings in std::iter::once(&config.ipv4_pool).chain(config.ipv6_pool.as_ref()) {
        let pool = settings.pool();
        match ipam.create_pool(pool.clone()) {
            Ok(()) => info!(pool = %pool.name, cidr = %pool.cidr, "created the default pool"),
            Err(error) if ipam.pool(&pool.name).ok().flatten().is_some() => {
                info!(pool = %pool.name, %error, "default pool created by another node");
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("creating the default pool {}", pool.cidr));
            }
        }
    }
    Ok(())
}

impl Agent {
    fn node_name(&self) -> &str {
        &self.config.node_name
    }

    fn ipv4_address(&self) -> Option<Ipv4Net> {
        match self.ipv4.as_ref()?.address {
            IpNet::V4(net) => Some(net),
            IpNet::V6(_) => None,
        }
    }

    fn enabled_pools(&self) -> impl Iterator<Item = &IPPool> {
        self.view.pools.iter().filter(|p| !p.disabled)
    }

    fn ipip_required(&self) -> bool {
        self.ipv4.is_some()
            && self
                .enabled_pools()
                .any(|p| p.ipip_mode != EncapsulationMode::Never)
    }

    /// The MTU for this node's pods: the host interface's, less the largest encapsulation
    /// overhead among the pools it routes (Calico's rule; the fallback when the host MTU is
    /// unknown).
    fn pod_mtu(&self) -> u32 {
        if self.vxlan_required() {
            tunnel_mtu(self.host_mtu, VXLAN_V4_OVERHEAD)
        } else if self.ipip_required() {
            tunnel_mtu(self.host_mtu, IPIP_OVERHEAD)
        } else {
            tunnel_mtu(self.host_mtu, 0)
        }
    }

    fn vxlan_required(&self) -> bool {
        self.ipv4.is_some()
            && self
                .enabled_pools()
                .any(|p| p.vxlan_mode != EncapsulationMode::Never)
    }

    /// Re-reads the cluster when the datastore changed.
    async fn poll(&mut self) -> Result<()> {
        let generation = match tokio::task::block_in_place(|| self.ipam.store().generation()) {
            Ok(generation) => generation,
            Err(error) => {
                self.datastore_error = Some(error.to_string());
                return Err(error).context("asking the datastore for changes");
            }
        };
        if Some(generation) != self.generation {
            self.resync().await?;
        }
        self.sweep_kept_routes().await;
        Ok(())
    }

    /// Reads everything from the datastore and brings peers, announcements and the kernel in
    /// line with it. Remembers the store's generation as of before the reads, so the poll
    /// resyncs again only for writes made after them (ours included, which came before).
    async fn resync(&mut self) -> Result<()> {
        let loaded = tokio::task::block_in_place(|| {
            let generation = self.ipam.store().generation()?;
            let view = cluster::load(&self.ipam)?;
            let usage = self.ipam.utilization()?;
            let affinities = self.ipam.affinities(Some(&self.config.node_name))?;
            Ok::<_, anyhow::Error>((generation, view, usage, affinities))
        });
        let (generation, view, usage, affinities) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                self.datastore_error = Some(format!("{error:#}"));
                return Err(error);
            }
        };
        self.datastore_error = None;
        self.generation = Some(generation);
        self.view = view;
        let me = self.node_name().to_string();
        self.own_blocks = affinities
            .iter()
            .filter(|a| a.state == tortie_ipam::model::AffinityState::Confirmed)
            .map(|a| a.cidr)
            .collect();
        let mut originate: BTreeSet<IpNet> = BTreeSet::new();
        let exported = |prefix: &IpNet, pools: &[IPPool]| {
            !pools
                .iter()
                .any(|p| p.cidr.contains(prefix) && p.disable_bgp_export)
        };
        let mut in_use = 0;
        for pool in &usage.pools {
            for block in &pool.blocks {
                if block.node.as_deref() == Some(me.as_str()) {
                    in_use += block.in_use;
                }
                // Addresses this node borrowed from another node's block are announced
                // one by one; the owner announces the block.
                for borrowed in &block.borrowed {
                    if borrowed.node.as_deref() == Some(me.as_str()) {
                        originate.insert(IpNet::from(borrowed.address));
                    }
                }
            }
        }
        self.addresses_in_use = in_use;
        originate.extend(self.own_blocks.iter().copied());
        originate.retain(|prefix| exported(prefix, &self.view.pools));

        self.restart_speaker_if_changed().await?;
        let wanted = match self.view.node(&me) {
            Some(node) => mesh::wanted_peers(
                &node.mesh,
                &self.view.mesh_nodes(),
                &self.view.peers,
                self.view.settings.mesh(),
            ),
            None => Vec::new(),
        };
        self.bgp.set_peers(&wanted).await?;
        self.wanted_peers = wanted;
        self.bgp.set_originated(&originate).await?;
        self.reconcile().await;
        Ok(())
    }

    /// The speaker's identity as the datastore now says it should be.
    fn wanted_speaker(&self) -> SpeakerConfig {
        let node = self.view.node(self.node_name());
        let mut wanted = self.speaker;
        wanted.asn = self
            .config
            .asn
            .or(node.and_then(|n| n.mesh.asn))
            .unwrap_or(self.view.settings.default_asn);
        wanted.cluster_id = node.and_then(|n| n.mesh.route_reflector_cluster_id);
        wanted
    }

    /// A node made (or unmade) a route reflector, or given another AS, needs a new speaker:
    /// the old one's sessions end (without NOTIFICATION, so peers keep our routes as in a
    /// restart), and the kernel keeps every route until the new sessions confirm it.
    async fn restart_speaker_if_changed(&mut self) -> Result<()> {
        let wanted = self.wanted_speaker();
        if wanted.asn == self.speaker.asn && wanted.cluster_id == self.speaker.cluster_id {
            return Ok(());
        }
        info!(asn = wanted.asn, cluster_id = ?wanted.cluster_id, "BGP identity changed: restarting the speaker");
        let restart_time = wanted.graceful_restart.map_or(120, |gr| gr.restart_time);
        let config = SpeakerConfig {
            graceful_restart: Some(GracefulRestartSettings {
                restart_time,
                restarting: true,
            }),
            ..wanted
        };
        for (prefix, target) in &self.programmed {
            if !self.own_blocks.contains(prefix) {
                self.kept.insert(*prefix, target.clone());
            }
        }
        self.learned.clear();
        self.kept_until = Some(Instant::now() + Duration::from_secs(u64::from(restart_time)));
        self.bgp
            .restart(config, self.port, self.routes_tx.clone())
            .await
            .with_context(|| format!("restarting the BGP speaker on port {}", self.port))?;
        self.speaker = config;
        Ok(())
    }

    fn routing_context(&self) -> RoutingContext {
        RoutingContext {
            pools: self.view.pools.clone(),
            host_interface: self.host_interface.clone(),
            host_network: self
                .ipv4_address()
                .unwrap_or_else(|| Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 32).expect("/32 is valid")),
            vxlan_tunnels: self
                .view
                .vxlan_peers(self.node_name())
                .into_iter()
                .map(|peer| (peer.node_address, peer.tunnel_address))
                .collect(),
        }
    }

    /// The route the kernel should have for `prefix`, if any.
    fn target_for(&self, context: &RoutingContext, prefix: &IpNet) -> Option<RouteTarget> {
        if self.own_blocks.contains(prefix) {
            return Some(RouteTarget::Blackhole);
        }
        if let Some(next_hop) = self.learned.get(prefix) {
            return Some(dataplane::remote_route(context, *prefix, *next_hop));
        }
        self.kept.get(prefix).cloned()
    }

    fn desired(&self) -> Desired {
        let context = self.routing_context();
        let mut routes = BTreeMap::new();
        for prefix in self
            .own_blocks
            .iter()
            .chain(self.learned.keys())
            .chain(self.kept.keys())
        {
            if let Some(target) = self.target_for(&context, prefix) {
                routes.insert(*prefix, target);
            }
        }
        let node = self.view.node(self.node_name());
        let tunl0 = match (&self.ipip, node.and_then(|n| n.ipip_tunnel)) {
            (IpipSupport::Available, Some(address)) if self.ipip_required() => Some(Tunl0Spec {
                address,
                mtu: tunnel_mtu(self.host_mtu, IPIP_OVERHEAD),
            }),
            _ => None,
        };
        let vxlan = match (self.ipv4_address(), node.and_then(|n| n.vxlan_tunnel)) {
            (Some(local), Some(address)) if self.vxlan_required() => Some(VxlanSpec {
                vni: dataplane::VXLAN_VNI,
                port: dataplane::VXLAN_PORT,
                mac: dataplane::vxlan_mac(self.node_name()),
                local: local.addr(),
                parent: self.host_interface.clone(),
                address,
                mtu: tunnel_mtu(self.host_mtu, VXLAN_V4_OVERHEAD),
            }),
            _ => None,
        };
        let vxlan_peers: Vec<VxlanPeer> = if vxlan.is_some() {
            self.view.vxlan_peers(self.node_name())
        } else {
            Vec::new()
        };
        Desired {
            tunl0,
            vxlan,
            vxlan_peers,
            routes,
        }
    }

    /// Brings the kernel to the whole desired state (devices, neighbours, routes).
    async fn reconcile(&mut self) {
        let desired = self.desired();
        match self.dataplane.reconcile(&desired).await {
            Ok(report) => {
                self.dataplane_error = report.failure_summary(FAILURES_SHOWN);
                if self.dataplane_error.is_some() {
                    self.reconcile_errors += 1;
                    warn!(report = %report, "dataplane reconcile incomplete");
                } else if report.changes() > 0 {
                    info!(report = %report, "dataplane reconciled");
                }
            }
            Err(error) => {
                self.reconcile_errors += 1;
                self.dataplane_error = Some(error.to_string());
                warn!(%error, "dataplane reconcile failed");
            }
        }
        self.programmed = desired.routes;
    }

    /// Applies best-route changes from the speaker to the kernel, in one pipelined round.
    async fn route_changes(&mut self, changes: Vec<RouteChange>) {
        let mut touched = BTreeSet::new();
        for change in changes {
            match change {
                RouteChange::Best {
                    prefix,
                    attributes,
                    from: Some(_),
                } => {
                    if let Some(next_hop) = attributes.route_next_hop() {
                        self.learned.insert(prefix, next_hop);
                    } else {
                        self.learned.remove(&prefix);
                    }
                    touched.insert(prefix);
                }
                // Our own announcement became best: nothing learned for it.
                RouteChange::Best {
                    prefix, from: None, ..
                }
                | RouteChange::Withdrawn { prefix } => {
                    self.learned.remove(&prefix);
                    touched.insert(prefix);
                }
            }
        }
        let context = self.routing_context();
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        for prefix in touched {
            match self.target_for(&context, &prefix) {
                Some(target) => {
                    if self.programmed.get(&prefix) != Some(&target) {
                        self.programmed.insert(prefix, target.clone());
                        upserts.push((prefix, target));
                    }
                }
                None => {
                    if self.programmed.remove(&prefix).is_some() {
                        removals.push(prefix);
                    }
                }
            }
        }
        if upserts.is_empty() && removals.is_empty() {
            return;
        }
        match self.dataplane.update_routes(&upserts, &removals).await {
            Ok(report) => {
                if let Some(failure) = report.failure_summary(FAILURES_SHOWN) {
                    self.reconcile_errors += 1;
                    warn!(%failure, "some routes could not be programmed");
                    self.dataplane_error = Some(failure);
                }
            }
            Err(error) => {
                self.reconcile_errors += 1;
                self.dataplane_error = Some(error.to_string());
                warn!(%error, "programming routes failed");
            }
        }
    }

    /// Ends the restart: once every peer is up and has sent End-of-RIB (or the restart time
    /// ran out), routes found at start that no peer confirmed are removed.
    async fn sweep_kept_routes(&mut self) {
        let Some(until) = self.kept_until else {
            return;
        };
        let peers = match self.bgp.peers().await {
            Ok(peers) => peers,
            Err(_) => return,
        };
        let confirmed = !self.wanted_peers.is_empty()
            && self.wanted_peers.iter().all(|wanted| {
                peers.iter().any(|p| {
                    p.address == wanted.address
                        && p.state == State::Established
                        && p.end_of_rib.contains(&family_of(wanted.address))
                })
            });
        if confirmed || self.wanted_peers.is_empty() || Instant::now() >= until {
            info!(
                kept = self.kept.len(),
                confirmed, "restart complete: dropping routes no peer confirmed"
            );
            self.kept.clear();
            self.kept_until = None;
            self.reconcile().await;
        }
    }

    async fn recheck_address(&mut self) {
        let report = match crate::autodetect::run(&self.config.addresses).await {
            Ok(report) => report,
            Err(
                crate::autodetect::Failure::Config(text) | crate::autodetect::Failure::Detect(text),
            ) => {
                warn!("address re-check: {text}");
                return;
            }
        };
        let before = (
            self.ipv4.as_ref().map(|d| d.address),
            self.ipv6.as_ref().map(|d| d.address),
        );
        let after = (
            report.ipv4.as_ref().map(|d| d.address),
            report.ipv6.as_ref().map(|d| d.address),
        );
        if before == after {
            return;
        }
        warn!(
            ?before,
            ?after,
            "the node's address changed; updating the Node resource"
        );
        let registration = NodeRegistration::keeping(
            self.node_name(),
            after.0,
            after.1,
            self.config.asn,
            self.view.node(self.node_name()),
        );
        let registered =
            tokio::task::block_in_place(|| cluster::register(&self.ipam, &registration));
        match registered {
            Ok(()) => {
                self.ipv4 = report.ipv4;
                self.ipv6 = report.ipv6;
                self.generation = None;
            }
            Err(error) => {
                error!("{error:#}");
                self.datastore_error = Some(format!("{error:#}"));
            }
        }
    }

    /// Why the node is not ready; empty when it is.
    async fn not_ready(&self, peers: &[PeerStatus]) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some(error) = &self.datastore_error {
            reasons.push(format!("datastore: {error}"));
        }
        if let Some(error) = &self.dataplane_error {
            reasons.push(format!("dataplane: {error}"));
        }
        if let IpipSupport::Missing { reason } = &self.ipip
            && self.ipip_required()
        {
            reasons.push(reason.clone());
        }
        let up = peers
            .iter()
            .filter(|p| p.state == State::Established)
            .count();
        let wanted = self.wanted_peers.len();
        if wanted > 0 {
            let early = self.started.elapsed() < READY_ALL_PEERS_FOR;
            if early && up < wanted {
                reasons.push(format!(
                    "BGP: {up} of {wanted} peers established (all are needed in the first {} s)",
                    READY_ALL_PEERS_FOR.as_secs()
                ));
            } else if !early && up == 0 {
                reasons.push(format!("BGP: none of {wanted} peers established"));
            }
        }
        reasons
    }

    async fn answer(&mut self, request: Request) -> Response {
        match request {
            Request::Assign {
                handle,
                num4,
                num6,
                attributes,
                pools,
            } => {
                let held = match tokio::task::block_in_place(|| self.ipam.addresses_of(&handle)) {
                    Ok(held) => held,
                    Err(error) => return Response::Error(error.to_string()),
                };
                if !held.is_empty() {
                    let (ipv4, ipv6) = held.into_iter().partition(IpAddr::is_ipv4);
                    return Response::Assigned {
                        ipv4,
                        ipv6,
                        mtu: self.pod_mtu(),
                    };
                }
                let labels = self
                    .view
                    .node(self.node_name())
                    .map(|n| n.labels.clone())
                    .unwrap_or_default();
                let mut args = AutoAssignArgs::new(handle, self.node_name());
                args.num4 = num4;
                args.num6 = num6;
                args.node_labels = labels;
                args.attributes = attributes;
                args.pools = pools;
                let assigned = tokio::task::block_in_place(|| self.ipam.auto_assign(&args));
                match assigned {
                    Ok(assigned) => {
                        // A new block (or a borrowed address) is announced at once, not at
                        // the next datastore poll: this is the path a pod start takes.
                        // Addresses from blocks already announced change nothing to
                        // announce, and the poll takes in the write.
                        let announced = assigned
                            .ipv4
                            .iter()
                            .chain(&assigned.ipv6)
                            .all(|a| self.own_blocks.contains(&a.block));
                        if !announced && let Err(error) = self.resync().await {
                            warn!("{error:#}");
                        }
                        Response::Assigned {
                            ipv4: assigned.ipv4.iter().map(|a| a.address).collect(),
                            ipv6: assigned.ipv6.iter().map(|a| a.address).collect(),
                            mtu: self.pod_mtu(),
                        }
                    }
                    Err(error) => Response::Error(error.to_string()),
                }
            }
            Request::Release { handle } => {
                let released = tokio::task::block_in_place(|| self.ipam.release_handle(&handle));
                match released {
                    Ok(addresses) => {
                        // A borrowed address is withdrawn at once; one of our own blocks'
                        // changes nothing announced (the poll takes in the write).
                        let own = addresses
                            .iter()
                            .all(|a| self.own_blocks.iter().any(|b| b.contains(a)));
                        if !own && let Err(error) = self.resync().await {
                            warn!("{error:#}");
                        }
                        Response::Released { addresses }
                    }
                    Err(error) => Response::Error(error.to_string()),
                }
            }
            Request::Addresses { handle } => {
                match tokio::task::block_in_place(|| self.ipam.addresses_of(&handle)) {
                    Ok(addresses) => Response::Addresses {
                        addresses,
                        mtu: self.pod_mtu(),
                    },
                    Err(error) => Response::Error(error.to_string()),
                }
            }
            Request::Handles { prefix } => {
                let node = self.node_name().to_string();
                let blocks = tokio::task::block_in_place(|| self.ipam.blocks());
                match blocks {
                    Ok(blocks) => {
                        let handles: BTreeSet<String> = blocks
                            .iter()
                            .flat_map(|block| block.allocations_iter())
                            .filter(|view| view.secondary(ATTRIBUTE_NODE) == Some(node.as_str()))
                            .filter_map(|view| view.handle_id())
                            .filter(|handle| handle.starts_with(&prefix))
                            .map(str::to_string)
                            .collect();
                        Response::Handles {
                            handles: handles.into_iter().collect(),
                        }
                    }
                    Err(error) => Response::Error(error.to_string()),
                }
            }
            Request::Capacity => match tokio::task::block_in_place(|| self.ipam.utilization()) {
                Ok(usage) => {
                    let free = |v4: bool| {
                        usage
                            .pools
                            .iter()
                            .filter(|pool| !pool.disabled && pool.cidr.addr().is_ipv4() == v4)
                            .map(|pool| u64::try_from(pool.free).unwrap_or(u64::MAX))
                            .fold(0u64, u64::saturating_add)
                    };
                    Response::Capacity {
                        free_ipv4: free(true),
                        free_ipv6: free(false),
                    }
                }
                Err(error) => Response::Error(error.to_string()),
            },
            Request::Status => {
                let peers = match self.bgp.peers().await {
                    Ok(peers) => peers,
                    Err(error) => return Response::Error(error.to_string()),
                };
                let not_ready = self.not_ready(&peers).await;
                let problem = match &self.ipip {
                    IpipSupport::Missing { reason } if self.ipip_required() => Some(reason.clone()),
                    _ => None,
                };
                Response::Status(Box::new(NodeStatus {
                    node: self.config.node_name.clone(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    started: self.started_unix,
                    ipv4_address: self.ipv4.as_ref().map(|d| d.address.to_string()),
                    ipv6_address: self.ipv6.as_ref().map(|d| d.address.to_string()),
                    asn: self.asn,
                    ready: not_ready.is_empty(),
                    not_ready,
                    ipip: IpipStatus {
                        required: self.ipip_required(),
                        available: matches!(self.ipip, IpipSupport::Available),
                        problem,
                    },
                    peers: peers.iter().map(PeerRow::from).collect(),
                    blocks: self.own_blocks.iter().map(ToString::to_string).collect(),
                    routes_programmed: self.programmed.len(),
                    addresses_in_use: self.addresses_in_use,
                    reconcile_errors: self.reconcile_errors,
                    dataplane_error: self.dataplane_error.clone(),
                    datastore_error: self.datastore_error.clone(),
                }))
            }
        }
    }
}

fn family_of(address: IpAddr) -> BgpFamily {
    match address {
        IpAddr::V4(_) => BgpFamily::IPV4_UNICAST,
        IpAddr::V6(_) => BgpFamily::IPV6_UNICAST,
    }
}
