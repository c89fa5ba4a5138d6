//! The tokio tasks that run one peer: the peer task, which owns the peer's [`Session`] FSM
//! and its timers, and the I/O tasks it spawns per connection (connect, read, write).
//!
//! ```text
//!            commands (start, stop, accepted socket, UPDATE bytes)
//!  speaker ─────────────────────────────────────────────► peer task ──► PeerEvent ──► speaker
//!                                                          │  ▲   owns Session, timers
//!               ┌────────── bytes to send (unbounded) ─────┘  │
//!               ▼                                             │ Inbound (bounded)
//!          writer task ──► socket ──► reader task: frame, decode ──┘
//! ```
//!
//! Reading and writing are separate tasks so that a peer that stops reading can never stop
//! this side from reading (two speakers each blocked on a full send buffer while sending a
//! full table is the classic BGP deadlock). The reader decodes before anything reaches the
//! peer task, and its bounded channel pushes back on the socket when the consumer is slow.
//! Events from a connection carry its generation, so that late events from a connection
//! already dropped are ignored.
//!
//! A second connection from the peer while the first is in OpenSent or OpenConfirm is a
//! collision (RFC 4271 - Section 6.8): it gets an FSM of its own (the candidate) until an
//! OPEN decides which connection stays. A new connection while Established is closed
//! (RFC 4271 - Section 6.8), unless graceful restart was negotiated with the peer: then it
//! means the peer restarted (RFC 4724 - Section 4.2), the old session ends as failed (so
//! its routes are kept as stale) and the new one takes over.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::neighbor::{
    Action, Event, Session, SessionConfig, SessionError, SessionParameters, State, Timer,
    collision_winner,
};
use crate::packet::{DecodeError, Decoded, Family, Message, Negotiated, Open, message_length};
use crate::rib::PeerId;

/// Opens a connection to the peer (for tests, an in-memory pipe).
pub type Connector<S> =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = io::Result<S>> + Send>> + Send + Sync>;

/// What the speaker asks of a peer task.
#[derive(Debug)]
pub enum PeerCommand<S> {
    /// RFC 4271 ManualStart.
    Start,
    /// RFC 4271 ManualStop: CEASE to the peer, and no automatic restart.
    Stop,
    /// A connection from the peer's address, accepted by the speaker's listener.
    Accepted(S),
    /// Encoded UPDATEs to send; dropped unless the session is Established.
    SendUpdates(Vec<u8>),
}

/// What a peer task reports to the speaker.
// UPDATEs are nearly all of the traffic: boxing them would add an allocation per message to
// shrink the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// The FSM changed state; `last_error` says why it last went down, for the peer table.
    State {
        state: State,
        last_error: Option<SessionError>,
    },
    Established(SessionParameters),
    Down(SessionError),
    /// An UPDATE received while Established, with its RFC 7606 attribute errors.
    Update(Decoded),
    /// UPDATEs received while Established, in order: what one read from the socket
    /// brought. A full table arrives as tens of thousands of UPDATEs; passing them on in
    /// batches costs one channel send and one wake-up of the speaker per read, not per
    /// message.
    Updates(Vec<Decoded>),
    RouteRefresh(Family),
}

/// How many batches of decoded messages (each what one read brought) may wait between a
/// reader and its peer task before the reader stops reading the socket.
const INBOUND_QUEUE: usize = 2;
/// How much a reader asks of the socket at once: room for several full messages.
const READ_CHUNK: usize = 64 * 1024;

/// What the I/O tasks tell the peer task, tagged with the connection's generation.
#[allow(clippy::large_enum_variant)] // as PeerEvent: mostly UPDATEs
#[derive(Debug)]
enum Inbound<S> {
    Connected(S),
    ConnectFailed(io::Error),
    /// The messages framed and decoded from one read, in order.
    Messages(Vec<Decoded>),
    DecodeError(DecodeError),
    /// The socket closed or failed, for reading or for writing.
    Closed(Option<io::Error>),
}

/// One connection's I/O tasks.
struct Connection {
    generation: u64,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    reader_task: JoinHandle<()>,
}

/// Runs one peer until the speaker drops its command sender. Events go out tagged with
/// `id`, so that one channel can carry every peer's.
pub async fn run_peer<S>(
    id: PeerId,
    config: SessionConfig,
    connector: Connector<S>,
    mut commands: mpsc::Receiver<PeerCommand<S>>,
    events: mpsc::Sender<(PeerId, PeerEvent)>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let session = match Session::new(config.clone()) {
        Ok(session) => session,
        Err(error) => {
            warn!(%error, "peer not started");
            return;
        }
    };
    let (inbound_tx, mut inbound) = mpsc::channel(INBOUND_QUEUE);
    let mut peer = Peer {
        id,
        config,
        primary: Slot::new(session),
        candidate: None,
        connector,
        events,
        inbound_tx,
        generation: 0,
        connecting: None,
        updates: Vec::new(),
    };
    loop {
        let deadline = peer.next_deadline();
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => peer.command(command).await,
                None => break,
            },
            Some((generation, message)) = inbound.recv() => peer.inbound(generation, message).await,
            () = sleep_until(deadline.map(|(_, _, at)| at)) => {
                if let Some((which, timer, _)) = deadline {
                    if let Some(slot) = peer.slot_mut(which) {
                        slot.deadlines[timer_index(timer)] = None;
                    }
                    peer.fsm(which, Event::TimerExpired(timer)).await;
                }
            }
        }
    }
    peer.primary.drop_connection();
    if let Some(candidate) = peer.candidate.as_mut() {
        candidate.drop_connection();
    }
}

