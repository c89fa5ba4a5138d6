//! The session FSM of one peer (RFC 4271 - Section 8), as a pure state machine.
//!
//! [`Session::handle`] takes an [`Event`] (a timer fired, the TCP connection came up or
//! failed, a message arrived) and returns the [`Action`]s that follow (send this message,
//! start or stop that timer, connect, disconnect, the session came up or went down). It
//! does no I/O and reads no clock: the task that owns the socket and the timers performs
//! the actions, which makes every transition a plain unit test.
//!
//! Options of RFC 4271 - Section 8.1.1 as this FSM fixes them: AllowAutomaticStart and
//! AllowAutomaticStop are on (a session that fails restarts itself after the IdleHoldTimer);
//! DampPeerOscillations is on (the IdleHoldTimer doubles with each consecutive failure, see
//! [`SessionConfig::idle_hold_time`]); PassiveTcpEstablishment follows
//! [`SessionConfig::passive`]; DelayOpen, SendNOTIFICATIONwithoutOPEN and
//! CollisionDetectEstablishedState are off. Connection collisions (Section 6.8) involve
//! two connections and so two FSMs: the peer task ([`crate::tasks`]) runs both, resolves
//! the collision with [`collision_winner`] and tells the loser with
//! [`Event::CollisionDump`].

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::packet::consts::{AS_TRANS, cease_subcode, error_code, open_subcode};
use crate::packet::{
    Capability, DecodeError, Family, GracefulRestart, Negotiated, Notification, Open,
};

/// RFC 4271 - Section 8.2.2: the FSM states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        })
    }
}

/// The timers of RFC 4271 - Section 8 (DelayOpenTimer is not used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
    /// RFC 4271 - Section 8.1.1: the wait in Idle before an automatic restart.
    IdleHold,
}

impl Timer {
    const ALL: [Timer; 4] = [
        Timer::ConnectRetry,
        Timer::Hold,
        Timer::Keepalive,
        Timer::IdleHold,
    ];

    fn bit(self) -> u8 {
        match self {
            Timer::ConnectRetry => 1,
            Timer::Hold => 2,
            Timer::Keepalive => 4,
            Timer::IdleHold => 8,
        }
    }
}

/// RFC 4271 - Section 8.1: the events this FSM acts on, with the RFC's event numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Event 1: the operator (or the speaker, for a configured peer) starts the session.
    ManualStart,
    /// Event 2: the operator stops the session, or the peer is deconfigured.
    ManualStop,
    /// Events 9, 10, 11 and 13: a timer ran out.
    TimerExpired(Timer),
    /// Events 16 and 17: this FSM's TCP connection to the peer is up (either direction).
    /// A second connection while one is in use is a collision: the speaker runs it in a
    /// second FSM and never delivers it here.
    TcpConnected,
    /// Event 18: the TCP connection failed or was closed by the peer.
    TcpConnectionFails,
    /// Event 19: an OPEN arrived.
    OpenReceived(Open),
    /// Events 21, 22 and 28: a message did not decode, or an UPDATE needs a session reset.
    MessageError(DecodeError),
    /// Event 23: this connection lost a connection collision (RFC 4271 - Section 6.8).
    CollisionDump,
    /// Events 24 and 25: the peer sent a NOTIFICATION.
    NotificationReceived(Notification),
    /// Event 26.
    KeepaliveReceived,
    /// Event 27. The UPDATE itself goes to the RIB when the FSM is Established afterwards.
    UpdateReceived,
    /// A ROUTE-REFRESH arrived (RFC 2918).
    RouteRefreshReceived,
    /// The speaker sent an UPDATE: RFC 4271 - Section 8.2.2 restarts the KeepaliveTimer.
    UpdateSent,
}

/// What the owner of the connection must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer.
    Connect,
    /// Close the TCP connection (after sending what came before).
    Disconnect,
    SendOpen(Open),
    SendKeepalive,
    SendNotification(Notification),
    StartTimer(Timer, Duration),
    StopTimer(Timer),
    /// The session reached Established with these parameters: routes may flow.
    SessionUp(SessionParameters),
    /// The session left Established: the peer's routes are withdrawn (or kept stale, if
    /// it does graceful restart).
    SessionDown(SessionError),
}

/// Why a session ended, as the peer table shows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("sent NOTIFICATION: {notification} ({reason})")]
    Sent {
        notification: Notification,
        reason: String,
    },
    #[error("received NOTIFICATION: {0}")]
    Received(Notification),
    #[error("hold timer expired")]
    HoldTimerExpired,
    #[error("TCP connection failed or closed by the peer")]
    ConnectionFailed,
    #[error("stopped")]
    Stopped,
    #[error("lost a connection collision to the peer's connection")]
    CollisionLost,
}

/// Why an OPEN is refused (RFC 4271 - Section 6.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenRejection {
    #[error("peer AS is {received}, expected {expected}")]
    BadPeerAs { expected: u32, received: u32 },
    #[error("BGP identifier {0} is not acceptable")]
    BadBgpIdentifier(Ipv4Addr),
    #[error("hold time {0} s is not acceptable (0 or at least 3)")]
    UnacceptableHoldTime(u16),
}

impl OpenRejection {
    fn notification(&self) -> Notification {
        let (subcode, data) = match self {
            // RFC 4271 - Section 6.2 leaves the data empty for these three.
            OpenRejection::BadPeerAs { .. } => (open_subcode::BAD_PEER_AS, Vec::new()),
            OpenRejection::BadBgpIdentifier(_) => (open_subcode::BAD_BGP_IDENTIFIER, Vec::new()),
            OpenRejection::UnacceptableHoldTime(_) => {
                (open_subcode::UNACCEPTABLE_HOLD_TIME, Vec::new())
            }
        };
        Notification::new(error_code::OPEN_MESSAGE, subcode, data)
    }
}

