//! The speaker task: the single owner of the routes (a [`Table`] per address family and
//! their [`AttributeStore`]) and of the map of peers. Peer tasks
//! ([`crate::tasks::run_peer`]) send it their events on one channel; the agent (or
//! `tortie-bgpd`) sends it commands and receives best-route changes.
//!
//! Per received UPDATE: the protocol's import rules ([`crate::propagation::import`]) and
//! the peer's import policy, attributes interned once, every prefix into its family's
//! table. Per burst of UPDATEs (what is queued when the speaker gets to it), the best-path
//! changes passed on — to the agent as batches of [`RouteChange`]s, and to every
//! Established peer that negotiated the family through the export rules and its export
//! policy, grouped by resulting attributes and packed into as few UPDATEs as carry them. IPv4 and IPv6 unicast; a route's next hop announced as this
//! speaker is the session's local address, so each family travels on sessions of its own
//! family (as Calico's BIRD and BIRD6 do), unless next hops are kept (iBGP).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::SystemTime;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::neighbor::{SessionConfig, SessionError, SessionParameters, State};
use crate::packet::capability::MAX_RESTART_TIME;
use crate::packet::{
    Family, GracefulRestart, GracefulRestartFamily, Message, MpReach, Negotiated, Origin,
    PathAttributes, Prefixes, Update,
};
use crate::policy::Policy;
use crate::propagation::{LocalSpeaker, SessionView, Source, export, import};
use crate::rib::{
    AttributeId, AttributeStore, BestChange, FastHash, Path, PeerId, PeerInfo, Table,
};
use crate::tasks::{Connector, PeerCommand, PeerEvent, run_peer};

/// The speaker itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeakerConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Makes this speaker a route reflector with this cluster id (RFC 4456).
    pub cluster_id: Option<Ipv4Addr>,
    /// Offer graceful restart (RFC 4724) to every peer, and keep the routes of peers
    /// that offer it while they restart.
    pub graceful_restart: Option<GracefulRestartSettings>,
}

/// This speaker's side of graceful restart (RFC 4724 - Section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartSettings {
    /// How long peers should keep our routes while we restart, in seconds (at most 4095).
    pub restart_time: u16,
    /// We are coming back from a restart with the forwarding state (kernel routes) kept:
    /// sets the Restart State and Forwarding State bits.
    pub restarting: bool,
}

/// A restarting peer's previous routes, kept as stale (RFC 4724 - Section 4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
struct StaleRoutes {
    /// Families whose stale routes wait for the peer's End-of-RIB.
    pending: Vec<Family>,
    /// Which restart timer is current.
    generation: u64,
}

/// What the speaker's own timers tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Internal {
    /// A peer did not come back (or send End-of-RIB) within its restart time.
    RestartTimerExpired { peer: PeerId, generation: u64 },
}

/// One configured peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub asn: u32,
    /// This speaker's address on the session: the next hop it announces as itself.
    pub local_address: IpAddr,
    pub passive: bool,
    pub hold_time: u16,
    pub keepalive_time: u16,
    pub route_reflector_client: bool,
    pub next_hop_self: bool,
    /// How the peer table names this peer's kind ("node-to-node mesh", "global", ...).
    pub label: String,
    /// Address families to offer; by default the family of the peer's address.
    pub families: Vec<Family>,
    /// Applied to routes from the peer after the protocol's import rules.
    pub import_policy: Policy,
    /// Applied to routes for the peer after the protocol's export rules.
    pub export_policy: Policy,
    /// Announce only this speaker's own prefixes to the peer, none it learned: what a
    /// cluster node tells a top-of-rack router, so that the router's route to each block
    /// points at the node that owns it rather than at whichever node told it first.
    pub originated_only: bool,
    /// The restart time to offer this peer in place of the speaker's (RFC 4724 - Section
    /// 3): how long it should keep our routes while we restart (Calico's BGPPeer
    /// `maxRestartTime`).
    pub restart_time: Option<u16>,
}

impl PeerConfig {
    /// A peer with RFC 4271's suggested timers, connected to actively.
    pub fn new(address: IpAddr, asn: u32, local_address: IpAddr) -> PeerConfig {
        PeerConfig {
            address,
            asn,
            local_address,
            passive: false,
            hold_time: 90,
            keepalive_time: 30,
            route_reflector_client: false,
            next_hop_self: false,
            label: String::new(),
            families: vec![family_of(&address)],
            import_policy: Policy::default(),
            export_policy: Policy::default(),
            originated_only: false,
            restart_time: None,
        }
    }
}

fn family_of(address: &IpAddr) -> Family {
    match address {
        IpAddr::V4(_) => Family::IPV4_UNICAST,
        IpAddr::V6(_) => Family::IPV6_UNICAST,
    }
}

fn prefix_family(prefix: &IpNet) -> Family {
    match prefix {
        IpNet::V4(_) => Family::IPV4_UNICAST,
        IpNet::V6(_) => Family::IPV6_UNICAST,
    }
}

/// What the speaker is asked to do.
pub enum SpeakerCommand<S> {
    AddPeer(PeerConfig, Connector<S>),
    /// Stops the session (CEASE) and forgets the peer and its routes.
    RemovePeer(IpAddr),
    /// A connection accepted by the caller's listener, from `from`.
    Accepted {
        from: IpAddr,
        stream: S,
    },
    /// Announce `prefix` from this speaker. Absent ORIGIN and AS_PATH default to IGP and
    /// empty; the next hop is set per peer on export.
    Originate {
        prefix: IpNet,
        attributes: PathAttributes,
    },
    StopOriginating {
        prefix: IpNet,
    },
    /// A snapshot of the peer table.
    Peers(oneshot::Sender<Vec<PeerStatus>>),
    /// A snapshot of the best routes, IPv4 then IPv6, each sorted by prefix.
    Routes(oneshot::Sender<Vec<BestRoute>>),
}

/// One prefix's best route, for `show rib`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestRoute {
    pub prefix: IpNet,
    pub attributes: PathAttributes,
    /// The peer it was learned from; `None` for this speaker's own route.
    pub from: Option<IpAddr>,
    /// How many paths the table holds for the prefix.
    pub paths: usize,
    /// Kept from a gracefully restarting peer's previous session, not yet refreshed
    /// (RFC 4724 - Section 4.2).
    pub stale: bool,
}

/// A change of best route, for the agent to turn into a kernel route
/// ([`PathAttributes::route_next_hop`] says where it goes). Changes travel in batches of at
/// most 1,024 (what a burst of received UPDATEs or a command changed), and routes that
/// share attributes share one copy of them: a full table is a thousand channel sends, not
/// a million. A batch is some 50 KiB: the channel's capacity in batches bounds what waits
/// for a slow agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    Best {
        prefix: IpNet,
        attributes: Arc<PathAttributes>,
        /// The peer it was learned from; `None` for this speaker's own route.
        from: Option<IpAddr>,
    },
    Withdrawn {
        prefix: IpNet,
    },
}

/// One row of the peer table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub asn: u32,
    pub label: String,
    pub state: State,
    pub since: SystemTime,
    pub last_error: Option<String>,
    /// Prefixes announced by the peer since the session came up.
    pub received: usize,
    /// Prefixes for which the tables hold a path from the peer (stale ones included).
    pub accepted: usize,
    /// Prefixes this speaker has announced to the peer.
    pub advertised: usize,
    /// Families whose End-of-RIB the peer has sent in this session: its initial routes
    /// are all in (RFC 4724 - Section 2). A restarting agent waits for it before it
    /// removes forwarding state the peer has not confirmed.
    pub end_of_rib: Vec<Family>,
}

/// How many prefixes one UPDATE withdraws at most: 4096 octets hold 814 IPv4 /32s, or
/// some 230 IPv6 /128s in MP_UNREACH_NLRI.
const IPV4_WITHDRAWALS_PER_UPDATE: usize = 800;
/// The most best-route changes one batch to the agent carries.
const ROUTE_CHANGES_PER_BATCH: usize = 1024;
const IPV6_WITHDRAWALS_PER_UPDATE: usize = 200;

struct PeerEntry<S> {
    config: PeerConfig,
    commands: mpsc::Sender<PeerCommand<S>>,
    state: State,
    since: SystemTime,
    last_error: Option<SessionError>,
    session: Option<SessionParameters>,
    received: usize,
    /// Families whose End-of-RIB arrived in this session.
    end_of_rib: Vec<Family>,
    /// Adj-RIB-Out: the prefixes announced to the peer.
    advertised: AdjRibOut,
    stale: Option<StaleRoutes>,
}