/// RFC 4271 - Section 10: the ConnectRetry and Keepalive timers are multiplied by a
/// random factor between 0.75 and 1.0, so that two speakers that dial each other at the
/// same moment (a connection collision) do not retry in lockstep, and keepalives of many
/// sessions do not bunch up.
fn jittered(duration: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Every RandomState is seeded afresh: its empty hash is a cheap random number.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    duration.mul_f64(0.75 + (random % 1024) as f64 / 4096.0)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn timer_index(timer: Timer) -> usize {
    match timer {
        Timer::ConnectRetry => 0,
        Timer::Hold => 1,
        Timer::Keepalive => 2,
        Timer::IdleHold => 3,
    }
}

const TIMERS: [Timer; 4] = [
    Timer::ConnectRetry,
    Timer::Hold,
    Timer::Keepalive,
    Timer::IdleHold,
];

/// One FSM and its connection. A peer has its primary slot, and while a second connection
/// from the peer is being resolved (RFC 4271 - Section 6.8), a candidate.
struct Slot {
    session: Session,
    connection: Option<Connection>,
    deadlines: [Option<Instant>; 4],
    /// This side dialed the connection.
    initiated_locally: bool,
}

impl Slot {
    fn new(session: Session) -> Slot {
        Slot {
            session,
            connection: None,
            deadlines: [None; 4],
            initiated_locally: false,
        }
    }

    fn generation(&self) -> Option<u64> {
        self.connection.as_ref().map(|c| c.generation)
    }

    /// Closes the connection: the writer sends what is queued (a NOTIFICATION, say) and
    /// shuts the socket down; the reader stops at once.
    fn drop_connection(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.reader_task.abort();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Primary,
    Candidate,
}

struct Peer<S> {
    id: PeerId,
    config: SessionConfig,
    primary: Slot,
    candidate: Option<Slot>,
    connector: Connector<S>,
    events: mpsc::Sender<(PeerId, PeerEvent)>,
    inbound_tx: mpsc::Sender<(u64, Inbound<S>)>,
    generation: u64,
    /// The generation and task of a connection attempt in progress (the primary's).
    connecting: Option<(u64, JoinHandle<()>)>,
    /// UPDATEs of the current batch of inbound messages, not yet passed on: they go to
    /// the speaker together, before any other event (so order is kept).
    updates: Vec<Decoded>,
}

impl<S> Peer<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    fn slot_mut(&mut self, which: Which) -> Option<&mut Slot> {
        match which {
            Which::Primary => Some(&mut self.primary),
            Which::Candidate => self.candidate.as_mut(),
        }
    }

    fn next_deadline(&self) -> Option<(Which, Timer, Instant)> {
        let slots = [
            (Which::Primary, Some(&self.primary)),
            (Which::Candidate, self.candidate.as_ref()),
        ];
        slots
            .into_iter()
            .filter_map(|(which, slot)| slot.map(|slot| (which, slot)))
            .flat_map(|(which, slot)| {
                TIMERS.into_iter().filter_map(move |timer| {
                    slot.deadlines[timer_index(timer)].map(|at| (which, timer, at))
                })
            })
            .min_by_key(|(_, _, at)| *at)
    }

    async fn command(&mut self, command: PeerCommand<S>) {
        match command {
            PeerCommand::Start => self.fsm(Which::Primary, Event::ManualStart).await,
            PeerCommand::Stop => {
                if let Some(mut candidate) = self.candidate.take() {
                    candidate.drop_connection();
                }
                self.fsm(Which::Primary, Event::ManualStop).await;
            }
            PeerCommand::Accepted(stream) => self.accepted(stream).await,
            PeerCommand::SendUpdates(bytes) => {
                if self.primary.session.state() == State::Established
                    && let Some(connection) = &self.primary.connection
                    && connection.writer.send(bytes).is_ok()
                {
                    self.fsm(Which::Primary, Event::UpdateSent).await;
                }
            }
        }
    }

    /// A connection from the peer's address.
    async fn accepted(&mut self, stream: S) {
        match self.primary.session.state() {
            // Idle refuses connections (RFC 4271 - Section 8.2.2).
            State::Idle => debug!("refusing a connection: the session is stopped or backing off"),
            // Waiting for a connection: take this one, and give up our own attempt.
            State::Connect | State::Active => {
                self.abandon_connect();
                self.adopt(Which::Primary, stream, false);
                self.fsm(Which::Primary, Event::TcpConnected).await;
            }
            // RFC 4271 - Section 6.8: a collision with a connection in Established closes
            // the newly created connection. A restarting peer with graceful restart
            // would then wait out our hold timer before it could come back, so RFC 4724
            // - Section 4.2 has the receiving speaker take a new connection from such a
            // peer as its restart: end the old session as failed (its routes kept as
            // stale), and start again on the new one. Only when both sides advertised
            // the capability; otherwise the established session stays.
            State::Established if !self.primary.session.graceful_restart_negotiated() => {
                debug!(
                    "closing a new connection: the session is Established and graceful \
                     restart was not negotiated"
                );
                drop(stream);
            }
            State::Established => {
                info!(
                    "a new connection from an Established peer with graceful restart: it restarted"
                );
                self.fsm(Which::Primary, Event::TcpConnectionFails).await;
                self.primary.session.handle(Event::ManualStart);
                self.abandon_connect();
                self.primary.deadlines = [None; 4];
                self.adopt(Which::Primary, stream, false);
                self.fsm(Which::Primary, Event::TcpConnected).await;
            }
            // OpenSent or OpenConfirm: a connection collision (RFC 4271 - Section 6.8).
            // The new connection runs its own FSM until an OPEN says which one stays.
            State::OpenSent | State::OpenConfirm => {
                if self.candidate.is_some() {
                    debug!("refusing a third connection while a collision is being resolved");
                    return;
                }
                let config = SessionConfig {
                    passive: true,
                    ..self.config.clone()
                };
                let Ok(mut session) = Session::new(config) else {
                    return;
                };
                session.handle(Event::ManualStart);
                self.candidate = Some(Slot::new(session));
                self.adopt(Which::Candidate, stream, false);
                self.fsm(Which::Candidate, Event::TcpConnected).await;
            }
        }
    }

    /// The slot whose connection is of `generation`, if any still is.
    fn which(&self, generation: u64) -> Option<Which> {
        if self.primary.generation() == Some(generation) {
            Some(Which::Primary)
        } else if self.candidate.as_ref().and_then(Slot::generation) == Some(generation) {
            Some(Which::Candidate)
        } else {
            None
        }
    }

    async fn inbound(&mut self, generation: u64, inbound: Inbound<S>) {
        let which = self.which(generation);
        match inbound {
            Inbound::Connected(stream) => {
                if self
                    .connecting
                    .as_ref()
                    .is_some_and(|(g, _)| *g == generation)
                {
                    self.connecting = None;
                    self.adopt(Which::Primary, stream, true);
                    self.fsm(Which::Primary, Event::TcpConnected).await;
                }
            }
            Inbound::ConnectFailed(error) => {
                if self
                    .connecting
                    .as_ref()
                    .is_some_and(|(g, _)| *g == generation)
                {
                    debug!(%error, "connection attempt failed");
                    self.connecting = None;
                    self.fsm(Which::Primary, Event::TcpConnectionFails).await;
                }
            }
            // Late news from a connection already dropped.
            _ if which.is_none() => {}
            Inbound::Messages(messages) => {
                self.updates.reserve(messages.len());
                for decoded in messages {
                    // A message can end its connection (a NOTIFICATION) or move it to
                    // the primary slot (a collision resolved): the rest of the batch
                    // follows the connection, as separate reads would.
                    let Some(which) = self.which(generation) else {
                        break;
                    };
                    self.message(which, decoded).await;
                }
                self.flush_updates().await;
            }
            Inbound::DecodeError(error) => {
                warn!(%error, "malformed message from the peer");
                if let Some(which) = which {
                    self.fsm(which, Event::MessageError(error)).await;
                }
            }
            Inbound::Closed(error) => {
                debug!(error = ?error, "connection closed");
                if let Some(which) = which {
                    self.fsm(which, Event::TcpConnectionFails).await;
                }
            }
        }
    }

    async fn message(&mut self, which: Which, decoded: Decoded) {
        match decoded.message {
            Message::Open(open) => {
                if self.resolve_collision(which, &open).await {
                    // This connection lost: its OPEN goes nowhere.
                    return;
                }
                let which = if which == Which::Candidate && self.candidate.is_none() {
                    Which::Primary
                } else {
                    which
                };
                self.fsm(which, Event::OpenReceived(open)).await;
            }
            Message::Keepalive => self.fsm(which, Event::KeepaliveReceived).await,
            Message::Notification(notification) => {
                self.fsm(which, Event::NotificationReceived(notification))
                    .await;
            }
            Message::Update(update) => {
                self.fsm(which, Event::UpdateReceived).await;
                if which == Which::Primary && self.primary.session.state() == State::Established {
                    self.updates.push(Decoded {
                        message: Message::Update(update),
                        errors: decoded.errors,
                    });
                }
            }
            Message::RouteRefresh(refresh) => {
                self.fsm(which, Event::RouteRefreshReceived).await;
                if which == Which::Primary && self.primary.session.state() == State::Established {
                    self.report(PeerEvent::RouteRefresh(refresh.family)).await;
                }
            }
        }
    }

    /// RFC 4271 - Section 6.8: an OPEN on one connection while the other is in OpenConfirm
    /// decides the collision: the connection initiated by the speaker with the higher BGP
    /// identifier stays, the other gets a CEASE. A candidate left alone (its rival gone)
    /// becomes the primary. Returns whether the connection the OPEN came on lost.
    async fn resolve_collision(&mut self, which: Which, open: &Open) -> bool {
        let Some(candidate) = self.candidate.as_ref() else {
            return false;
        };
        // The primary reached Established while the candidate waited for its OPEN (the
        // peer's KEEPALIVE came first). RFC 4271 - Section 6.8: "a connection collision
        // with an existing BGP connection that is in the Established state causes
        // closing of the newly created connection". Letting the candidate carry on
        // instead left it half-open behind the primary's back: if the peer resolved the
        // collision the other way, it kept the candidate up while our primary went Idle.
        if which == Which::Candidate && self.primary.session.state() == State::Established {
            info!("connection collision with the Established session: closing the new connection");
            self.fsm(Which::Candidate, Event::CollisionDump).await;
            self.candidate = None;
            return true;
        }
        let other_state = match which {
            Which::Primary => candidate.session.state(),
            Which::Candidate => self.primary.session.state(),
        };
        if which == Which::Candidate
            && matches!(
                self.primary.session.state(),
                State::Idle | State::Connect | State::Active
            )
        {
            self.promote_candidate();
            return false;
        }
        if other_state != State::OpenConfirm {
            return false;
        }
        let keep_local = collision_winner(self.config.router_id, open.bgp_identifier);
        let primary_wins = if self.primary.initiated_locally == candidate.initiated_locally {
            // Both from the peer: the newer one (the candidate) is the one it still uses.
            false
        } else {
            self.primary.initiated_locally == keep_local
        };
        info!(primary_wins, remote = %open.bgp_identifier, "connection collision resolved");
        if primary_wins {
            self.fsm(Which::Candidate, Event::CollisionDump).await;
            self.candidate = None;
            which == Which::Candidate
        } else {
            self.fsm(Which::Primary, Event::CollisionDump).await;
            self.promote_candidate();
            which == Which::Primary
        }
    }

    /// The candidate takes the primary's place, with the peer's own passive setting back.
    fn promote_candidate(&mut self) {
        let Some(mut candidate) = self.candidate.take() else {
            return;
        };
        candidate.session.set_passive(self.config.passive);
        self.primary.drop_connection();
        self.abandon_connect();
        self.primary = candidate;
    }

    /// Runs an event through one slot's FSM and carries out what it says. Only the
    /// primary's changes are reported.
    async fn fsm(&mut self, which: Which, event: Event) {
        let Some(slot) = self.slot_mut(which) else {
            return;
        };
        let before = slot.session.state();
        let actions = slot.session.handle(event);
        for action in actions {
            self.act(which, action).await;
        }
        let Some(slot) = self.slot_mut(which) else {
            return;
        };
        let state = slot.session.state();
        if which == Which::Candidate {
            // A candidate that failed is simply forgotten.
            if state == State::Idle
                && let Some(mut candidate) = self.candidate.take()
            {
                candidate.drop_connection();
            }
            return;
        }
        if state != before {
            info!(from = %before, to = %state, "BGP session state");
            let last_error = self.primary.session.last_error().cloned();
            self.report(PeerEvent::State { state, last_error }).await;
        }
    }

    async fn act(&mut self, which: Which, action: Action) {
        match action {
            Action::Connect => {
                if which == Which::Primary {
                    self.connect();
                }
            }
            Action::Disconnect => {
                if which == Which::Primary {
                    self.abandon_connect();
                }
                if let Some(slot) = self.slot_mut(which) {
                    slot.drop_connection();
                }
            }
            Action::SendOpen(open) => self.send(which, &Message::Open(open)),
            Action::SendKeepalive => self.send(which, &Message::Keepalive),
            Action::SendNotification(notification) => {
                warn!(%notification, "sending NOTIFICATION");
                self.send(which, &Message::Notification(notification));
            }
            Action::StartTimer(timer, duration) => {
                let duration = match timer {
                    Timer::ConnectRetry | Timer::Keepalive => jittered(duration),
                    Timer::Hold | Timer::IdleHold => duration,
                };
                if let Some(slot) = self.slot_mut(which) {
                    slot.deadlines[timer_index(timer)] = Some(Instant::now() + duration);
                }
            }
            Action::StopTimer(timer) => {
                if let Some(slot) = self.slot_mut(which) {
                    slot.deadlines[timer_index(timer)] = None;
                }
            }
            Action::SessionUp(parameters) => {
                if which == Which::Primary {
                    self.report(PeerEvent::Established(parameters)).await;
                }
            }
            Action::SessionDown(error) => {
                if which == Which::Primary {
                    self.report(PeerEvent::Down(error)).await;
                }
            }
        }
    }

    async fn report(&mut self, event: PeerEvent) {
        self.flush_updates().await;
        // The speaker gone means the peer task is about to end: nothing to report to.
        let _ = self.events.send((self.id, event)).await;
    }

    /// Passes on the UPDATEs gathered so far.
    async fn flush_updates(&mut self) {
        if !self.updates.is_empty() {
            let updates = std::mem::take(&mut self.updates);
            let _ = self
                .events
                .send((self.id, PeerEvent::Updates(updates)))
                .await;
        }
    }

    fn send(&mut self, which: Which, message: &Message) {
        let Some(connection) = self
            .slot_mut(which)
            .and_then(|slot| slot.connection.as_ref())
        else {
            return;
        };
        let mut bytes = Vec::new();
        // The FSM's own messages always encode (OPEN capabilities are few and short);
        // should one not, the peer's hold timer notices the silence.
        match message.encode(&Negotiated::default(), &mut bytes) {
            Ok(()) => {
                let _ = connection.writer.send(bytes);
            }
            Err(error) => warn!(%error, "message not sent"),
        }
    }

    fn connect(&mut self) {
        debug!("connecting");
        self.abandon_connect();
        self.generation += 1;
        let generation = self.generation;
        let connector = Arc::clone(&self.connector);
        let inbound = self.inbound_tx.clone();
        let task = tokio::spawn(async move {
            let result = match connector().await {
                Ok(stream) => Inbound::Connected(stream),
                Err(error) => Inbound::ConnectFailed(error),
            };
            let _ = inbound.send((generation, result)).await;
        });
        self.connecting = Some((generation, task));
    }

    fn abandon_connect(&mut self) {
        if let Some((_, task)) = self.connecting.take() {
            // Still pending: no answer yet (when the connect-retry timer ends it, a peer
            // that is down, filtered, or dropping our SYNs for a wrong MD5 password), or
            // the peer's own connection came first.
            debug!("connection attempt abandoned before it completed");
            task.abort();
        }
    }

    /// Makes `stream` the connection of a slot, with a reader and a writer task.
    fn adopt(&mut self, which: Which, stream: S, initiated_locally: bool) {
        self.generation += 1;
        let generation = self.generation;
        let (read_half, write_half) = tokio::io::split(stream);
        let (writer, writer_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(
            write_half,
            writer_rx,
            generation,
            self.inbound_tx.clone(),
        ));
        let reader_task = tokio::spawn(read_loop(read_half, generation, self.inbound_tx.clone()));
        if let Some(slot) = self.slot_mut(which) {
            slot.drop_connection();
            slot.connection = Some(Connection {
                generation,
                writer,
                reader_task,
            });
            slot.initiated_locally = initiated_locally;
        }
    }
}

/// Writes what the peer task queues, until the queue is closed; then shuts the socket down.
async fn write_loop<S: AsyncWrite>(
    mut socket: WriteHalf<S>,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    generation: u64,
    inbound: mpsc::Sender<(u64, Inbound<S>)>,
) {
    while let Some(bytes) = queue.recv().await {
        if let Err(error) = socket.write_all(&bytes).await {
            let _ = inbound
                .send((generation, Inbound::Closed(Some(error))))
                .await;
            return;
        }
    }
    let _ = socket.shutdown().await;
}

/// Reads, frames and decodes messages until the socket closes or a message is malformed.
///
/// The reader tracks the one negotiated option decoding depends on, 4-octet AS numbers,
/// from the peer's OPEN itself: this side always offers the capability (RFC 6793 - Section
/// 4), so the peer's OPEN settles it, and the first UPDATE is decoded right however fast
/// it follows.
async fn read_loop<S: AsyncRead>(
    mut socket: ReadHalf<S>,
    generation: u64,
    inbound: mpsc::Sender<(u64, Inbound<S>)>,
) {
    let mut negotiated = Negotiated::default();
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut start = 0;
    loop {
        // Hand over every whole message in the buffer, in one batch, allocated once at its
        // size: a decoded UPDATE is some 400 octets, and a read of a real table holds
        // hundreds of them, so growing the batch by doubling copied it over and over.
        let mut messages = Vec::with_capacity(whole_messages(&buffer[start..]));
        let mut failure = None;
        loop {
            let length = match message_length(&buffer[start..]) {
                Ok(Some(length)) if buffer.len() - start >= length => length,
                Ok(_) => break,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
            let frame = &buffer[start..start + length];
            start += length;
            match Message::decode(frame, &negotiated) {
                Ok(decoded) => {
                    if let Message::Open(open) = &decoded.message {
                        negotiated = negotiated_from(open);
                    }
                    messages.push(decoded);
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        // What came before a malformed message is handled first, as if read alone.
        if !messages.is_empty()
            && inbound
                .send((generation, Inbound::Messages(messages)))
                .await
                .is_err()
        {
            return;
        }
        if let Some(error) = failure {
            let _ = inbound
                .send((generation, Inbound::DecodeError(error)))
                .await;
            return;
        }
        // Keep the unread tail at the front, then read more behind it.
        buffer.drain(..start);
        start = 0;
        buffer.reserve(READ_CHUNK);
        match socket.read_buf(&mut buffer).await {
            Ok(0) => {
                let _ = inbound.send((generation, Inbound::Closed(None))).await;
                return;
            }
            Ok(_) => {}
            Err(error) => {
                let _ = inbound
                    .send((generation, Inbound::Closed(Some(error))))
                    .await;
                return;
            }
        }
    }
}

/// How many whole messages `buffer` starts with (up to the first that is incomplete or
/// has a malformed header, which decoding then reports).
fn whole_messages(mut buffer: &[u8]) -> usize {
    let mut count = 0;
    while let Ok(Some(length)) = message_length(buffer)
        && buffer.len() >= length
    {
        buffer = &buffer[length..];
        count += 1;
    }
    count
}

fn negotiated_from(peer_open: &Open) -> Negotiated {
    Negotiated {
        four_octet_as: peer_open.four_octet_asn().is_some(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::io::DuplexStream;
    use tokio::sync::oneshot;

    use super::*;
    use crate::packet::consts::{cease_subcode, error_code, open_subcode};
    use crate::packet::{
        AsPath, AsSegment, Capability, GracefulRestart, Origin, PathAttributes, SegmentKind, Update,
    };
    use crate::testing::RawPeer;

    const A_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const B_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    fn refusing_connector() -> Connector<DuplexStream> {
        Arc::new(|| Box::pin(async { Err(io::Error::other("this side only listens")) }))
    }

    /// Next event from a peer task; a closed channel fails the test.
    async fn next_event(events: &mut mpsc::Receiver<(PeerId, PeerEvent)>) -> PeerEvent {
        match events.recv().await {
            Some((_, event)) => event,
            None => panic!("peer task ended"),
        }
    }

    /// Skips events until one matches.
    async fn wait_for(
        events: &mut mpsc::Receiver<(PeerId, PeerEvent)>,
        wanted: impl Fn(&PeerEvent) -> bool,
    ) -> PeerEvent {
        loop {
            let event = next_event(events).await;
            if wanted(&event) {
                return event;
            }
        }
    }

    struct Spawned {
        commands: mpsc::Sender<PeerCommand<DuplexStream>>,
        events: mpsc::Receiver<(PeerId, PeerEvent)>,
    }

    fn spawn(config: SessionConfig, connector: Connector<DuplexStream>) -> Spawned {
        let (commands, commands_rx) = mpsc::channel(8);
        let (events_tx, events) = mpsc::channel(64);
        tokio::spawn(run_peer(
            PeerId(1),
            config,
            connector,
            commands_rx,
            events_tx,
        ));
        Spawned { commands, events }
    }

    async fn command(peer: &Spawned, command: PeerCommand<DuplexStream>) {
        if peer.commands.send(command).await.is_err() {
            panic!("peer task ended");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn two_peers_establish_over_a_pipe() {
        let passive = SessionConfig {
            passive: true,
            ..SessionConfig::new(64513, 64512, B_ID)
        };
        let mut b = spawn(passive, refusing_connector());
        command(&b, PeerCommand::Start).await;
        // A's connections arrive at B as accepted sockets.
        let to_b = b.commands.clone();
        let connector: Connector<DuplexStream> = Arc::new(move || {
            let to_b = to_b.clone();
            Box::pin(async move {
                let (ours, theirs) = tokio::io::duplex(64 * 1024);
                to_b.send(PeerCommand::Accepted(theirs))
                    .await
                    .map_err(|_| io::Error::other("B is gone"))?;
                Ok(ours)
            })
        });
        let mut a = spawn(SessionConfig::new(64512, 64513, A_ID), connector);
        command(&a, PeerCommand::Start).await;

        let up = |event: &PeerEvent| matches!(event, PeerEvent::Established(_));
        let PeerEvent::Established(at_a) = wait_for(&mut a.events, up).await else {
            unreachable!()
        };
        let PeerEvent::Established(at_b) = wait_for(&mut b.events, up).await else {
            unreachable!()
        };
        assert_eq!((at_a.peer_asn, at_a.peer_router_id), (64513, B_ID));
        assert_eq!((at_b.peer_asn, at_b.peer_router_id), (64512, A_ID));
        assert!(at_a.negotiated.four_octet_as && at_b.negotiated.four_octet_as);

        // A stops: B hears a CEASE and goes down.
        command(&a, PeerCommand::Stop).await;
        let down = wait_for(&mut b.events, |e| matches!(e, PeerEvent::Down(_))).await;
        let PeerEvent::Down(SessionError::Received(notification)) = down else {
            panic!("{down:?}")
        };
        assert_eq!(
            (notification.code, notification.subcode),
            (error_code::CEASE, cease_subcode::ADMINISTRATIVE_SHUTDOWN)
        );
    }

    /// A peer task (AS 64512) that connects to the test, which plays AS 64513.
    async fn with_raw_peer(config: SessionConfig) -> (Spawned, RawPeer) {
        let (pipe_tx, pipe_rx) = oneshot::channel();
        let pipe_tx = Arc::new(std::sync::Mutex::new(Some(pipe_tx)));
        let connector: Connector<DuplexStream> = Arc::new(move || {
            let pipe_tx = Arc::clone(&pipe_tx);
            Box::pin(async move {
                let (ours, theirs) = tokio::io::duplex(64 * 1024);
                let sender = pipe_tx.lock().ok().and_then(|mut slot| slot.take());
                match sender {
                    Some(sender) => sender
                        .send(theirs)
                        .map_err(|_| io::Error::other("test gone"))?,
                    None => return Err(io::Error::other("one connection per test")),
                }
                Ok(ours)
            })
        });
        let peer = spawn(config, connector);
        command(&peer, PeerCommand::Start).await;
        let stream = pipe_rx.await.expect("the peer task connects");
        (peer, RawPeer::new(stream))
    }

    fn open_from_b(asn: u32, hold_time: u16) -> Message {
        Message::Open(Open::new(asn, hold_time, B_ID, Vec::new()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_dropped_when_the_hold_timer_expires() {
        let (mut peer, mut raw) = with_raw_peer(SessionConfig::new(64512, 64513, A_ID)).await;
        assert!(matches!(raw.receive().await, Message::Open(_)));
        raw.send(&open_from_b(64513, 9), Negotiated::default())
            .await;
        raw.send(&Message::Keepalive, Negotiated::default()).await;
        let up = wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Established(_))).await;
        assert!(
            matches!(up, PeerEvent::Established(p) if p.hold_time == 9 && p.keepalive_time == 3)
        );
        // Say nothing more. Paused time runs ahead to the hold timer.
        let down = wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Down(_))).await;
        assert_eq!(down, PeerEvent::Down(SessionError::HoldTimerExpired));
        let Message::Notification(notification) = raw.receive_not_keepalive().await else {
            panic!("no NOTIFICATION")
        };
        assert_eq!(notification.code, error_code::HOLD_TIMER_EXPIRED);
    }

    #[tokio::test(start_paused = true)]
    async fn keepalives_keep_a_quiet_session_up() {
        let (mut peer, mut raw) = with_raw_peer(SessionConfig::new(64512, 64513, A_ID)).await;
        raw.receive().await;
        raw.send(&open_from_b(64513, 9), Negotiated::default())
            .await;
        raw.send(&Message::Keepalive, Negotiated::default()).await;
        wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Established(_))).await;
        // Answer each of the peer task's KEEPALIVEs (every 3 s) for a minute of paused time.
        for _ in 0..20 {
            assert_eq!(raw.receive().await, Message::Keepalive);
            raw.send(&Message::Keepalive, Negotiated::default()).await;
        }
        // Still up: a stop now reports the session going down for that reason.
        command(&peer, PeerCommand::Stop).await;
        let down = wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Down(_))).await;
        assert_eq!(down, PeerEvent::Down(SessionError::Stopped));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wrong_peer_as_is_refused_and_shown() {
        let (mut peer, mut raw) = with_raw_peer(SessionConfig::new(64512, 64513, A_ID)).await;
        raw.receive().await;
        raw.send(&open_from_b(64999, 90), Negotiated::default())
            .await;
        let Message::Notification(notification) = raw.receive().await else {
            panic!("no NOTIFICATION")
        };
        assert_eq!(
            (notification.code, notification.subcode),
            (error_code::OPEN_MESSAGE, open_subcode::BAD_PEER_AS)
        );
        let idle = wait_for(&mut peer.events, |e| {
            matches!(
                e,
                PeerEvent::State {
                    state: State::Idle,
                    ..
                }
            )
        })
        .await;
        let PeerEvent::State {
            last_error: Some(error),
            ..
        } = idle
        else {
            panic!("{idle:?}")
        };
        assert!(
            error
                .to_string()
                .contains("peer AS is 64999, expected 64513"),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn updates_from_a_two_octet_peer_arrive_with_four_octet_paths() {
        let (mut peer, mut raw) = with_raw_peer(SessionConfig::new(64512, 64513, A_ID)).await;
        raw.receive().await;
        // An old speaker: no 4-octet AS capability.
        let old = Open {
            my_as: 64513,
            hold_time: 90,
            bgp_identifier: B_ID,
            capabilities: Vec::new(),
        };
        let two_octet = Negotiated {
            four_octet_as: false,
        };
        raw.send(&Message::Open(old), two_octet).await;
        raw.send(&Message::Keepalive, two_octet).await;
        let path = AsPath {
            segments: vec![AsSegment {
                kind: SegmentKind::Sequence,
                asns: vec![64513, 4_200_000_000],
            }],
        };
        let update = Update {
            attributes: PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(path),
                next_hop: Some(B_ID),
                ..PathAttributes::default()
            },
            nlri: vec!["198.51.100.0/24".parse().expect("literal")],
            ..Update::default()
        };
        raw.send(&Message::Update(update.clone()), two_octet).await;
        let received = wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Updates(_))).await;
        let PeerEvent::Updates(mut updates) = received else {
            unreachable!()
        };
        assert_eq!(updates.len(), 1);
        let decoded = updates.remove(0);
        assert!(decoded.errors.is_empty());
        assert_eq!(decoded.message, Message::Update(update));
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_message_gets_its_notification_and_ends_the_session() {
        let (mut peer, mut raw) = with_raw_peer(SessionConfig::new(64512, 64513, A_ID)).await;
        raw.receive().await;
        raw.send(&open_from_b(64513, 90), Negotiated::default())
            .await;
        raw.send(&Message::Keepalive, Negotiated::default()).await;
        wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Established(_))).await;
        // A KEEPALIVE with a broken marker.
        let mut broken = vec![0xFF; 16];
        broken[0] = 0;
        broken.extend_from_slice(&[0, 19, 4]);
        raw.stream.write_all(&broken).await.expect("pipe open");
        let Message::Notification(notification) = raw.receive_not_keepalive().await else {
            panic!("no NOTIFICATION")
        };
        assert_eq!(
            (notification.code, notification.subcode),
            (error_code::MESSAGE_HEADER, 1)
        );
        let down = wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Down(_))).await;
        assert!(
            matches!(down, PeerEvent::Down(SessionError::Sent { .. })),
            "{down:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_is_retried_on_the_connect_retry_timer() {
        let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&attempts);
        let connector: Connector<DuplexStream> = Arc::new(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { Err(io::Error::from(io::ErrorKind::ConnectionRefused)) })
        });
        let mut peer = spawn(SessionConfig::new(64512, 64513, A_ID), connector);
        command(&peer, PeerCommand::Start).await;
        // Connect, Active (refused), Connect again on the timer, Active again.
        for expected in [State::Connect, State::Active, State::Connect, State::Active] {
            let PeerEvent::State { state, .. } = next_event(&mut peer.events).await else {
                panic!("not a state")
            };
            assert_eq!(state, expected);
        }
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn jitter_stays_between_three_quarters_and_the_whole_and_varies() {
        let base = std::time::Duration::from_secs(120);
        let samples: Vec<std::time::Duration> = (0..64).map(|_| jittered(base)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d >= base.mul_f64(0.75) && *d <= base)
        );
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(
            distinct.len() > 8,
            "{} distinct values of 64",
            distinct.len()
        );
    }

    fn open_with_id(bgp_identifier: Ipv4Addr) -> Message {
        Message::Open(Open::new(64513, 90, bgp_identifier, Vec::new()))
    }

    async fn second_connection(peer: &Spawned) -> RawPeer {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        command(peer, PeerCommand::Accepted(theirs)).await;
        RawPeer::new(ours)
    }

    #[tokio::test(start_paused = true)]
    async fn a_collision_keeps_the_connection_of_the_higher_bgp_identifier_its_peer_opened() {
        // We are 192.0.2.1, the peer 192.0.2.2: the peer's connection stays.
        let (mut peer, mut first) = with_raw_peer(SessionConfig::new(64512, 64513, A_ID)).await;
        assert!(matches!(first.receive().await, Message::Open(_)));
        first.send(&open_with_id(B_ID), Negotiated::default()).await;
        assert_eq!(first.receive().await, Message::Keepalive);
        let mut second = second_connection(&peer).await;
        assert!(matches!(second.receive().await, Message::Open(_)));
        second
            .send(&open_with_id(B_ID), Negotiated::default())
            .await;
        let Message::Notification(cease) = first.receive_not_keepalive().await else {
            panic!("no CEASE")
        };
        assert_eq!(
            (cease.code, cease.subcode),
            (
                error_code::CEASE,
                cease_subcode::CONNECTION_COLLISION_RESOLUTION
            )
        );
        assert_eq!(second.receive().await, Message::Keepalive);
        second
            .send(&Message::Keepalive, Negotiated::default())
            .await;
        let up = wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Established(_))).await;
        assert!(matches!(up, PeerEvent::Established(p) if p.peer_router_id == B_ID));
    }

    /// The first connection reaches Established while the second one (accepted in
    /// OpenConfirm) still waits for the peer's OPEN: when that OPEN comes, the second
    /// connection gets a CEASE and the Established session carries on.
    #[tokio::test(start_paused = true)]
    async fn a_collision_with_an_established_session_closes_the_new_connection() {
        let (mut peer, mut first) = with_raw_peer(SessionConfig::new(64512, 64513, A_ID)).await;
        assert!(matches!(first.receive().await, Message::Open(_)));
        first.send(&open_with_id(B_ID), Negotiated::default()).await;
        assert_eq!(first.receive().await, Message::Keepalive);
        let mut second = second_connection(&peer).await;
        assert!(matches!(second.receive().await, Message::Open(_)));
        first.send(&Message::Keepalive, Negotiated::default()).await;
        wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Established(_))).await;
        second
            .send(&open_with_id(B_ID), Negotiated::default())
            .await;
        let Message::Notification(cease) = second.receive_not_keepalive().await else {
            panic!("no CEASE on the new connection")
        };
        assert_eq!(
            (cease.code, cease.subcode),
            (
                error_code::CEASE,
                cease_subcode::CONNECTION_COLLISION_RESOLUTION
            )
        );
        first.send(&Message::Keepalive, Negotiated::default()).await;
        assert_eq!(first.receive().await, Message::Keepalive);
        while let Ok((_, event)) = peer.events.try_recv() {
            assert!(
                !matches!(event, PeerEvent::Down(_)),
                "the Established session went down: {event:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_collision_keeps_our_connection_when_our_bgp_identifier_is_higher() {
        let ours = Ipv4Addr::new(192, 0, 2, 9);
        let (mut peer, mut first) = with_raw_peer(SessionConfig::new(64512, 64513, ours)).await;
        assert!(matches!(first.receive().await, Message::Open(_)));
        first.send(&open_with_id(B_ID), Negotiated::default()).await;
        assert_eq!(first.receive().await, Message::Keepalive);
        let mut second = second_connection(&peer).await;
        assert!(matches!(second.receive().await, Message::Open(_)));
        second
            .send(&open_with_id(B_ID), Negotiated::default())
            .await;
        let Message::Notification(cease) = second.receive_not_keepalive().await else {
            panic!("no CEASE")
        };
        assert_eq!(
            (cease.code, cease.subcode),
            (
                error_code::CEASE,
                cease_subcode::CONNECTION_COLLISION_RESOLUTION
            )
        );
        first.send(&Message::Keepalive, Negotiated::default()).await;
        wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Established(_))).await;
    }

    fn graceful_restart() -> GracefulRestart {
        GracefulRestart {
            restart_state: false,
            notification: false,
            restart_time: 120,
            families: Vec::new(),
        }
    }

    fn open_from_b_with_graceful_restart() -> Message {
        Message::Open(Open::new(
            64513,
            90,
            B_ID,
            vec![Capability::GracefulRestart(graceful_restart())],
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_from_an_established_peer_with_graceful_restart_means_it_restarted() {
        let config = SessionConfig {
            graceful_restart: Some(graceful_restart()),
            ..SessionConfig::new(64512, 64513, A_ID)
        };
        let (mut peer, mut first) = with_raw_peer(config).await;
        first.receive().await;
        first
            .send(&open_from_b_with_graceful_restart(), Negotiated::default())
            .await;
        first.send(&Message::Keepalive, Negotiated::default()).await;
        wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Established(_))).await;
        let mut second = second_connection(&peer).await;
        let down = wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Down(_))).await;
        assert_eq!(down, PeerEvent::Down(SessionError::ConnectionFailed));
        assert!(matches!(second.receive().await, Message::Open(_)));
        second
            .send(&open_from_b_with_graceful_restart(), Negotiated::default())
            .await;
        second
            .send(&Message::Keepalive, Negotiated::default())
            .await;
        wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Established(_))).await;
    }

    /// Without graceful restart in both OPENs, RFC 4271 - Section 6.8 holds: the new
    /// connection is closed and the Established session carries on.
    #[tokio::test(start_paused = true)]
    async fn without_graceful_restart_a_new_connection_from_an_established_peer_is_closed() {
        for (ours, theirs) in [
            (None, open_from_b(64513, 90)),
            (None, open_from_b_with_graceful_restart()),
            (Some(graceful_restart()), open_from_b(64513, 90)),
        ] {
            let config = SessionConfig {
                graceful_restart: ours.clone(),
                ..SessionConfig::new(64512, 64513, A_ID)
            };
            let (mut peer, mut first) = with_raw_peer(config).await;
            first.receive().await;
            first.send(&theirs, Negotiated::default()).await;
            first.send(&Message::Keepalive, Negotiated::default()).await;
            wait_for(&mut peer.events, |e| matches!(e, PeerEvent::Established(_))).await;
            let mut second = second_connection(&peer).await;
            let mut buffer = Vec::new();
            let read = second
                .stream
                .read_buf(&mut buffer)
                .await
                .expect("pipe readable");
            assert_eq!(
                (read, buffer.len()),
                (0, 0),
                "ours {ours:?}, theirs {theirs:?}: the new connection got bytes instead of being closed"
            );
            // The old session is still up: it answers on the old connection and reports
            // no Down.
            first.send(&Message::Keepalive, Negotiated::default()).await;
            assert_eq!(first.receive().await, Message::Keepalive);
            while let Ok((_, event)) = peer.events.try_recv() {
                assert!(
                    !matches!(event, PeerEvent::Down(_)),
                    "ours {ours:?}, theirs {theirs:?}: the session went down: {event:?}"
                );
            }
        }
    }
}