/// A configuration the FSM cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "hold time {0} s is not allowed: use 0 (no keepalives) or at least 3 (RFC 4271 section 4.2)"
    )]
    HoldTime(u16),
    #[error("router id 0.0.0.0 is not allowed: set a non-zero router id (RFC 6286)")]
    RouterId,
    #[error("local AS 0 is not allowed (RFC 7607)")]
    LocalAs,
    #[error("connect retry time must be at least 1 s")]
    ConnectRetryTime,
}

/// What one session is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_asn: u32,
    pub peer_asn: u32,
    pub router_id: Ipv4Addr,
    /// Proposed hold time in seconds (RFC 4271 - Section 10 suggests 90).
    pub hold_time: u16,
    /// Keepalive interval in seconds; capped at a third of the negotiated hold time.
    pub keepalive_time: u16,
    /// Seconds between connection attempts. RFC 4271 suggests 120; cluster nodes restart
    /// and should find each other quickly, and a refused connection costs little, so the
    /// default is 5.
    pub connect_retry_time: u16,
    /// Never initiate a connection; wait for the peer's (RFC 4271 - Section 8.1.1
    /// PassiveTcpEstablishment).
    pub passive: bool,
    /// Seconds in Idle after the first failure before trying again; doubled with each
    /// consecutive failure up to [`SessionConfig::max_idle_hold_time`], and back to zero
    /// once a session has proved stable (RFC 4271 - Section 8.1.1 DampPeerOscillations).
    pub idle_hold_time: u16,
    pub max_idle_hold_time: u16,
    /// Address families to offer (RFC 4760 - Section 8).
    pub families: Vec<Family>,
    /// The graceful restart capability to advertise, if any (RFC 4724 - Section 3).
    pub graceful_restart: Option<GracefulRestart>,
}

impl SessionConfig {
    /// A session with RFC 4271's suggested timers, IPv4 unicast, route refresh.
    pub fn new(local_asn: u32, peer_asn: u32, router_id: Ipv4Addr) -> SessionConfig {
        SessionConfig {
            local_asn,
            peer_asn,
            router_id,
            hold_time: 90,
            keepalive_time: 30,
            connect_retry_time: 5,
            passive: false,
            idle_hold_time: 5,
            max_idle_hold_time: 120,
            families: vec![Family::IPV4_UNICAST],
            graceful_restart: None,
        }
    }

    pub fn is_internal(&self) -> bool {
        self.local_asn == self.peer_asn
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if matches!(self.hold_time, 1 | 2) {
            return Err(ConfigError::HoldTime(self.hold_time));
        }
        if self.router_id.is_unspecified() {
            return Err(ConfigError::RouterId);
        }
        if self.local_asn == 0 {
            return Err(ConfigError::LocalAs);
        }
        if self.connect_retry_time == 0 {
            return Err(ConfigError::ConnectRetryTime);
        }
        Ok(())
    }

    /// The OPEN this side sends.
    pub fn open(&self) -> Open {
        let mut capabilities: Vec<Capability> = self
            .families
            .iter()
            .copied()
            .map(Capability::Multiprotocol)
            .collect();
        capabilities.push(Capability::RouteRefresh);
        if let Some(graceful_restart) = &self.graceful_restart {
            capabilities.push(Capability::GracefulRestart(graceful_restart.clone()));
        }
        Open::new(self.local_asn, self.hold_time, self.router_id, capabilities)
    }
}

/// What the two OPENs settled (RFC 4271 - Section 4.2, RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParameters {
    pub peer_asn: u32,
    pub peer_router_id: Ipv4Addr,
    /// The smaller of the two proposals (RFC 4271 - Section 4.2); 0 means no hold timer
    /// and no keepalives.
    pub hold_time: u16,
    pub keepalive_time: u16,
    pub negotiated: Negotiated,
    /// Families both sides offered.
    pub families: Vec<Family>,
    pub route_refresh: bool,
    pub peer_graceful_restart: Option<GracefulRestart>,
}

/// The hold timer's value until the OPENs have been exchanged (RFC 4271 - Section 8.2.2:
/// "A HoldTimer value of 4 minutes is suggested").
pub const LARGE_HOLD_TIME: Duration = Duration::from_secs(240);

/// KEEPALIVEs received in Established after which a session counts as stable and the
/// idle hold back-off starts again from zero: at the default timers, one and a half
/// minutes of a healthy session.
const STABLE_AFTER_KEEPALIVES: u32 = 3;