/// The prefixes announced to one peer (RFC 4271 - Section 3.2's Adj-RIB-Out, less the
/// attributes, which follow from the Loc-RIB and export). A set per family: an IPv4 entry
/// is 5 octets, not the 18 of an `IpNet`, which for a full table sent on is 12 MiB
/// instead of 40.
#[derive(Debug, Default)]
struct AdjRibOut {
    ipv4: HashSet<Ipv4Net, FastHash>,
    ipv6: HashSet<Ipv6Net, FastHash>,
}

impl AdjRibOut {
    fn insert(&mut self, prefix: IpNet) {
        match prefix {
            IpNet::V4(prefix) => self.ipv4.insert(prefix),
            IpNet::V6(prefix) => self.ipv6.insert(prefix),
        };
    }

    /// Whether `prefix` was announced (and so needs withdrawing).
    fn remove(&mut self, prefix: &IpNet) -> bool {
        match prefix {
            IpNet::V4(prefix) => !self.ipv4.is_empty() && self.ipv4.remove(prefix),
            IpNet::V6(prefix) => !self.ipv6.is_empty() && self.ipv6.remove(prefix),
        }
    }

    fn len(&self) -> usize {
        self.ipv4.len() + self.ipv6.len()
    }

    fn clear(&mut self) {
        // Dropped rather than cleared: a session that comes back may never need the room.
        *self = AdjRibOut::default();
    }
}

/// Runs a speaker until the command channel closes.
pub async fn run_speaker<S>(
    config: SpeakerConfig,
    mut commands: mpsc::Receiver<SpeakerCommand<S>>,
    routes: mpsc::Sender<Vec<RouteChange>>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let (internal_tx, mut internal) = mpsc::channel(64);
    let mut speaker = Speaker {
        pending: Vec::new(),
        pending_may_repeat: false,
        internal_tx,
        generation: 0,
        config,
        peers: HashMap::default(),
        by_address: HashMap::new(),
        infos: HashMap::new(),
        next_id: 1,
        ipv4: Table::default(),
        ipv6: Table::default(),
        store: AttributeStore::default(),
        events_tx,
        routes,
    };
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => speaker.command(command).await,
                None => break,
            },
            Some((peer, event)) = events.recv() => speaker.event(peer, event).await,
            Some(timer) = internal.recv() => speaker.internal(timer).await,
        }
        // Whatever else the peers have already queued joins this burst, so that its
        // best-path changes go out together: one batch to the agent and one run of
        // packed UPDATEs per peer for a burst, not for every UPDATE received.
        while speaker.pending.len() < MAX_PENDING_CHANGES {
            match events.try_recv() {
                Ok((peer, event)) => speaker.event(peer, event).await,
                Err(_) => break,
            }
        }
        speaker.flush().await;
        // Only after the flush: the changes held until then name attribute sets that
        // may have lost their last path within the burst.
        speaker.store.collect_garbage();
    }
}

/// How many events from peers may wait for the speaker before their tasks wait in turn.
/// An event may be a whole read's worth of decoded UPDATEs (up to 64 KiB on the wire,
/// some 500 UPDATEs and 300 KiB decoded for a real table), so the queue is short: what
/// waits is memory, and the speaker is not made faster by more of it.
const EVENT_QUEUE: usize = 4;

/// How many best-path changes a burst of received UPDATEs gathers at most before they are
/// passed on: bounds the memory they hold and how long the agent waits for the first.
const MAX_PENDING_CHANGES: usize = 16 * 1024;

struct Speaker<S> {
    config: SpeakerConfig,
    /// Best-path changes of the current burst of UPDATEs, not yet passed on.
    pending: Vec<(IpNet, BestChange)>,
    /// Some prefix may appear in `pending` more than once (set unless every change so far
    /// is a prefix new to its table), so the flush must keep only each one's last.
    pending_may_repeat: bool,
    internal_tx: mpsc::Sender<Internal>,
    /// Numbers restart timers, so that one made obsolete is recognised when it fires.
    generation: u64,
    peers: HashMap<PeerId, PeerEntry<S>, FastHash>,
    by_address: HashMap<IpAddr, PeerId>,
    /// What the decision process knows of each Established peer.
    infos: HashMap<PeerId, PeerInfo>,
    next_id: u32,
    ipv4: Table<Ipv4Net>,
    ipv6: Table<Ipv6Net>,
    store: AttributeStore,
    events_tx: mpsc::Sender<(PeerId, PeerEvent)>,
    routes: mpsc::Sender<Vec<RouteChange>>,
}

