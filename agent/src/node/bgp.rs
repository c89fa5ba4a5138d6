//! The agent's side of its embedded BGP speaker: the listener, the peers the mesh planner
//! wants (added, changed and removed as the datastore changes), and the prefixes this node
//! originates. The speaker itself ([`tortie_bgp::speaker`]) owns the sessions and tables.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tortie_bgp::net::{
    Dial, canonical, connector, listen, refusing, set_md5_password, set_ttl_security,
};
use tortie_bgp::packet::PathAttributes;
use tortie_bgp::speaker::{
    PeerConfig, PeerStatus, RouteChange, SpeakerCommand, SpeakerConfig, run_speaker,
};
use tracing::{info, warn};

use crate::node::mesh::WantedPeer;

/// Per-peer settings the accept loop needs before the speaker sees the connection.
type AcceptRules = Arc<std::sync::Mutex<HashMap<IpAddr, Option<u8>>>>;

/// A running speaker with its listener.
pub struct Bgp {
    commands: mpsc::Sender<SpeakerCommand<TcpStream>>,
    peers: HashMap<IpAddr, WantedPeer>,
    originated: BTreeSet<IpNet>,
    /// Shared with the accept loop; `None` once given up for a restart.
    listener: Option<Arc<TcpListener>>,
    accept_rules: AcceptRules,
    speaker: JoinHandle<()>,
    accepting: JoinHandle<()>,
}

/// The speaker stopped: the agent cannot route without it.
#[derive(Debug, thiserror::Error)]
#[error("the BGP speaker has stopped")]
pub struct SpeakerGone;