/// RFC 4271 - Section 6.8: of two connections to the same peer, the one initiated by the
/// speaker with the higher BGP identifier survives. Returns whether the connection this
/// side initiated is the one to keep.
pub fn collision_winner(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> bool {
    u32::from(local_id) > u32::from(remote_id)
}

/// The FSM of one session.
#[derive(Debug, Clone)]
pub struct Session {
    config: SessionConfig,
    state: State,
    running_timers: u8,
    /// RFC 4271 - Section 8: the number of times the session failed since it last proved
    /// stable; drives the idle hold back-off.
    connect_retry_counter: u32,
    /// Whether the session should restart by itself after failing (false once stopped).
    automatic_restart: bool,
    parameters: Option<SessionParameters>,
    keepalives_established: u32,
    last_error: Option<SessionError>,
}

impl Session {
    pub fn new(config: SessionConfig) -> Result<Session, ConfigError> {
        config.validate()?;
        Ok(Session {
            config,
            state: State::Idle,
            running_timers: 0,
            connect_retry_counter: 0,
            automatic_restart: false,
            parameters: None,
            keepalives_established: 0,
            last_error: None,
        })
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Changes whether this side dials; a collision's winning connection, accepted as
    /// passive, takes the peer's own setting when it becomes the session.
    pub fn set_passive(&mut self, passive: bool) {
        self.config.passive = passive;
    }

    /// What the OPENs settled, from OpenConfirm on.
    pub fn parameters(&self) -> Option<&SessionParameters> {
        self.parameters.as_ref()
    }

    /// Why the session last ended, for the peer table.
    pub fn last_error(&self) -> Option<&SessionError> {
        self.last_error.as_ref()
    }

    /// Whether both sides advertised the graceful restart capability in this session's
    /// OPENs (RFC 4724 - Section 3), so that its procedures apply to the session.
    pub fn graceful_restart_negotiated(&self) -> bool {
        self.config.graceful_restart.is_some()
            && self
                .parameters()
                .is_some_and(|p| p.peer_graceful_restart.is_some())
    }

    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    pub fn is_timer_running(&self, timer: Timer) -> bool {
        self.running_timers & timer.bit() != 0
    }

    /// Runs one event through the FSM and returns what must be done.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        // A timer that fired after it was stopped or restarted (the expiry crossed the
        // stop in a channel) is stale: ignore it.
        if let Event::TimerExpired(timer) = event {
            if !self.is_timer_running(timer) {
                return actions;
            }
            self.running_timers &= !timer.bit();
        }
        match (self.state, event) {
            // Idle (RFC 4271 - Section 8.2.2): starts, automatic or manual; everything
            // else is ignored, and a connection is refused.
            (State::Idle, Event::ManualStart) => {
                self.automatic_restart = true;
                self.connect_retry_counter = 0;
                self.stop_timer(Timer::IdleHold, &mut actions);
                self.start(&mut actions);
            }
            (State::Idle, Event::TimerExpired(Timer::IdleHold)) => self.start(&mut actions),
            (State::Idle, Event::TcpConnected) => actions.push(Action::Disconnect),
            (State::Idle, _) => {}

            // Every other state: a manual stop ends the session politely.
            (_, Event::ManualStop) => {
                self.automatic_restart = false;
                if matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                ) {
                    let cease = Notification::new(
                        error_code::CEASE,
                        cease_subcode::ADMINISTRATIVE_SHUTDOWN,
                        Vec::new(),
                    );
                    actions.push(Action::SendNotification(cease));
                }
                self.connect_retry_counter = 0;
                self.go_idle(SessionError::Stopped, &mut actions);
            }

            // Connect and Active: waiting for a TCP connection.
            (State::Connect | State::Active, Event::TimerExpired(Timer::ConnectRetry)) => {
                self.start_timer(Timer::ConnectRetry, self.connect_retry_time(), &mut actions);
                if self.state == State::Connect {
                    actions.push(Action::Disconnect);
                }
                actions.push(Action::Connect);
                self.state = State::Connect;
            }
            (State::Connect | State::Active, Event::TcpConnected) => {
                self.stop_timer(Timer::ConnectRetry, &mut actions);
                actions.push(Action::SendOpen(self.config.open()));
                self.start_timer(Timer::Hold, LARGE_HOLD_TIME, &mut actions);
                self.state = State::OpenSent;
            }
            // A failed attempt: wait in Active for the peer or the next retry.
            (State::Connect | State::Active, Event::TcpConnectionFails) => {
                if !self.config.passive && !self.is_timer_running(Timer::ConnectRetry) {
                    self.start_timer(Timer::ConnectRetry, self.connect_retry_time(), &mut actions);
                }
                self.state = State::Active;
            }
            (State::Connect | State::Active, Event::ManualStart | Event::UpdateSent) => {}
            (State::Connect | State::Active, event) => self.fsm_error(&event, &mut actions),

            // OpenSent: our OPEN is out; waiting for the peer's.
            (State::OpenSent, Event::OpenReceived(open)) => match self.accept_open(&open) {
                Ok(parameters) => {
                    self.stop_timer(Timer::ConnectRetry, &mut actions);
                    actions.push(Action::SendKeepalive);
                    if parameters.hold_time > 0 {
                        self.start_timer(
                            Timer::Keepalive,
                            secs(parameters.keepalive_time),
                            &mut actions,
                        );
                        self.start_timer(Timer::Hold, secs(parameters.hold_time), &mut actions);
                    } else {
                        self.stop_timer(Timer::Hold, &mut actions);
                    }
                    self.parameters = Some(parameters);
                    self.state = State::OpenConfirm;
                }
                Err(rejection) => {
                    let notification = rejection.notification();
                    self.fail_with_notification(notification, rejection.to_string(), &mut actions);
                }
            },
            // RFC 4271 - Section 8.2.2: a failure in OpenSent goes back to Active.
            (State::OpenSent, Event::TcpConnectionFails) => {
                actions.push(Action::Disconnect);
                self.last_error = Some(SessionError::ConnectionFailed);
                self.connect_retry_counter += 1;
                if !self.config.passive {
                    self.start_timer(Timer::ConnectRetry, self.connect_retry_time(), &mut actions);
                }
                self.stop_timer(Timer::Hold, &mut actions);
                self.state = State::Active;
            }

            // OpenConfirm: both OPENs exchanged; waiting for the peer's KEEPALIVE.
            (State::OpenConfirm, Event::KeepaliveReceived) => {
                self.restart_hold_timer(&mut actions);
                self.keepalives_established = 0;
                self.state = State::Established;
                if let Some(parameters) = &self.parameters {
                    actions.push(Action::SessionUp(parameters.clone()));
                }
            }

            // OpenConfirm and Established: keepalives both ways.
            (State::OpenConfirm | State::Established, Event::TimerExpired(Timer::Keepalive)) => {
                actions.push(Action::SendKeepalive);
                self.restart_keepalive_timer(&mut actions);
            }

            // Established.
            (State::Established, Event::KeepaliveReceived) => {
                self.restart_hold_timer(&mut actions);
                self.keepalives_established = self.keepalives_established.saturating_add(1);
                if self.keepalives_established >= STABLE_AFTER_KEEPALIVES {
                    self.connect_retry_counter = 0;
                }
            }
            (State::Established, Event::UpdateReceived | Event::RouteRefreshReceived) => {
                self.restart_hold_timer(&mut actions);
            }
            (State::Established, Event::UpdateSent) => self.restart_keepalive_timer(&mut actions),

            // OpenSent, OpenConfirm, Established: the ways a session fails.
            (_, Event::TimerExpired(Timer::Hold)) => {
                let notification = Notification::new(error_code::HOLD_TIMER_EXPIRED, 0, Vec::new());
                actions.push(Action::SendNotification(notification));
                self.connect_retry_counter += 1;
                self.go_idle(SessionError::HoldTimerExpired, &mut actions);
            }
            (_, Event::TcpConnectionFails) => {
                self.connect_retry_counter += 1;
                self.go_idle(SessionError::ConnectionFailed, &mut actions);
            }
            (_, Event::NotificationReceived(notification)) => {
                self.connect_retry_counter += 1;
                self.go_idle(SessionError::Received(notification), &mut actions);
            }
            (_, Event::MessageError(error)) => {
                self.fail_with_notification(error.notification(), error.to_string(), &mut actions);
            }
            (_, Event::CollisionDump) => {
                let cease = Notification::new(
                    error_code::CEASE,
                    cease_subcode::CONNECTION_COLLISION_RESOLUTION,
                    Vec::new(),
                );
                actions.push(Action::SendNotification(cease));
                // Losing a collision is no failure of the peer: no back-off.
                self.go_idle(SessionError::CollisionLost, &mut actions);
            }
            // Starting a started session changes nothing; an UPDATE sent outside
            // Established is the speaker's business, not the peer's; a second connection
            // is a collision, which the speaker resolves with a second FSM.
            (_, Event::ManualStart | Event::UpdateSent | Event::TcpConnected) => {}
            (_, event) => self.fsm_error(&event, &mut actions),
        }
        actions
    }

    /// Leaves Idle: connect, or wait for the peer when passive.
    fn start(&mut self, actions: &mut Vec<Action>) {
        if self.config.passive {
            self.state = State::Active;
        } else {
            self.start_timer(Timer::ConnectRetry, self.connect_retry_time(), actions);
            actions.push(Action::Connect);
            self.state = State::Connect;
        }
    }

    /// RFC 4271 - Section 6.2: the checks an OPEN must pass, and what it settles.
    fn accept_open(&self, open: &Open) -> Result<SessionParameters, OpenRejection> {
        let received = open.asn();
        // RFC 6793 - Section 4.1: AS_TRANS in the 2-octet field without the capability
        // names no AS at all.
        if received != self.config.peer_asn
            || (received == u32::from(AS_TRANS) && open.four_octet_asn().is_none())
        {
            return Err(OpenRejection::BadPeerAs {
                expected: self.config.peer_asn,
                received,
            });
        }
        // RFC 6286 - Section 2.2: any non-zero identifier, unique within the AS.
        let identifier = open.bgp_identifier;
        if identifier.is_unspecified()
            || (self.config.is_internal() && identifier == self.config.router_id)
        {
            return Err(OpenRejection::BadBgpIdentifier(identifier));
        }
        if matches!(open.hold_time, 1 | 2) {
            return Err(OpenRejection::UnacceptableHoldTime(open.hold_time));
        }
        let hold_time = self.config.hold_time.min(open.hold_time);
        // RFC 4271 - Section 10: "a reasonable maximum" keepalive is a third of the hold
        // time.
        let keepalive_time = self
            .config
            .keepalive_time
            .min(hold_time / 3)
            .max(u16::from(hold_time > 0));
        let peer_families: Vec<Family> = open
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(family) => Some(*family),
                _ => None,
            })
            .collect();
        // RFC 4760 - Section 8: a peer that advertises no family speaks IPv4 unicast.
        let families = self
            .config
            .families
            .iter()
            .copied()
            .filter(|family| {
                if peer_families.is_empty() {
                    *family == Family::IPV4_UNICAST
                } else {
                    peer_families.contains(family)
                }
            })
            .collect();
        Ok(SessionParameters {
            peer_asn: received,
            peer_router_id: identifier,
            hold_time,
            keepalive_time,
            // RFC 6793 - Section 4: both sides must advertise it; this side always does.
            negotiated: Negotiated {
                four_octet_as: open.four_octet_asn().is_some(),
            },
            families,
            route_refresh: open.capabilities.contains(&Capability::RouteRefresh),
            peer_graceful_restart: open.capabilities.iter().find_map(|c| match c {
                Capability::GracefulRestart(gr) => Some(gr.clone()),
                _ => None,
            }),
        })
    }

    /// RFC 4271 - Section 8.2.2: an event the state does not expect is an FSM error,
    /// with the subcode RFC 6608 - Section 3 gives each state.
    fn fsm_error(&mut self, event: &Event, actions: &mut Vec<Action>) {
        let subcode = match self.state {
            State::OpenSent => 1,
            State::OpenConfirm => 2,
            State::Established => 3,
            _ => 0,
        };
        let notification = Notification::new(error_code::FSM, subcode, Vec::new());
        let reason = format!("unexpected {} in {}", event_name(event), self.state);
        if matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            self.fail_with_notification(notification, reason, actions);
        } else {
            self.connect_retry_counter += 1;
            self.go_idle(
                SessionError::Sent {
                    notification,
                    reason,
                },
                actions,
            );
        }
    }

    fn fail_with_notification(
        &mut self,
        notification: Notification,
        reason: String,
        actions: &mut Vec<Action>,
    ) {
        actions.push(Action::SendNotification(notification.clone()));
        self.connect_retry_counter += 1;
        self.go_idle(
            SessionError::Sent {
                notification,
                reason,
            },
            actions,
        );
    }

    /// Back to Idle: stop the timers, drop the connection, report a session that went
    /// down, and (after a failure) schedule the automatic restart with back-off.
    fn go_idle(&mut self, error: SessionError, actions: &mut Vec<Action>) {
        for timer in Timer::ALL {
            self.stop_timer(timer, actions);
        }
        // Closes the connection, or abandons the attempt to make one.
        actions.push(Action::Disconnect);
        if self.state == State::Established {
            actions.push(Action::SessionDown(error.clone()));
        }
        self.last_error = Some(error);
        self.parameters = None;
        self.state = State::Idle;
        if self.automatic_restart {
            let wait = self.idle_hold_time();
            self.start_timer(Timer::IdleHold, wait, actions);
        }
    }

    /// The wait before an automatic restart: nothing after a clean end, then the
    /// configured idle hold time doubled per consecutive failure, capped.
    pub fn idle_hold_time(&self) -> Duration {
        if self.connect_retry_counter == 0 {
            return Duration::ZERO;
        }
        let doublings = (self.connect_retry_counter - 1).min(16);
        let seconds = u64::from(self.config.idle_hold_time) << doublings;
        Duration::from_secs(seconds.min(u64::from(self.config.max_idle_hold_time)))
    }

    fn connect_retry_time(&self) -> Duration {
        secs(self.config.connect_retry_time)
    }

    fn restart_hold_timer(&mut self, actions: &mut Vec<Action>) {
        if let Some(hold_time) = self
            .parameters
            .as_ref()
            .map(|p| p.hold_time)
            .filter(|&h| h > 0)
        {
            self.start_timer(Timer::Hold, secs(hold_time), actions);
        }
    }

    fn restart_keepalive_timer(&mut self, actions: &mut Vec<Action>) {
        if let Some(keepalive) = self
            .parameters
            .as_ref()
            .filter(|p| p.hold_time > 0)
            .map(|p| p.keepalive_time)
        {
            self.start_timer(Timer::Keepalive, secs(keepalive), actions);
        }
    }

    fn start_timer(&mut self, timer: Timer, duration: Duration, actions: &mut Vec<Action>) {
        self.running_timers |= timer.bit();
        actions.push(Action::StartTimer(timer, duration));
    }

    fn stop_timer(&mut self, timer: Timer, actions: &mut Vec<Action>) {
        if self.is_timer_running(timer) {
            self.running_timers &= !timer.bit();
            actions.push(Action::StopTimer(timer));
        }
    }
}