impl<S> Speaker<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    fn local(&self) -> LocalSpeaker {
        LocalSpeaker {
            asn: self.config.asn,
            router_id: self.config.router_id,
            cluster_id: self.config.cluster_id,
        }
    }

    fn view(&self, peer: PeerId) -> Option<SessionView> {
        let entry = self.peers.get(&peer.base())?;
        Some(SessionView {
            peer_asn: entry.config.asn,
            // A restarting peer's stale routes keep the identifier it had.
            peer_router_id: entry
                .session
                .as_ref()
                .map(|s| s.peer_router_id)
                .or_else(|| self.infos.get(&peer.stale()).map(|info| info.router_id))
                .unwrap_or(Ipv4Addr::UNSPECIFIED),
            local_address: entry.config.local_address,
            route_reflector_client: entry.config.route_reflector_client,
            next_hop_self: entry.config.next_hop_self,
        })
    }

    fn announce(&mut self, prefix: IpNet, path: Path) -> Option<BestChange> {
        match prefix {
            IpNet::V4(prefix) => self
                .ipv4
                .announce(prefix, path, &mut self.store, &self.infos),
            IpNet::V6(prefix) => self
                .ipv6
                .announce(prefix, path, &mut self.store, &self.infos),
        }
    }

    fn withdraw(&mut self, prefix: IpNet, peer: PeerId) -> Option<BestChange> {
        match prefix {
            IpNet::V4(prefix) => self
                .ipv4
                .withdraw(prefix, peer, &mut self.store, &self.infos),
            IpNet::V6(prefix) => self
                .ipv6
                .withdraw(prefix, peer, &mut self.store, &self.infos),
        }
    }

    fn withdraw_peer(&mut self, peer: PeerId) -> Vec<(IpNet, BestChange)> {
        let mut changes: Vec<(IpNet, BestChange)> = self
            .ipv4
            .withdraw_peer(peer, &mut self.store, &self.infos)
            .into_iter()
            .map(|(prefix, change)| (IpNet::V4(prefix), change))
            .collect();
        changes.extend(
            self.ipv6
                .withdraw_peer(peer, &mut self.store, &self.infos)
                .into_iter()
                .map(|(prefix, change)| (IpNet::V6(prefix), change)),
        );
        changes
    }

    /// Every best path of `family`.
    fn best_paths(&self, family: Family) -> Vec<(IpNet, Path)> {
        if family == Family::IPV4_UNICAST {
            self.ipv4
                .prefixes()
                .filter_map(|p| self.ipv4.best(&p).map(|best| (IpNet::V4(p), best)))
                .collect()
        } else {
            self.ipv6
                .prefixes()
                .filter_map(|p| self.ipv6.best(&p).map(|best| (IpNet::V6(p), best)))
                .collect()
        }
    }

    fn paths_count(&self, prefix: &IpNet) -> usize {
        match prefix {
            IpNet::V4(prefix) => self.ipv4.paths(prefix).len(),
            IpNet::V6(prefix) => self.ipv6.paths(prefix).len(),
        }
    }

    async fn command(&mut self, command: SpeakerCommand<S>) {
        // Anything but UPDATEs sees the routes as they are, with the burst passed on.
        self.flush().await;
        match command {
            SpeakerCommand::AddPeer(config, connector) => self.add_peer(config, connector).await,
            SpeakerCommand::RemovePeer(address) => self.remove_peer(address).await,
            SpeakerCommand::Accepted { from, stream } => {
                match self.by_address.get(&from).and_then(|id| self.peers.get(id)) {
                    Some(entry) => {
                        let _ = entry.commands.send(PeerCommand::Accepted(stream)).await;
                    }
                    None => {
                        debug!(%from, "connection from an address that is no configured peer: closed")
                    }
                }
            }
            SpeakerCommand::Originate { prefix, attributes } => {
                let attributes = PathAttributes {
                    origin: attributes.origin.or(Some(Origin::Igp)),
                    as_path: attributes.as_path.or_else(|| Some(Default::default())),
                    ..attributes
                };
                let id = self.store.intern(attributes);
                let change = self.announce(
                    prefix,
                    Path {
                        peer: PeerId::LOCAL,
                        attributes: id,
                    },
                );
                self.propagate(change.map(|c| (prefix, c)).into_iter().collect())
                    .await;
            }
            SpeakerCommand::StopOriginating { prefix } => {
                let change = self.withdraw(prefix, PeerId::LOCAL);
                self.propagate(change.map(|c| (prefix, c)).into_iter().collect())
                    .await;
            }
            SpeakerCommand::Peers(reply) => {
                let _ = reply.send(self.snapshot());
            }
            SpeakerCommand::Routes(reply) => {
                let mut routes = Vec::new();
                for family in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
                    let mut best = self.best_paths(family);
                    best.sort_by_key(|(prefix, _)| *prefix);
                    routes.extend(best.into_iter().filter_map(|(prefix, path)| {
                        Some(BestRoute {
                            prefix,
                            attributes: self.store.get(path.attributes)?.clone(),
                            from: self
                                .peers
                                .get(&path.peer.base())
                                .map(|entry| entry.config.address),
                            paths: self.paths_count(&prefix),
                            stale: path.peer != path.peer.base(),
                        })
                    }));
                }
                let _ = reply.send(routes);
            }
        }
    }

    async fn add_peer(&mut self, config: PeerConfig, connector: Connector<S>) {
        if self.by_address.contains_key(&config.address) {
            warn!(peer = %config.address, "peer already configured");
            return;
        }
        let session = SessionConfig {
            hold_time: config.hold_time,
            keepalive_time: config.keepalive_time,
            passive: config.passive,
            families: config.families.clone(),
            graceful_restart: self
                .config
                .graceful_restart
                .map(|settings| GracefulRestart {
                    restart_state: settings.restarting,
                    notification: false,
                    restart_time: config
                        .restart_time
                        .unwrap_or(settings.restart_time)
                        .min(MAX_RESTART_TIME),
                    families: config
                        .families
                        .iter()
                        .map(|&family| GracefulRestartFamily {
                            family,
                            forwarding_preserved: settings.restarting,
                        })
                        .collect(),
                }),
            ..SessionConfig::new(self.config.asn, config.asn, self.config.router_id)
        };
        let id = PeerId(self.next_id);
        self.next_id += 1;
        let (commands, commands_rx) = mpsc::channel(64);
        let span = tracing::info_span!("peer", address = %config.address);
        let task = run_peer(id, session, connector, commands_rx, self.events_tx.clone());
        tokio::spawn(tracing::Instrument::instrument(task, span));
        let _ = commands.send(PeerCommand::Start).await;
        self.by_address.insert(config.address, id);
        self.peers.insert(
            id,
            PeerEntry {
                config,
                commands,
                state: State::Idle,
                since: SystemTime::now(),
                last_error: None,
                session: None,
                received: 0,
                end_of_rib: Vec::new(),
                advertised: AdjRibOut::default(),
                stale: None,
            },
        );
    }

    async fn remove_peer(&mut self, address: IpAddr) {
        let Some(id) = self.by_address.remove(&address) else {
            return;
        };
        if let Some(entry) = self.peers.remove(&id) {
            // The peer task sends the CEASE, then ends when its command channel closes.
            let _ = entry.commands.send(PeerCommand::Stop).await;
        }
        self.infos.remove(&id);
        self.infos.remove(&id.stale());
        let mut changes = self.withdraw_peer(id);
        changes.extend(self.withdraw_peer(id.stale()));
        self.propagate(changes).await;
    }

    async fn event(&mut self, id: PeerId, event: PeerEvent) {
        if !self.peers.contains_key(&id) {
            return; // a removed peer's last words
        }
        if !matches!(event, PeerEvent::Update(_) | PeerEvent::Updates(_)) {
            self.flush().await;
        }
        match event {
            PeerEvent::State { state, last_error } => {
                if let Some(entry) = self.peers.get_mut(&id) {
                    entry.state = state;
                    entry.since = SystemTime::now();
                    entry.last_error = last_error;
                }
            }
            PeerEvent::Established(parameters) => self.established(id, parameters).await,
            PeerEvent::Down(error) => self.down(id, error).await,
            PeerEvent::Update(decoded) => self.received(id, decoded).await,
            PeerEvent::Updates(updates) => {
                for decoded in updates {
                    self.received(id, decoded).await;
                }
            }
            // Answered by sending the family's whole table again.
            PeerEvent::RouteRefresh(family) => self.send_table(id, family).await,
        }
    }

    /// One UPDATE from a peer: its changes join the burst.
    async fn received(&mut self, id: PeerId, decoded: crate::packet::Decoded) {
        let treat_as_withdraw = decoded.treat_as_withdraw();
        for error in &decoded.errors {
            warn!(peer = ?self.peers.get(&id).map(|e| e.config.address), %error, "malformed attribute");
        }
        if let Message::Update(update) = decoded.message {
            let end_of_rib = update.end_of_rib_family();
            self.update(id, update, treat_as_withdraw);
            if let Some(family) = end_of_rib {
                self.end_of_rib(id, family).await;
            }
        }
    }

    async fn established(&mut self, id: PeerId, parameters: SessionParameters) {
        let Some(entry) = self.peers.get_mut(&id) else {
            return;
        };
        info!(peer = %entry.config.address, hold_time = parameters.hold_time, "session established");
        self.infos.insert(
            id,
            PeerInfo {
                address: entry.config.address,
                router_id: parameters.peer_router_id,
                internal: entry.config.asn == self.config.asn,
            },
        );
        let families = parameters.families.clone();
        // RFC 4724 - Section 4.2: stale routes of a family the peer no longer says it kept
        // forwarding for go at once; the rest wait for its End-of-RIB, bounded by its
        // restart time.
        let kept: Vec<Family> = parameters
            .peer_graceful_restart
            .iter()
            .flat_map(|gr| &gr.families)
            .filter(|f| f.forwarding_preserved)
            .map(|f| f.family)
            .collect();
        let restart_time = parameters
            .peer_graceful_restart
            .as_ref()
            .map_or(0, |gr| gr.restart_time);
        entry.session = Some(parameters);
        entry.received = 0;
        entry.end_of_rib.clear();
        entry.advertised.clear();
        if let Some(stale) = entry.stale.take() {
            let (waiting, dropped): (Vec<Family>, Vec<Family>) =
                stale.pending.into_iter().partition(|f| kept.contains(f));
            let mut changes = Vec::new();
            for family in dropped {
                changes.extend(self.flush_stale(id, family));
            }
            if !waiting.is_empty() {
                let generation = self.restart_timer(id, restart_time);
                if let Some(entry) = self.peers.get_mut(&id) {
                    entry.stale = Some(StaleRoutes {
                        pending: waiting,
                        generation,
                    });
                }
            } else {
                self.infos.remove(&id.stale());
            }
            self.propagate(changes).await;
        }
        for family in families {
            self.send_table(id, family).await;
        }
    }

    /// A session ended: the peer's routes are withdrawn, or kept as stale when the peer
    /// does graceful restart and the session ended without a NOTIFICATION (RFC 4724 -
    /// Section 4.2).
    async fn down(&mut self, id: PeerId, error: SessionError) {
        info!(peer = ?self.peers.get(&id).map(|e| e.config.address), %error, "session down");
        let Some(entry) = self.peers.get_mut(&id) else {
            return;
        };
        let session = entry.session.take();
        entry.advertised.clear();
        let restart = match (
            &error,
            session
                .as_ref()
                .and_then(|s| s.peer_graceful_restart.as_ref().map(|gr| (gr, s))),
        ) {
            (SessionError::ConnectionFailed, Some((gr, session))) => {
                let families: Vec<Family> = gr
                    .families
                    .iter()
                    .map(|f| f.family)
                    .filter(|f| session.families.contains(f))
                    .collect();
                (!families.is_empty() && self.config.graceful_restart.is_some())
                    .then_some((gr.restart_time, families))
            }
            _ => None,
        };
        let info = self.infos.remove(&id);
        let Some((restart_time, families)) = restart else {
            self.infos.remove(&id.stale());
            entry.stale = None;
            let mut changes = self.withdraw_peer(id);
            changes.extend(self.withdraw_peer(id.stale()));
            self.propagate(changes).await;
            return;
        };
        info!(peer = %entry.config.address, restart_time, "keeping the peer's routes while it restarts");
        if let Some(info) = info {
            self.infos.insert(id.stale(), info);
        }
        let mut changes: Vec<(IpNet, BestChange)> = self
            .ipv4
            .rename_peer(id, id.stale(), &mut self.store, &self.infos)
            .into_iter()
            .map(|(p, c)| (IpNet::V4(p), c))
            .collect();
        changes.extend(
            self.ipv6
                .rename_peer(id, id.stale(), &mut self.store, &self.infos)
                .into_iter()
                .map(|(p, c)| (IpNet::V6(p), c)),
        );
        // Routes of families the peer does not restart gracefully go now.
        for family in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
            if !families.contains(&family) {
                changes.extend(self.flush_stale(id, family));
            }
        }
        let generation = self.restart_timer(id, restart_time);
        if let Some(entry) = self.peers.get_mut(&id) {
            entry.stale = Some(StaleRoutes {
                pending: families,
                generation,
            });
        }
        self.propagate(changes).await;
    }

    /// Starts a restart timer for `peer`; returns its generation.
    fn restart_timer(&mut self, peer: PeerId, seconds: u16) -> u64 {
        self.generation += 1;
        let generation = self.generation;
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(u64::from(seconds))).await;
            let _ = internal
                .send(Internal::RestartTimerExpired { peer, generation })
                .await;
        });
        generation
    }

    async fn internal(&mut self, event: Internal) {
        self.flush().await;
        let Internal::RestartTimerExpired { peer, generation } = event;
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        if entry
            .stale
            .as_ref()
            .is_none_or(|stale| stale.generation != generation)
        {
            return;
        }
        let Some(stale) = entry.stale.take() else {
            return;
        };
        info!(peer = %entry.config.address, "restart time over: stale routes withdrawn");
        let mut changes = Vec::new();
        for family in stale.pending {
            changes.extend(self.flush_stale(peer, family));
        }
        self.infos.remove(&peer.stale());
        self.propagate(changes).await;
    }

    /// RFC 4724 - Section 4.2: End-of-RIB from a restarted peer ends its stale routes of
    /// that family.
    async fn end_of_rib(&mut self, id: PeerId, family: Family) {
        let Some(entry) = self.peers.get_mut(&id) else {
            return;
        };
        if !entry.end_of_rib.contains(&family) {
            entry.end_of_rib.push(family);
        }
        let Some(stale) = entry.stale.as_mut() else {
            return;
        };
        if !stale.pending.contains(&family) {
            return;
        }
        stale.pending.retain(|f| *f != family);
        if stale.pending.is_empty() {
            entry.stale = None;
        }
        let finished = entry.stale.is_none();
        let changes = self.flush_stale(id, family);
        if finished {
            self.infos.remove(&id.stale());
        }
        self.propagate(changes).await;
    }

    /// Withdraws `peer`'s stale routes of `family`.
    fn flush_stale(&mut self, peer: PeerId, family: Family) -> Vec<(IpNet, BestChange)> {
        if family == Family::IPV4_UNICAST {
            self.ipv4
                .withdraw_peer(peer.stale(), &mut self.store, &self.infos)
                .into_iter()
                .map(|(p, c)| (IpNet::V4(p), c))
                .collect()
        } else {
            self.ipv6
                .withdraw_peer(peer.stale(), &mut self.store, &self.infos)
                .into_iter()
                .map(|(p, c)| (IpNet::V6(p), c))
                .collect()
        }
    }

    /// Sends `id` every best route of `family`, then its End-of-RIB (RFC 4724 - Section 2).
    async fn send_table(&mut self, id: PeerId, family: Family) {
        let negotiated = self
            .peers
            .get(&id)
            .and_then(|entry| entry.session.as_ref())
            .is_some_and(|s| s.families.contains(&family));
        if !negotiated {
            return;
        }
        let best: Vec<(IpNet, BestChange)> = self
            .best_paths(family)
            .into_iter()
            .map(|(prefix, path)| (prefix, BestChange::Best(path)))
            .collect();
        self.send_changes(id, &best).await;
        let Some(entry) = self.peers.get(&id) else {
            return;
        };
        let mut bytes = Vec::new();
        if Message::Update(Update::end_of_rib(family))
            .encode(&Negotiated::default(), &mut bytes)
            .is_ok()
        {
            let _ = entry.commands.send(PeerCommand::SendUpdates(bytes)).await;
        }
    }

    /// Takes in one UPDATE; its best-path changes join [`Speaker::pending`].
    fn update(&mut self, id: PeerId, update: Update, treat_as_withdraw: bool) {
        let mut withdrawn: Vec<IpNet> = update.withdrawn.into_iter().map(IpNet::V4).collect();
        match update.mp_unreach {
            Some(Prefixes::V4(prefixes)) => withdrawn.extend(prefixes.into_iter().map(IpNet::V4)),
            Some(Prefixes::V6(prefixes)) => withdrawn.extend(prefixes.into_iter().map(IpNet::V6)),
            None => {}
        }
        // An UPDATE carries IPv4 NLRI, or MP_REACH_NLRI, or (rarely) both: each set of
        // prefixes goes in with its own next hop.
        let mut sets: Vec<(Vec<IpNet>, PathAttributes)> = Vec::new();
        let mut attributes = Some(update.attributes);
        if !update.nlri.is_empty() {
            // Cloned only when MP_REACH_NLRI needs them too.
            let shared = match update.mp_reach {
                Some(_) => attributes.clone().unwrap_or_default(),
                None => attributes.take().unwrap_or_default(),
            };
            let attributes = PathAttributes {
                mp_next_hop: None,
                ..shared
            };
            sets.push((update.nlri.into_iter().map(IpNet::V4).collect(), attributes));
        }
        if let Some(MpReach { next_hop, nlri }) = update.mp_reach {
            let prefixes: Vec<IpNet> = match nlri {
                Prefixes::V4(prefixes) => prefixes.into_iter().map(IpNet::V4).collect(),
                Prefixes::V6(prefixes) => prefixes.into_iter().map(IpNet::V6).collect(),
            };
            // NEXT_HOP means nothing for routes in MP_REACH_NLRI (RFC 4760 - Section 3).
            let attributes = PathAttributes {
                mp_next_hop: Some(next_hop),
                next_hop: None,
                ..attributes.unwrap_or_default()
            };
            sets.push((prefixes, attributes));
        }
        let Some(view) = self.view(id) else { return };
        let Some(policy) = self
            .peers
            .get(&id)
            .map(|entry| entry.config.import_policy.clone())
        else {
            return;
        };
        // While the peer restarts, what it sends again replaces its stale route.
        let stale = self
            .peers
            .get(&id)
            .is_some_and(|entry| entry.stale.is_some())
            .then(|| id.stale());
        let mut changes = std::mem::take(&mut self.pending);
        let before = changes.len();
        for prefix in withdrawn {
            if let Some(change) = self.withdraw(prefix, id) {
                changes.push((prefix, change));
            }
            if let Some(change) = stale.and_then(|stale| self.withdraw(prefix, stale)) {
                changes.push((prefix, change));
            }
        }
        if changes.len() != before {
            self.pending_may_repeat = true;
        }
        for (announced, attributes) in sets {
            if let Some(entry) = self.peers.get_mut(&id) {
                entry.received += announced.len();
            }
            let imported = if treat_as_withdraw {
                None
            } else {
                import(attributes, &view, &self.local())
                    .map_err(
                        |rejection| debug!(%rejection, count = announced.len(), "routes refused"),
                    )
                    .ok()
            };
            // A policy that does not look at prefixes is applied once for the whole set.
            // (The attributes move into the store: no copy per UPDATE.)
            let (once, imported): (Option<Option<AttributeId>>, _) = match imported {
                None => (Some(None), None),
                Some(attributes) if !policy.depends_on_prefix() => {
                    let accepted = announced.first().and_then(|first| {
                        policy
                            .apply_owned(first, attributes)
                            .map(|a| self.store.intern(a))
                    });
                    (Some(accepted), None)
                }
                Some(attributes) => (None, Some(attributes)),
            };
            let mut interned: HashMap<PathAttributes, AttributeId> = HashMap::new();
            for prefix in announced {
                let accepted = match (once, &imported) {
                    (Some(accepted), _) => accepted,
                    (None, Some(attributes)) => policy.apply(&prefix, attributes).map(|a| {
                        let store = &mut self.store;
                        *interned.entry(a.clone()).or_insert_with(|| store.intern(a))
                    }),
                    (None, None) => None,
                };
                let change = match accepted {
                    Some(attributes) => {
                        let known = self.len_of(&prefix);
                        let change = self.announce(
                            prefix,
                            Path {
                                peer: id,
                                attributes,
                            },
                        );
                        // Not a prefix new to the table: it may be in the burst already.
                        if self.len_of(&prefix) == known {
                            self.pending_may_repeat = true;
                        }
                        change
                    }
                    // RFC 7606 treat-as-withdraw, or refused by import rules or policy.
                    None => {
                        self.pending_may_repeat = true;
                        self.withdraw(prefix, id)
                    }
                };
                if let Some(change) = change {
                    changes.push((prefix, change));
                }
            }
        }
        self.pending = changes;
    }

    /// How many prefixes the table of `prefix`'s family holds.
    fn len_of(&self, prefix: &IpNet) -> usize {
        match prefix {
            IpNet::V4(_) => self.ipv4.len(),
            IpNet::V6(_) => self.ipv6.len(),
        }
    }

    /// Passes on the burst's best-path changes, each prefix's last one only.
    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut changes = std::mem::take(&mut self.pending);
        if std::mem::take(&mut self.pending_may_repeat) {
            keep_last_change(&mut changes);
        }
        self.send_out(&changes).await;
        // The room stays for the next burst, rather than grow again from nothing; not
        // the room of a session's whole table going at once.
        changes.clear();
        if changes.capacity() <= 2 * MAX_PENDING_CHANGES {
            self.pending = changes;
        }
    }

    /// Passes best-path changes on, after those of the burst so far.
    async fn propagate(&mut self, changes: Vec<(IpNet, BestChange)>) {
        if changes.is_empty() {
            return;
        }
        // A prefix may be in both, or twice in `changes` (a peer's path and its stale one).
        self.pending.extend(changes);
        self.pending_may_repeat = true;
        self.flush().await;
    }

    /// Passes best-path changes (at most one per prefix) to the agent and to every
    /// Established peer.
    async fn send_out(&mut self, changes: &[(IpNet, BestChange)]) {
        // Runs of prefixes share a source and attributes: look each up once per run.
        let mut last: Option<(Path, Arc<PathAttributes>, Option<IpAddr>)> = None;
        for chunk in changes.chunks(ROUTE_CHANGES_PER_BATCH) {
            let batch: Vec<RouteChange> = chunk
                .iter()
                .map(|(prefix, change)| match change {
                    BestChange::Best(path) => {
                        let (attributes, from) = match &last {
                            Some((same, attributes, from)) if same == path => {
                                (Arc::clone(attributes), *from)
                            }
                            _ => {
                                let attributes =
                                    self.store.shared(path.attributes).unwrap_or_default();
                                let from = self
                                    .peers
                                    .get(&path.peer.base())
                                    .map(|entry| entry.config.address);
                                last = Some((*path, Arc::clone(&attributes), from));
                                (attributes, from)
                            }
                        };
                        RouteChange::Best {
                            prefix: *prefix,
                            attributes,
                            from,
                        }
                    }
                    BestChange::Unreachable => RouteChange::Withdrawn { prefix: *prefix },
                })
                .collect();
            // A slow agent slows the speaker down here, rather than have it queue the
            // table in memory.
            let _ = self.routes.send(batch).await;
        }
        let established: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, entry)| entry.session.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in established {
            self.send_changes(id, changes).await;
        }
    }

    /// Sends `to` what the changes mean for it: announcements grouped by the attributes
    /// export and policy give them, and withdrawals of what it was sent before. Families
    /// the session did not negotiate are left out.
    async fn send_changes(&mut self, to: PeerId, changes: &[(IpNet, BestChange)]) {
        let local = self.local();
        let Some(to_view) = self.view(to) else { return };
        let Some(entry) = self.peers.get(&to) else {
            return;
        };
        let policy = entry.config.export_policy.clone();
        let originated_only = entry.config.originated_only;
        let families = entry
            .session
            .as_ref()
            .map(|s| s.families.clone())
            .unwrap_or_default();
        let per_prefix = policy.depends_on_prefix();
        // Export depends only on the family and the source path's peer and attributes:
        // computed once per distinct triple, not per prefix (and the policy too, unless it
        // looks at prefixes).
        type Key = (Family, PeerId, AttributeId);
        let mut exported: HashMap<Key, Option<PathAttributes>, FastHash> = HashMap::default();
        let mut grouped: HashMap<Key, Option<usize>, FastHash> = HashMap::default();
        let mut groups: Vec<(PathAttributes, Vec<IpNet>)> = Vec::new();
        let mut group_of: HashMap<(Family, PathAttributes), usize, FastHash> = HashMap::default();
        // The group of the previous prefix's source: runs of prefixes share it.
        let mut last_group: Option<(Key, Option<usize>)> = None;
        let mut group_for =
            |family: Family,
             out: PathAttributes,
             groups: &mut Vec<(PathAttributes, Vec<IpNet>)>| {
                *group_of.entry((family, out.clone())).or_insert_with(|| {
                    groups.push((out, Vec::new()));
                    groups.len() - 1
                })
            };
        let mut withdrawals: Vec<IpNet> = Vec::new();
        // Taken out for the loop (which does not wait, so nothing else sees it missing)
        // and put back after: one lookup of the peer, not one per prefix.
        let mut advertised = match self.peers.get_mut(&to) {
            Some(entry) => std::mem::take(&mut entry.advertised),
            None => return,
        };
        for (prefix, change) in changes {
            let family = prefix_family(prefix);
            if !families.contains(&family) {
                continue;
            }
            let group = match change {
                BestChange::Best(path) => {
                    let key = (family, path.peer, path.attributes);
                    let export_of = |path: &Path| {
                        if originated_only && path.peer != PeerId::LOCAL {
                            return None;
                        }
                        let attributes = self.store.get(path.attributes)?;
                        let source = if path.peer == PeerId::LOCAL {
                            Source::Local
                        } else {
                            // A stale route is still its peer's: never sent back to it.
                            Source::Peer {
                                view: self.view(path.peer)?,
                                peer: path.peer.base(),
                            }
                        };
                        export(attributes, &source, &to_view, to, &local, family)
                    };
                    if per_prefix {
                        let out = exported.entry(key).or_insert_with(|| export_of(path));
                        out.as_ref()
                            .and_then(|out| policy.apply(prefix, out))
                            .map(|out| group_for(family, out, &mut groups))
                    } else if let Some((last_key, group)) = last_group
                        && last_key == key
                    {
                        group
                    } else if let Some(group) = grouped.get(&key) {
                        last_group = Some((key, *group));
                        *group
                    } else {
                        let group = export_of(path)
                            .and_then(|out| policy.apply_owned(prefix, out))
                            .map(|out| group_for(family, out, &mut groups));
                        grouped.insert(key, group);
                        last_group = Some((key, group));
                        group
                    }
                }
                BestChange::Unreachable => None,
            };
            match group {
                Some(index) => {
                    groups[index].1.push(*prefix);
                    advertised.insert(*prefix);
                }
                None => {
                    if advertised.remove(prefix) {
                        withdrawals.push(*prefix);
                    }
                }
            }
        }
        let Some(entry) = self.peers.get_mut(&to) else {
            return;
        };
        entry.advertised = advertised;
        let negotiated = entry
            .session
            .as_ref()
            .map_or_else(Negotiated::default, |s| s.negotiated);
        let bytes = encode_changes(&withdrawals, &groups, &negotiated);
        if !bytes.is_empty() {
            let _ = entry.commands.send(PeerCommand::SendUpdates(bytes)).await;
        }
    }

    fn snapshot(&self) -> Vec<PeerStatus> {
        let mut rows: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(id, entry)| PeerStatus {
                address: entry.config.address,
                asn: entry.config.asn,
                label: entry.config.label.clone(),
                state: entry.state,
                since: entry.since,
                last_error: entry.last_error.as_ref().map(ToString::to_string),
                received: entry.received,
                // Stale routes of a restarting peer count as its own.
                accepted: [*id, id.stale()]
                    .iter()
                    .map(|&p| self.ipv4.paths_from(p) + self.ipv6.paths_from(p))
                    .sum(),
                advertised: entry.advertised.len(),
                end_of_rib: entry.end_of_rib.clone(),
            })
            .collect();
        rows.sort_by_key(|row| row.address);
        rows
    }
}