impl Bgp {
    /// Starts the speaker and listens on `port` on every address (IPv6 listener taking
    /// IPv4 too, as the mesh may use either family). Route changes arrive on `routes`.
    ///
    /// `routes` is unbounded, and a relay task moves the speaker's changes onto it: the
    /// agent's core both sends the speaker commands (thousands of prefixes to originate at
    /// once, say) and reads its changes, so if the speaker could block on a full change
    /// channel while the core blocks on the speaker's full command queue, both would wait
    /// forever.
    pub async fn start(
        config: SpeakerConfig,
        port: u16,
        routes: mpsc::UnboundedSender<Vec<RouteChange>>,
    ) -> std::io::Result<Bgp> {
        let (commands, commands_rx) = mpsc::channel(1024);
        let (speaker_routes, mut relayed) = mpsc::channel::<Vec<RouteChange>>(64);
        tokio::spawn(async move {
            while let Some(batch) = relayed.recv().await {
                if routes.send(batch).is_err() {
                    return;
                }
            }
        });
        let listener = match listen(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            &[],
        ) {
            Ok(listener) => listener,
            // A host with IPv6 off (disable_ipv6, or no IPv6 at all): IPv4 only.
            Err(_) => listen(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port), &[])?,
        };
        let listener = Arc::new(listener);
        let accept_rules: AcceptRules = Arc::default();
        let speaker = tokio::spawn(run_speaker(config, commands_rx, speaker_routes));
        let accepting = tokio::spawn(accept_loop(
            Arc::clone(&listener),
            Arc::clone(&accept_rules),
            commands.clone(),
        ));
        Ok(Bgp {
            commands,
            peers: HashMap::new(),
            originated: BTreeSet::new(),
            listener: Some(listener),
            accept_rules,
            speaker,
            accepting,
        })
    }

    async fn send(&self, command: SpeakerCommand<TcpStream>) -> Result<(), SpeakerGone> {
        self.commands.send(command).await.map_err(|_| SpeakerGone)
    }

    /// Makes the speaker's peers exactly `wanted`: new ones added, gone ones removed (with
    /// a CEASE), changed ones restarted with their new settings.
    pub async fn set_peers(&mut self, wanted: &[WantedPeer]) -> Result<(), SpeakerGone> {
        let wanted_by_address: HashMap<IpAddr, &WantedPeer> =
            wanted.iter().map(|p| (p.address, p)).collect();
        let stale: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(address, current)| wanted_by_address.get(address) != Some(current))
            .map(|(address, _)| *address)
            .collect();
        for address in stale {
            info!(peer = %address, "removing BGP peer");
            self.peers.remove(&address);
            self.accept_rules
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&address);
            self.send(SpeakerCommand::RemovePeer(address)).await?;
        }
        for peer in wanted {
            if self.peers.contains_key(&peer.address) {
                continue;
            }
            info!(peer = %peer.address, asn = peer.asn, kind = peer.label, passive = peer.passive, "adding BGP peer");
            if let Some(password) = &peer.password
                && let Some(listener) = &self.listener
                && let Err(error) = set_md5_password(&**listener, peer.address, password)
            {
                warn!(peer = %peer.address, %error, "cannot set the TCP MD5 password on the listener: incoming connections from this peer will fail");
            }
            self.accept_rules
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(peer.address, peer.ttl_security);
            let mut config = PeerConfig::new(peer.address, peer.asn, peer.local_address);
            config.passive = peer.passive;
            config.route_reflector_client = peer.route_reflector_client;
            config.label = peer.label.to_string();
            config.originated_only = peer.originated_only;
            config.restart_time = peer
                .max_restart_time
                .map(|time| time.as_secs().min(u64::from(u16::MAX)) as u16);
            let dial = if peer.passive {
                refusing()
            } else {
                connector(Dial {
                    peer: SocketAddr::new(peer.address, peer.port),
                    local_address: Some(peer.local_address),
                    password: peer.password.clone(),
                    ttl_security: peer.ttl_security,
                })
            };
            self.send(SpeakerCommand::AddPeer(config, dial)).await?;
            self.peers.insert(peer.address, peer.clone());
        }
        Ok(())
    }

    /// Makes the speaker originate exactly `prefixes`.
    pub async fn set_originated(&mut self, prefixes: &BTreeSet<IpNet>) -> Result<(), SpeakerGone> {
        let withdrawn: Vec<IpNet> = self.originated.difference(prefixes).copied().collect();
        let announced: Vec<IpNet> = prefixes.difference(&self.originated).copied().collect();
        for prefix in withdrawn {
            info!(%prefix, "withdrawing");
            self.send(SpeakerCommand::StopOriginating { prefix })
                .await?;
            self.originated.remove(&prefix);
        }
        for prefix in announced {
            info!(%prefix, "announcing");
            self.send(SpeakerCommand::Originate {
                prefix,
                attributes: PathAttributes::default(),
            })
            .await?;
            self.originated.insert(prefix);
        }
        Ok(())
    }

    pub fn originated(&self) -> &BTreeSet<IpNet> {
        &self.originated
    }

    /// The speaker's peer table.
    pub async fn peers(&self) -> Result<Vec<PeerStatus>, SpeakerGone> {
        let (reply, answer) = oneshot::channel();
        self.send(SpeakerCommand::Peers(reply)).await?;
        answer.await.map_err(|_| SpeakerGone)
    }

    /// Replaces the speaker with a new one started from `config` on the same port: the old
    /// one's sessions end without a NOTIFICATION (peers with graceful restart keep our
    /// routes), and the peers and prefixes are set again by the caller.
    pub async fn restart(
        &mut self,
        config: SpeakerConfig,
        port: u16,
        routes: mpsc::UnboundedSender<Vec<RouteChange>>,
    ) -> std::io::Result<()> {
        // The port must be free before the new listener binds it: end the accept loop
        // (which holds the listener) and drop our own handle on it.
        self.accepting.abort();
        let _ = (&mut self.accepting).await;
        self.listener = None;
        *self = Bgp::start(config, port, routes).await?;
        Ok(())
    }

    /// Whether the speaker task is still running.
    pub fn is_running(&self) -> bool {
        !self.speaker.is_finished()
    }
}

impl Drop for Bgp {
    fn drop(&mut self) {
        // Dropping the command channel ends the speaker, which drops its sessions without
        // a NOTIFICATION: peers that support graceful restart keep our routes (RFC 4724 -
        // Section 4.2), which is what a restart of the agent needs.
        self.accepting.abort();
    }
}

async fn accept_loop(
    listener: Arc<TcpListener>,
    rules: AcceptRules,
    commands: mpsc::Sender<SpeakerCommand<TcpStream>>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "BGP accept failed");
                continue;
            }
        };
        let from = canonical(from.ip());
        let ttl = rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&from)
            .copied();
        if let Some(Some(hops)) = ttl
            && let Err(error) = set_ttl_security(&stream, from, hops)
        {
            warn!(%from, %error, "TTL security not set: connection dropped");
            continue;
        }
        let _ = stream.set_nodelay(true);
        if commands
            .send(SpeakerCommand::Accepted { from, stream })
            .await
            .is_err()
        {
            return;
        }
    }
}