fn secs(seconds: u16) -> Duration {
    Duration::from_secs(u64::from(seconds))
}

fn event_name(event: &Event) -> &'static str {
    match event {
        Event::ManualStart => "start",
        Event::ManualStop => "stop",
        Event::TimerExpired(Timer::ConnectRetry) => "connect retry timer expiry",
        Event::TimerExpired(Timer::Hold) => "hold timer expiry",
        Event::TimerExpired(Timer::Keepalive) => "keepalive timer expiry",
        Event::TimerExpired(Timer::IdleHold) => "idle hold timer expiry",
        Event::TcpConnected => "TCP connection",
        Event::TcpConnectionFails => "TCP failure",
        Event::OpenReceived(_) => "OPEN",
        Event::MessageError(_) => "message error",
        Event::CollisionDump => "collision dump",
        Event::NotificationReceived(_) => "NOTIFICATION",
        Event::KeepaliveReceived => "KEEPALIVE",
        Event::UpdateReceived => "UPDATE",
        Event::RouteRefreshReceived => "ROUTE-REFRESH",
        Event::UpdateSent => "UPDATE sent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{GracefulRestartFamily, UpdateError};

    const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const PEER_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    fn ebgp() -> SessionConfig {
        SessionConfig::new(64512, 64513, LOCAL_ID)
    }

    fn session(config: SessionConfig) -> Session {
        match Session::new(config) {
            Ok(session) => session,
            Err(error) => panic!("valid configuration refused: {error}"),
        }
    }

    fn peer_open(asn: u32, hold_time: u16) -> Open {
        Open::new(
            asn,
            hold_time,
            PEER_ID,
            vec![
                Capability::Multiprotocol(Family::IPV4_UNICAST),
                Capability::RouteRefresh,
            ],
        )
    }

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    /// Drives a session to OpenSent over an outgoing connection.
    fn open_sent(config: SessionConfig) -> Session {
        let mut session = session(config);
        session.handle(Event::ManualStart);
        session.handle(Event::TcpConnected);
        assert_eq!(session.state(), State::OpenSent);
        session
    }

    fn established(config: SessionConfig, peer: Open) -> Session {
        let mut session = open_sent(config);
        session.handle(Event::OpenReceived(peer));
        session.handle(Event::KeepaliveReceived);
        assert_eq!(session.state(), State::Established);
        session
    }

    fn sent_notification(actions: &[Action]) -> Option<(u8, u8)> {
        actions.iter().find_map(|action| match action {
            Action::SendNotification(n) => Some((n.code, n.subcode)),
            _ => None,
        })
    }

    #[test]
    fn an_active_session_connects_and_a_passive_one_waits() {
        let mut active = session(ebgp());
        assert_eq!(
            active.handle(Event::ManualStart),
            vec![
                Action::StartTimer(Timer::ConnectRetry, secs(5)),
                Action::Connect
            ]
        );
        assert_eq!(active.state(), State::Connect);

        let mut passive = session(SessionConfig {
            passive: true,
            ..ebgp()
        });
        assert_eq!(passive.handle(Event::ManualStart), vec![]);
        assert_eq!(passive.state(), State::Active);
        // The peer connects: OPEN goes out, hold timer at its large initial value.
        let actions = passive.handle(Event::TcpConnected);
        assert!(matches!(actions[0], Action::SendOpen(_)));
        assert_eq!(actions[1], Action::StartTimer(Timer::Hold, LARGE_HOLD_TIME));
        assert_eq!(passive.state(), State::OpenSent);
    }

    #[test]
    fn the_open_offers_four_octet_as_families_route_refresh_and_graceful_restart() {
        let graceful_restart = GracefulRestart {
            restart_state: false,
            notification: false,
            restart_time: 120,
            families: vec![GracefulRestartFamily {
                family: Family::IPV4_UNICAST,
                forwarding_preserved: true,
            }],
        };
        let config = SessionConfig {
            local_asn: 4_200_000_000,
            graceful_restart: Some(graceful_restart.clone()),
            ..ebgp()
        };
        let mut session = session(config);
        session.handle(Event::ManualStart);
        let actions = session.handle(Event::TcpConnected);
        let Some(Action::SendOpen(open)) =
            actions.iter().find(|a| matches!(a, Action::SendOpen(_)))
        else {
            panic!("no OPEN in {actions:?}")
        };
        assert_eq!(
            (open.my_as, open.asn(), open.hold_time),
            (AS_TRANS, 4_200_000_000, 90)
        );
        assert!(
            open.capabilities
                .contains(&Capability::Multiprotocol(Family::IPV4_UNICAST))
        );
        assert!(open.capabilities.contains(&Capability::RouteRefresh));
        assert!(
            open.capabilities
                .contains(&Capability::GracefulRestart(graceful_restart))
        );
    }

    #[test]
    fn failed_connections_wait_in_active_and_retry_on_the_timer() {
        let mut session = session(ebgp());
        session.handle(Event::ManualStart);
        assert_eq!(session.handle(Event::TcpConnectionFails), vec![]);
        assert_eq!(session.state(), State::Active);
        assert!(session.is_timer_running(Timer::ConnectRetry));
        let actions = session.handle(Event::TimerExpired(Timer::ConnectRetry));
        assert_eq!(
            actions,
            vec![
                Action::StartTimer(Timer::ConnectRetry, secs(5)),
                Action::Connect
            ]
        );
        assert_eq!(session.state(), State::Connect);
        // Connect timed out: abandon the attempt and try again.
        let actions = session.handle(Event::TimerExpired(Timer::ConnectRetry));
        assert_eq!(
            actions,
            vec![
                Action::StartTimer(Timer::ConnectRetry, secs(5)),
                Action::Disconnect,
                Action::Connect
            ]
        );
    }

    #[test]
    fn open_then_keepalive_establishes_with_the_smaller_hold_time() {
        let mut session = open_sent(ebgp());
        let actions = session.handle(Event::OpenReceived(peer_open(64513, 30)));
        assert_eq!(
            actions,
            vec![
                Action::SendKeepalive,
                Action::StartTimer(Timer::Keepalive, secs(10)),
                Action::StartTimer(Timer::Hold, secs(30)),
            ]
        );
        assert_eq!(session.state(), State::OpenConfirm);
        let actions = session.handle(Event::KeepaliveReceived);
        assert_eq!(actions[0], Action::StartTimer(Timer::Hold, secs(30)));
        let Action::SessionUp(parameters) = &actions[1] else {
            panic!("{actions:?}")
        };
        assert_eq!((parameters.hold_time, parameters.keepalive_time), (30, 10));
        assert_eq!(parameters.peer_router_id, PEER_ID);
        assert!(parameters.negotiated.four_octet_as && parameters.route_refresh);
        assert_eq!(parameters.families, vec![Family::IPV4_UNICAST]);
        assert_eq!(session.state(), State::Established);
    }

    #[test]
    fn the_configured_keepalive_applies_when_shorter_than_a_third() {
        let mut session = open_sent(SessionConfig {
            keepalive_time: 5,
            ..ebgp()
        });
        session.handle(Event::OpenReceived(peer_open(64513, 90)));
        let parameters = session.parameters().expect("negotiated");
        assert_eq!((parameters.hold_time, parameters.keepalive_time), (90, 5));
    }

    #[test]
    fn a_zero_hold_time_means_no_hold_timer_and_no_keepalives() {
        let mut session = open_sent(ebgp());
        let actions = session.handle(Event::OpenReceived(peer_open(64513, 0)));
        assert_eq!(
            actions,
            vec![Action::SendKeepalive, Action::StopTimer(Timer::Hold)]
        );
        let actions = session.handle(Event::KeepaliveReceived);
        assert!(matches!(actions.as_slice(), [Action::SessionUp(p)] if p.hold_time == 0));
        assert!(
            !session.is_timer_running(Timer::Hold) && !session.is_timer_running(Timer::Keepalive)
        );
    }

    #[test]
    fn bad_opens_are_refused_with_the_rfc_notification() {
        let cases = [
            (
                peer_open(64514, 90),
                open_subcode::BAD_PEER_AS,
                "peer AS is 64514, expected 64513",
            ),
            (
                peer_open(64513, 2),
                open_subcode::UNACCEPTABLE_HOLD_TIME,
                "hold time 2 s",
            ),
            (
                Open {
                    bgp_identifier: Ipv4Addr::UNSPECIFIED,
                    ..peer_open(64513, 90)
                },
                open_subcode::BAD_BGP_IDENTIFIER,
                "0.0.0.0",
            ),
        ];
        for (open, subcode, reason) in cases {
            let mut session = open_sent(ebgp());
            let actions = session.handle(Event::OpenReceived(open));
            assert_eq!(
                sent_notification(&actions),
                Some((error_code::OPEN_MESSAGE, subcode))
            );
            assert!(actions.contains(&Action::Disconnect));
            assert_eq!(session.state(), State::Idle);
            let error = session
                .last_error()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(error.contains(reason), "{error}");
        }
    }

    #[test]
    fn the_bgp_identifier_must_differ_from_ours_on_ibgp_only() {
        let same = Open {
            bgp_identifier: LOCAL_ID,
            ..peer_open(64512, 90)
        };
        let mut internal = open_sent(SessionConfig::new(64512, 64512, LOCAL_ID));
        let actions = internal.handle(Event::OpenReceived(same));
        assert_eq!(
            sent_notification(&actions),
            Some((error_code::OPEN_MESSAGE, open_subcode::BAD_BGP_IDENTIFIER))
        );
        let mut external = open_sent(ebgp());
        external.handle(Event::OpenReceived(Open {
            bgp_identifier: LOCAL_ID,
            ..peer_open(64513, 90)
        }));
        assert_eq!(external.state(), State::OpenConfirm);
    }

    #[test]
    fn a_two_octet_peer_is_understood() {
        let old = Open {
            my_as: 64513,
            hold_time: 90,
            bgp_identifier: PEER_ID,
            capabilities: Vec::new(),
        };
        let mut session = open_sent(SessionConfig {
            families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            ..ebgp()
        });
        session.handle(Event::OpenReceived(old));
        let parameters = session.parameters().expect("negotiated");
        assert!(!parameters.negotiated.four_octet_as);
        // RFC 4760: no MP capability means IPv4 unicast only.
        assert_eq!(parameters.families, vec![Family::IPV4_UNICAST]);
        // AS_TRANS without the capability names no AS.
        let mut session = open_sent(SessionConfig::new(64512, u32::from(AS_TRANS), LOCAL_ID));
        let trans = Open {
            my_as: AS_TRANS,
            hold_time: 90,
            bgp_identifier: PEER_ID,
            capabilities: Vec::new(),
        };
        let actions = session.handle(Event::OpenReceived(trans));
        assert_eq!(
            sent_notification(&actions),
            Some((error_code::OPEN_MESSAGE, open_subcode::BAD_PEER_AS))
        );
    }

    #[test]
    fn families_are_those_both_sides_offer() {
        let config = SessionConfig {
            families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            ..ebgp()
        };
        let v6_only = Open::new(
            64513,
            90,
            PEER_ID,
            vec![Capability::Multiprotocol(Family::IPV6_UNICAST)],
        );
        let mut session = open_sent(config);
        session.handle(Event::OpenReceived(v6_only));
        assert_eq!(
            session.parameters().map(|p| p.families.clone()),
            Some(vec![Family::IPV6_UNICAST])
        );
    }

    #[test]
    fn the_hold_timer_ends_an_established_session_and_restarts_it_later() {
        let mut session = established(ebgp(), peer_open(64513, 90));
        let actions = session.handle(Event::TimerExpired(Timer::Hold));
        assert_eq!(
            sent_notification(&actions),
            Some((error_code::HOLD_TIMER_EXPIRED, 0))
        );
        assert!(actions.contains(&Action::Disconnect));
        assert!(actions.contains(&Action::SessionDown(SessionError::HoldTimerExpired)));
        assert_eq!(
            actions.last(),
            Some(&Action::StartTimer(Timer::IdleHold, secs(5)))
        );
        assert_eq!(session.state(), State::Idle);
        assert_eq!(session.last_error(), Some(&SessionError::HoldTimerExpired));
        // The idle hold timer restarts it.
        let actions = session.handle(Event::TimerExpired(Timer::IdleHold));
        assert_eq!(
            actions,
            vec![
                Action::StartTimer(Timer::ConnectRetry, secs(5)),
                Action::Connect
            ]
        );
    }

    #[test]
    fn consecutive_failures_back_off_exponentially_until_a_session_proves_stable() {
        let mut session = session(ebgp());
        session.handle(Event::ManualStart);
        let mut waits = Vec::new();
        for _ in 0..7 {
            session.handle(Event::TcpConnected);
            session.handle(Event::NotificationReceived(Notification::new(
                error_code::CEASE,
                5,
                Vec::new(),
            )));
            waits.push(session.idle_hold_time().as_secs());
            session.handle(Event::TimerExpired(Timer::IdleHold));
        }
        assert_eq!(waits, vec![5, 10, 20, 40, 80, 120, 120]);
        // Established with three KEEPALIVEs: the next failure starts the back-off over.
        session.handle(Event::TcpConnected);
        session.handle(Event::OpenReceived(peer_open(64513, 90)));
        for _ in 0..4 {
            session.handle(Event::KeepaliveReceived);
        }
        session.handle(Event::TcpConnectionFails);
        assert_eq!(session.idle_hold_time(), secs(5));
    }

    #[test]
    fn a_manual_stop_says_why_and_does_not_restart() {
        let mut session = established(ebgp(), peer_open(64513, 90));
        let actions = session.handle(Event::ManualStop);
        assert_eq!(
            sent_notification(&actions),
            Some((error_code::CEASE, cease_subcode::ADMINISTRATIVE_SHUTDOWN))
        );
        assert!(actions.contains(&Action::SessionDown(SessionError::Stopped)));
        assert!(!actions.iter().any(|a| matches!(a, Action::StartTimer(..))));
        assert_eq!(session.state(), State::Idle);
        // Expiries of timers it stopped are stale and ignored.
        assert_eq!(
            session.handle(Event::TimerExpired(Timer::Keepalive)),
            vec![]
        );
        assert_eq!(session.handle(Event::TimerExpired(Timer::Hold)), vec![]);
        // A peer that connects to a stopped session is refused.
        assert_eq!(
            session.handle(Event::TcpConnected),
            vec![Action::Disconnect]
        );
    }

    #[test]
    fn keepalives_go_out_on_the_timer_and_updates_push_it_back() {
        let mut session = established(ebgp(), peer_open(64513, 90));
        let actions = session.handle(Event::TimerExpired(Timer::Keepalive));
        assert_eq!(
            actions,
            vec![
                Action::SendKeepalive,
                Action::StartTimer(Timer::Keepalive, secs(30))
            ]
        );
        assert_eq!(
            session.handle(Event::UpdateSent),
            vec![Action::StartTimer(Timer::Keepalive, secs(30))]
        );
        assert_eq!(
            session.handle(Event::UpdateReceived),
            vec![Action::StartTimer(Timer::Hold, secs(90))]
        );
        assert_eq!(
            session.handle(Event::RouteRefreshReceived),
            vec![Action::StartTimer(Timer::Hold, secs(90))]
        );
    }

    #[test]
    fn unexpected_messages_are_fsm_errors_with_the_state_subcode() {
        let mut session = open_sent(ebgp());
        let actions = session.handle(Event::UpdateReceived);
        assert_eq!(sent_notification(&actions), Some((error_code::FSM, 1)));
        assert_eq!(session.state(), State::Idle);

        let mut session = open_sent(ebgp());
        session.handle(Event::OpenReceived(peer_open(64513, 90)));
        let actions = session.handle(Event::UpdateReceived);
        assert_eq!(sent_notification(&actions), Some((error_code::FSM, 2)));

        let mut session = established(ebgp(), peer_open(64513, 90));
        let actions = session.handle(Event::OpenReceived(peer_open(64513, 90)));
        assert_eq!(sent_notification(&actions), Some((error_code::FSM, 3)));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::SessionDown(SessionError::Sent { .. })))
        );
    }

    #[test]
    fn a_malformed_message_sends_the_notification_it_names() {
        let mut session = established(ebgp(), peer_open(64513, 90));
        let error = DecodeError::Update(UpdateError::DuplicateMultiprotocol { type_code: 14 });
        let actions = session.handle(Event::MessageError(error));
        assert_eq!(
            sent_notification(&actions),
            Some((error_code::UPDATE_MESSAGE, 1))
        );
        assert_eq!(session.state(), State::Idle);
    }

    #[test]
    fn a_peer_notification_or_lost_connection_brings_the_session_down() {
        let mut session = established(ebgp(), peer_open(64513, 90));
        let cease = Notification::new(
            error_code::CEASE,
            cease_subcode::ADMINISTRATIVE_RESET,
            Vec::new(),
        );
        let actions = session.handle(Event::NotificationReceived(cease.clone()));
        assert!(actions.contains(&Action::SessionDown(SessionError::Received(cease))));
        assert!(sent_notification(&actions).is_none());

        let mut session = open_sent(ebgp());
        let actions = session.handle(Event::TcpConnectionFails);
        assert!(actions.contains(&Action::StartTimer(Timer::ConnectRetry, secs(5))));
        assert_eq!(session.state(), State::Active);
    }

    #[test]
    fn a_lost_collision_ceases_without_back_off() {
        let mut session = open_sent(ebgp());
        session.handle(Event::OpenReceived(peer_open(64513, 90)));
        let actions = session.handle(Event::CollisionDump);
        assert_eq!(
            sent_notification(&actions),
            Some((
                error_code::CEASE,
                cease_subcode::CONNECTION_COLLISION_RESOLUTION
            ))
        );
        assert_eq!(session.idle_hold_time(), Duration::ZERO);
        assert_eq!(session.last_error(), Some(&SessionError::CollisionLost));
    }

    #[test]
    fn the_higher_bgp_identifier_keeps_the_connection_it_initiated() {
        assert!(collision_winner(
            Ipv4Addr::new(192, 0, 2, 9),
            Ipv4Addr::new(192, 0, 2, 1)
        ));
        assert!(!collision_winner(
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(192, 0, 2, 9)
        ));
        // Compared as numbers, not as text ("10.0.0.9" > "10.0.0.10" as strings).
        assert!(!collision_winner(
            Ipv4Addr::new(10, 0, 0, 9),
            Ipv4Addr::new(10, 0, 0, 10)
        ));
    }

    #[test]
    fn configurations_the_fsm_cannot_run_are_refused() {
        assert_eq!(
            Session::new(SessionConfig {
                hold_time: 2,
                ..ebgp()
            })
            .err(),
            Some(ConfigError::HoldTime(2))
        );
        assert_eq!(
            Session::new(SessionConfig::new(64512, 64513, Ipv4Addr::UNSPECIFIED)).err(),
            Some(ConfigError::RouterId)
        );
        assert_eq!(
            Session::new(SessionConfig {
                local_asn: 0,
                ..ebgp()
            })
            .err(),
            Some(ConfigError::LocalAs)
        );
        assert_eq!(
            Session::new(SessionConfig {
                connect_retry_time: 0,
                ..ebgp()
            })
            .err(),
            Some(ConfigError::ConnectRetryTime)
        );
    }
}