/// Keeps each prefix's last change only, in the order of those last changes: what the
/// burst did to the prefix in the end.
fn keep_last_change(changes: &mut Vec<(IpNet, BestChange)>) {
    let mut last: HashMap<IpNet, usize, FastHash> = HashMap::default();
    last.reserve(changes.len());
    for (index, (prefix, _)) in changes.iter().enumerate() {
        last.insert(*prefix, index);
    }
    let mut index = 0;
    changes.retain(|(prefix, _)| {
        let keep = last.get(prefix) == Some(&index);
        index += 1;
        keep
    });
}

/// The UPDATEs that carry `withdrawals` and the announcement `groups`.
fn encode_changes(
    withdrawals: &[IpNet],
    groups: &[(PathAttributes, Vec<IpNet>)],
    negotiated: &Negotiated,
) -> Vec<u8> {
    // Room for what is usual (a /24 takes 4 octets, a set's header and attributes some
    // 80), so that a burst's UPDATEs are not copied over and over as the buffer grows.
    let announced: usize = groups.iter().map(|(_, prefixes)| prefixes.len()).sum();
    let mut bytes = Vec::with_capacity(withdrawals.len() * 5 + announced * 5 + groups.len() * 96);
    let ipv4: Vec<Ipv4Net> = withdrawals
        .iter()
        .filter_map(|p| if let IpNet::V4(p) = p { Some(*p) } else { None })
        .collect();
    let ipv6: Vec<Ipv6Net> = withdrawals
        .iter()
        .filter_map(|p| if let IpNet::V6(p) = p { Some(*p) } else { None })
        .collect();
    for chunk in ipv4.chunks(IPV4_WITHDRAWALS_PER_UPDATE) {
        let update = Update {
            withdrawn: chunk.to_vec(),
            ..Update::default()
        };
        if let Err(error) = Message::Update(update).encode(negotiated, &mut bytes) {
            warn!(%error, "withdrawal not sent");
        }
    }
    for chunk in ipv6.chunks(IPV6_WITHDRAWALS_PER_UPDATE) {
        let update = Update {
            mp_unreach: Some(Prefixes::V6(chunk.to_vec())),
            ..Update::default()
        };
        if let Err(error) = Message::Update(update).encode(negotiated, &mut bytes) {
            warn!(%error, "withdrawal not sent");
        }
    }
    for (attributes, prefixes) in groups {
        let ipv4: Vec<Ipv4Net> = prefixes
            .iter()
            .filter_map(|p| if let IpNet::V4(p) = p { Some(*p) } else { None })
            .collect();
        let ipv6: Vec<Ipv6Net> = prefixes
            .iter()
            .filter_map(|p| if let IpNet::V6(p) = p { Some(*p) } else { None })
            .collect();
        if !ipv4.is_empty()
            && let Err(error) =
                Update::encode_ipv4_packed(attributes, &ipv4, negotiated, &mut bytes)
        {
            warn!(%error, "announcement not sent");
        }
        match (ipv6.is_empty(), attributes.mp_next_hop) {
            (true, _) => {}
            (false, Some(next_hop)) => {
                if let Err(error) =
                    Update::encode_ipv6_packed(attributes, next_hop, &ipv6, negotiated, &mut bytes)
                {
                    warn!(%error, "announcement not sent");
                }
            }
            (false, None) => warn!(
                count = ipv6.len(),
                "IPv6 routes without a next hop not sent"
            ),
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use tokio::io::DuplexStream;

    use super::*;
    use crate::packet::{AsPath, AsSegment, Open, SegmentKind};
    use crate::testing::RawPeer;

    /// One speaker in a test: its command sender and the route changes it reports.
    struct Node {
        address: IpAddr,
        asn: u32,
        commands: mpsc::Sender<SpeakerCommand<DuplexStream>>,
        routes: mpsc::Receiver<Vec<RouteChange>>,
        /// Changes received but not yet looked at.
        pending: std::collections::VecDeque<RouteChange>,
    }

    fn node(last_octet: u8, asn: u32, cluster_id: Option<Ipv4Addr>) -> Node {
        node_with(last_octet, asn, cluster_id, None)
    }

    fn node_with(
        last_octet: u8,
        asn: u32,
        cluster_id: Option<Ipv4Addr>,
        graceful_restart: Option<GracefulRestartSettings>,
    ) -> Node {
        let router_id = Ipv4Addr::new(192, 0, 2, last_octet);
        let (commands, commands_rx) = mpsc::channel(64);
        let (routes_tx, routes) = mpsc::channel(256);
        let config = SpeakerConfig {
            asn,
            router_id,
            cluster_id,
            graceful_restart,
        };
        tokio::spawn(run_speaker(config, commands_rx, routes_tx));
        Node {
            address: IpAddr::V4(router_id),
            asn,
            commands,
            routes,
            pending: std::collections::VecDeque::new(),
        }
    }

    async fn command(node: &Node, command: SpeakerCommand<DuplexStream>) {
        if node.commands.send(command).await.is_err() {
            panic!("speaker task ended");
        }
    }

    /// Peers `active` with `passive` over an in-memory pipe; `tweak` adjusts the active
    /// side's view of the passive one (and the other way round).
    async fn link(active: &Node, passive: &Node, tweak: impl Fn(&mut PeerConfig, bool)) {
        let mut waiting = PeerConfig {
            passive: true,
            ..PeerConfig::new(active.address, active.asn, passive.address)
        };
        tweak(&mut waiting, false);
        let refuse = refusing();
        command(passive, SpeakerCommand::AddPeer(waiting, refuse)).await;
        let (to_passive, from) = (passive.commands.clone(), active.address);
        let connector: Connector<DuplexStream> = Arc::new(move || {
            let to_passive = to_passive.clone();
            Box::pin(async move {
                let (ours, theirs) = tokio::io::duplex(256 * 1024);
                let accepted = SpeakerCommand::Accepted {
                    from,
                    stream: theirs,
                };
                to_passive
                    .send(accepted)
                    .await
                    .map_err(|_| io::Error::other("speaker gone"))?;
                Ok(ours)
            })
        });
        let mut dialing = PeerConfig::new(passive.address, passive.asn, active.address);
        tweak(&mut dialing, true);
        command(active, SpeakerCommand::AddPeer(dialing, connector)).await;
    }

    async fn next_route(node: &mut Node) -> RouteChange {
        loop {
            if let Some(change) = node.pending.pop_front() {
                return change;
            }
            match node.routes.recv().await {
                Some(batch) => node.pending.extend(batch),
                None => panic!("speaker task ended"),
            }
        }
    }

    async fn peers(node: &Node) -> Vec<PeerStatus> {
        let (reply, answer) = oneshot::channel();
        command(node, SpeakerCommand::Peers(reply)).await;
        answer.await.expect("the speaker answers")
    }

    fn block(text: &str) -> IpNet {
        text.parse().expect("literal prefix")
    }

    fn asns(attributes: &PathAttributes) -> Vec<u32> {
        attributes
            .as_path
            .iter()
            .flat_map(|p| &p.segments)
            .flat_map(|s| s.asns.clone())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn routes_travel_both_ways_over_ebgp_and_are_withdrawn() {
        let (mut a, mut b) = (node(1, 64512, None), node(2, 64513, None));
        link(&a, &b, |_, _| {}).await;
        let prefix = block("198.51.100.0/24");
        command(
            &a,
            SpeakerCommand::Originate {
                prefix,
                attributes: PathAttributes::default(),
            },
        )
        .await;
        assert!(matches!(
            next_route(&mut a).await,
            RouteChange::Best { from: None, .. }
        ));

        let RouteChange::Best {
            prefix: learned,
            attributes,
            from,
        } = next_route(&mut b).await
        else {
            panic!("not a route")
        };
        assert_eq!((learned, from), (prefix, Some(a.address)));
        assert_eq!(asns(&attributes), vec![64512]);
        assert_eq!(attributes.next_hop, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(attributes.origin, Some(Origin::Igp));

        let rows = peers(&b).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].state, rows[0].received, rows[0].accepted),
            (State::Established, 1, 1)
        );
        assert_eq!(peers(&a).await[0].advertised, 1);

        // The other way, with an AS path of its own.
        let other = block("203.0.113.0/24");
        let path = AsPath {
            segments: vec![AsSegment {
                kind: SegmentKind::Sequence,
                asns: vec![64999],
            }],
        };
        command(
            &b,
            SpeakerCommand::Originate {
                prefix: other,
                attributes: PathAttributes {
                    as_path: Some(path),
                    ..PathAttributes::default()
                },
            },
        )
        .await;
        next_route(&mut b).await;
        let RouteChange::Best { attributes, .. } = next_route(&mut a).await else {
            panic!("not a route")
        };
        assert_eq!(asns(&attributes), vec![64513, 64999]);

        command(&a, SpeakerCommand::StopOriginating { prefix }).await;
        assert_eq!(next_route(&mut a).await, RouteChange::Withdrawn { prefix });
        assert_eq!(next_route(&mut b).await, RouteChange::Withdrawn { prefix });
        assert_eq!(peers(&a).await[0].advertised, 0);

        // A forgets B: B's route leaves A's table, A's session ends at B.
        command(&a, SpeakerCommand::RemovePeer(b.address)).await;
        assert_eq!(
            next_route(&mut a).await,
            RouteChange::Withdrawn { prefix: other }
        );
        assert!(peers(&a).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_route_reflector_passes_client_routes_between_clients() {
        let cluster = Ipv4Addr::new(192, 0, 2, 100);
        let (mut reflector, mut one, mut two) = (
            node(100, 64512, Some(cluster)),
            node(1, 64512, None),
            node(2, 64512, None),
        );
        // The clients dial the reflector; the reflector marks them as clients.
        let as_client =
            |config: &mut PeerConfig, dialing: bool| config.route_reflector_client = !dialing;
        link(&one, &reflector, as_client).await;
        link(&two, &reflector, as_client).await;

        let prefix = block("198.51.100.64/26");
        command(
            &one,
            SpeakerCommand::Originate {
                prefix,
                attributes: PathAttributes::default(),
            },
        )
        .await;
        next_route(&mut one).await;
        let RouteChange::Best { from, .. } = next_route(&mut reflector).await else {
            panic!("not a route")
        };
        assert_eq!(from, Some(one.address));
        let RouteChange::Best {
            prefix: learned,
            attributes,
            from,
        } = next_route(&mut two).await
        else {
            panic!("not a route")
        };
        assert_eq!((learned, from), (prefix, Some(reflector.address)));
        assert_eq!(attributes.originator_id, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(attributes.cluster_list, vec![cluster]);
        // iBGP: the next hop is still client one, and LOCAL_PREF travels.
        assert_eq!(attributes.next_hop, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(attributes.local_pref, Some(crate::rib::DEFAULT_LOCAL_PREF));
        assert!(asns(&attributes).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn import_and_export_policies_filter_and_change_routes() {
        use crate::packet::Community;
        use crate::policy::{Change, Conditions, PrefixMatch, Rule, Verdict};
        let (mut a, mut b) = (node(1, 64512, None), node(2, 64513, None));
        let refused = block("203.0.113.0/24");
        // A sends B everything but 203.0.113.0/24, tagged 64512:9; B raises LOCAL_PREF.
        let tag = Community((64512 << 16) | 9);
        let export = Policy {
            rules: vec![
                Rule {
                    conditions: Conditions {
                        prefixes: vec![PrefixMatch::exact(refused)],
                        ..Conditions::default()
                    },
                    verdict: Verdict::Reject,
                },
                Rule {
                    conditions: Conditions::default(),
                    verdict: Verdict::Accept(vec![Change::AddCommunity(tag)]),
                },
            ],
            default_accept: false,
        };
        let import = Policy {
            rules: vec![Rule {
                conditions: Conditions {
                    communities: vec![tag],
                    ..Conditions::default()
                },
                verdict: Verdict::Accept(vec![Change::LocalPref(200)]),
            }],
            default_accept: false,
        };
        link(&a, &b, move |config, dialing| {
            if dialing {
                config.export_policy = export.clone();
            } else {
                config.import_policy = import.clone();
            }
        })
        .await;
        for prefix in [refused, block("198.51.100.0/24")] {
            command(
                &a,
                SpeakerCommand::Originate {
                    prefix,
                    attributes: PathAttributes::default(),
                },
            )
            .await;
            next_route(&mut a).await;
        }
        let RouteChange::Best {
            prefix, attributes, ..
        } = next_route(&mut b).await
        else {
            panic!("not a route")
        };
        assert_eq!(prefix, block("198.51.100.0/24"));
        assert_eq!(attributes.communities, vec![tag]);
        assert_eq!(attributes.local_pref, Some(200));
        let (reply, answer) = oneshot::channel();
        command(&b, SpeakerCommand::Routes(reply)).await;
        let routes = answer.await.expect("the speaker answers");
        assert_eq!(
            routes.iter().map(|r| r.prefix).collect::<Vec<_>>(),
            vec![block("198.51.100.0/24")]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_routes_travel_on_ipv6_sessions_with_their_next_hop() {
        let (mut a, mut b) = (node(1, 64512, None), node(2, 64513, None));
        a.address = "2001:db8::1".parse().expect("literal");
        b.address = "2001:db8::2".parse().expect("literal");
        link(&a, &b, |_, _| {}).await;
        let v6 = block("2001:db8:100::/48");
        // An IPv4 route is not for this IPv6-only session.
        command(
            &a,
            SpeakerCommand::Originate {
                prefix: block("198.51.100.0/24"),
                attributes: PathAttributes::default(),
            },
        )
        .await;
        command(
            &a,
            SpeakerCommand::Originate {
                prefix: v6,
                attributes: PathAttributes::default(),
            },
        )
        .await;
        next_route(&mut a).await;
        next_route(&mut a).await;
        let RouteChange::Best {
            prefix,
            attributes,
            from,
        } = next_route(&mut b).await
        else {
            panic!("not a route")
        };
        assert_eq!((prefix, from), (v6, Some(a.address)));
        assert_eq!(attributes.route_next_hop(), Some(a.address));
        assert_eq!(attributes.next_hop, None);
        assert_eq!(asns(&attributes), vec![64512]);
        command(&a, SpeakerCommand::StopOriginating { prefix: v6 }).await;
        next_route(&mut a).await;
        assert_eq!(
            next_route(&mut b).await,
            RouteChange::Withdrawn { prefix: v6 }
        );
        let (reply, answer) = oneshot::channel();
        command(&b, SpeakerCommand::Routes(reply)).await;
        assert!(answer.await.expect("the speaker answers").is_empty());
    }

    /// A connector for a peer that only listens: dialling it fails.
    fn refusing() -> Connector<DuplexStream> {
        Arc::new(|| Box::pin(async { Err(io::Error::other("passive")) }))
    }

    /// `peer` (AS 64513) configured on `node` as passive, then connected to it as a raw
    /// session that does not offer graceful restart.
    async fn passive_raw_peer(node: &Node, peer: IpAddr) -> RawPeer {
        let config = PeerConfig {
            passive: true,
            ..PeerConfig::new(peer, 64513, node.address)
        };
        command(node, SpeakerCommand::AddPeer(config, refusing())).await;
        wait_for_state(node, State::Active).await;
        connect_raw(node, peer, restarting_open(false)).await
    }

    /// Connects to `node` as `from`, and exchanges OPENs (with `open`) and KEEPALIVEs.
    async fn connect_raw(node: &Node, from: IpAddr, open: Open) -> RawPeer {
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        command(
            node,
            SpeakerCommand::Accepted {
                from,
                stream: theirs,
            },
        )
        .await;
        let mut raw = RawPeer::new(ours);
        assert!(matches!(raw.receive().await, Message::Open(_)));
        raw.send(&Message::Open(open), Negotiated::default()).await;
        raw.send(&Message::Keepalive, Negotiated::default()).await;
        assert_eq!(raw.receive().await, Message::Keepalive);
        raw
    }

    fn restarting_open(restart_state: bool) -> Open {
        let graceful_restart = GracefulRestart {
            restart_state,
            notification: false,
            restart_time: 60,
            families: vec![GracefulRestartFamily {
                family: Family::IPV4_UNICAST,
                forwarding_preserved: restart_state,
            }],
        };
        Open::new(
            64513,
            90,
            Ipv4Addr::new(192, 0, 2, 2),
            vec![
                crate::packet::Capability::Multiprotocol(Family::IPV4_UNICAST),
                crate::packet::Capability::GracefulRestart(graceful_restart),
            ],
        )
    }

    fn announcement(prefixes: &[&str]) -> Message {
        Message::Update(Update {
            attributes: PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath {
                    segments: vec![AsSegment {
                        kind: SegmentKind::Sequence,
                        asns: vec![64513],
                    }],
                }),
                next_hop: Some(Ipv4Addr::new(192, 0, 2, 2)),
                ..PathAttributes::default()
            },
            nlri: prefixes
                .iter()
                .map(|p| p.parse().expect("literal"))
                .collect(),
            ..Update::default()
        })
    }

    /// Waits until the speaker's only peer is in `state` again, letting paused time run
    /// past the peer's idle hold (5 s after a failure).
    async fn wait_for_state(node: &Node, state: State) {
        loop {
            if peers(node)
                .await
                .first()
                .is_some_and(|row| row.state == state)
            {
                return;
            }
            tokio::time::advance(std::time::Duration::from_secs(1)).await;
        }
    }

    async fn routes(node: &Node) -> Vec<IpNet> {
        let (reply, answer) = oneshot::channel();
        command(node, SpeakerCommand::Routes(reply)).await;
        answer
            .await
            .expect("the speaker answers")
            .into_iter()
            .map(|r| r.prefix)
            .collect()
    }

    /// The best routes' prefixes, each with whether it is stale.
    async fn routes_and_staleness(node: &Node) -> Vec<(IpNet, bool)> {
        let (reply, answer) = oneshot::channel();
        command(node, SpeakerCommand::Routes(reply)).await;
        answer
            .await
            .expect("the speaker answers")
            .into_iter()
            .map(|r| (r.prefix, r.stale))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_can_be_offered_its_own_restart_time() {
        let settings = GracefulRestartSettings {
            restart_time: 120,
            restarting: false,
        };
        let a = node_with(1, 64512, None, Some(settings));
        let refuse = refusing();
        for (last, restart_time, offered) in [(2, None, 120), (3, Some(30), 30)] {
            let peer: IpAddr = format!("192.0.2.{last}").parse().expect("literal");
            let config = PeerConfig {
                passive: true,
                restart_time,
                ..PeerConfig::new(peer, 64513, a.address)
            };
            command(&a, SpeakerCommand::AddPeer(config, refuse.clone())).await;
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            command(
                &a,
                SpeakerCommand::Accepted {
                    from: peer,
                    stream: theirs,
                },
            )
            .await;
            let Message::Open(open) = RawPeer::new(ours).receive().await else {
                panic!("an OPEN first")
            };
            let time = open.capabilities.iter().find_map(|c| match c {
                crate::packet::Capability::GracefulRestart(gr) => Some(gr.restart_time),
                _ => None,
            });
            assert_eq!(time, Some(offered), "peer {peer}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarting_peers_routes_stay_until_its_end_of_rib() {
        let settings = GracefulRestartSettings {
            restart_time: 120,
            restarting: false,
        };
        let mut a = node_with(1, 64512, None, Some(settings));
        let peer: IpAddr = "192.0.2.2".parse().expect("literal");
        let mut raw = passive_raw_peer(&a, peer).await;
        raw.send(
            &announcement(&["198.51.100.0/24", "203.0.113.0/24"]),
            Negotiated::default(),
        )
        .await;
        next_route(&mut a).await;
        next_route(&mut a).await;

        // The connection drops without a NOTIFICATION: the routes stay, as stale.
        drop(raw);
        wait_for_state(&a, State::Active).await;
        assert_eq!(
            routes_and_staleness(&a).await,
            vec![
                (block("198.51.100.0/24"), true),
                (block("203.0.113.0/24"), true)
            ]
        );
        assert!(
            a.pending.is_empty() && a.routes.try_recv().is_err(),
            "nothing was withdrawn"
        );

        // Back, with forwarding kept: it announces one route again, then End-of-RIB.
        let mut raw = connect_raw(&a, peer, restarting_open(true)).await;
        raw.send(&announcement(&["198.51.100.0/24"]), Negotiated::default())
            .await;
        raw.send(
            &Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)),
            Negotiated::default(),
        )
        .await;
        loop {
            if next_route(&mut a).await
                == (RouteChange::Withdrawn {
                    prefix: block("203.0.113.0/24"),
                })
            {
                break;
            }
        }
        assert_eq!(
            routes_and_staleness(&a).await,
            vec![(block("198.51.100.0/24"), false)]
        );
        assert_eq!(peers(&a).await[0].accepted, 1);

        // Gone for good: the stale route goes when the restart time (60 s) is over.
        drop(raw);
        assert_eq!(
            next_route(&mut a).await,
            RouteChange::Withdrawn {
                prefix: block("198.51.100.0/24")
            }
        );
        assert!(routes(&a).await.is_empty());
    }

    #[test]
    fn a_burst_keeps_each_prefixs_last_change_in_order() {
        let mut store = AttributeStore::default();
        let ids: Vec<AttributeId> = (0..4)
            .map(|local_pref| {
                store.intern(PathAttributes {
                    local_pref: Some(local_pref),
                    ..PathAttributes::default()
                })
            })
            .collect();
        let path = |set: usize| {
            BestChange::Best(Path {
                peer: PeerId(1),
                attributes: ids[set],
            })
        };
        let (p, q, r) = (
            block("198.51.100.0/24"),
            block("203.0.113.0/24"),
            block("192.0.2.0/24"),
        );
        let mut changes = vec![
            (p, path(1)),
            (q, path(1)),
            (p, BestChange::Unreachable),
            (r, path(2)),
            (q, path(3)),
        ];
        keep_last_change(&mut changes);
        assert_eq!(
            changes,
            vec![(p, BestChange::Unreachable), (r, path(2)), (q, path(3))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_prefix_announced_and_withdrawn_in_one_read_ends_withdrawn() {
        let mut a = node(1, 64512, None);
        let peer: IpAddr = "192.0.2.2".parse().expect("literal");
        let mut raw = passive_raw_peer(&a, peer).await;
        // Three UPDATEs in one write: the reader takes them in one read, the speaker in
        // one burst.
        let mut bytes = Vec::new();
        let withdrawal = Message::Update(Update {
            withdrawn: vec!["198.51.100.0/24".parse().expect("literal")],
            ..Update::default()
        });
        for message in [
            announcement(&["198.51.100.0/24"]),
            withdrawal,
            announcement(&["203.0.113.0/24"]),
        ] {
            message
                .encode(&Negotiated::default(), &mut bytes)
                .expect("encodes");
        }
        tokio::io::AsyncWriteExt::write_all(&mut raw.stream, &bytes)
            .await
            .expect("pipe open");
        // However the reads fell, the agent ends with 203.0.113.0/24 alone.
        let mut best = HashSet::new();
        while !(best.len() == 1 && best.contains(&block("203.0.113.0/24"))) {
            match next_route(&mut a).await {
                RouteChange::Best { prefix, .. } => best.insert(prefix),
                RouteChange::Withdrawn { prefix } => best.remove(&prefix),
            };
        }
        assert_eq!(routes(&a).await, vec![block("203.0.113.0/24")]);
        assert_eq!(peers(&a).await[0].accepted, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_graceful_restart_a_dropped_session_takes_its_routes() {
        let mut a = node(1, 64512, None);
        let peer: IpAddr = "192.0.2.2".parse().expect("literal");
        let mut raw = passive_raw_peer(&a, peer).await;
        raw.send(&announcement(&["198.51.100.0/24"]), Negotiated::default())
            .await;
        next_route(&mut a).await;
        drop(raw);
        assert_eq!(
            next_route(&mut a).await,
            RouteChange::Withdrawn {
                prefix: block("198.51.100.0/24")
            }
        );
    }
}
