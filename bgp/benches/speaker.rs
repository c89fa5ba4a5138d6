//! The whole speaker, in one process and without sockets: a raw feeder sends the full
//! table of the ingest benchmark (`bgp/examples/common/feed.rs`, the realistic feed by
//! default) over an in-memory pipe to [`run_speaker`], which has a second peer to pass it
//! on to. It times, from the first octet written, (1) until the speaker has reported
//! every prefix as a best-route change (ingest), and (2) until the second peer has
//! received every prefix in UPDATEs (propagation). Everything but the kernel's TCP is
//! there: reader, peer task, speaker, export, packing, writer.
//!
//! This is the quick loop for profiling (`valgrind --tool=callgrind` runs it as is); the
//! figures to quote come from `tests/src/bin/bgp-ingest-bench.rs`, which runs the real
//! daemon beside BIRD and GoBGP.
//!
//! ```text
//! cargo bench -p tortie-bgp --bench speaker                       # realistic, 3 runs
//! cargo bench -p tortie-bgp --bench speaker -- four-sets 5        # feed, runs
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};

use tortie_bgp::packet::{Capability, Family, Message, Negotiated, Open, Prefixes, message_length};
use tortie_bgp::speaker::{PeerConfig, SpeakerCommand, SpeakerConfig, run_speaker};
use tortie_bgp::tasks::Connector;

#[path = "../examples/common/feed.rs"]
#[allow(dead_code)]
mod feed;

const PREFIXES: u32 = 1_000_000;
const SPEAKER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const FEEDER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const SECOND: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const PIPE: usize = 1 << 20;

/// Reads whole messages from one end of a pipe.
struct Raw {
    stream: DuplexStream,
    buffer: Vec<u8>,
    /// Where the unread messages start in `buffer`.
    start: usize,
}

impl Raw {
    /// The next message; `None` once the speaker has closed the pipe.
    async fn receive(&mut self) -> Option<Message> {
        loop {
            let rest = &self.buffer[self.start..];
            if let Ok(Some(length)) = message_length(rest)
                && rest.len() >= length
            {
                let message = Message::decode(&rest[..length], &Negotiated::default())
                    .unwrap_or_else(|error| panic!("the speaker sends valid messages: {error}"))
                    .message;
                self.start += length;
                return Some(message);
            }
            self.buffer.drain(..self.start);
            self.start = 0;
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
    }

    async fn send(&mut self, message: Message) {
        let mut bytes = Vec::new();
        message
            .encode(&Negotiated::default(), &mut bytes)
            .unwrap_or_else(|error| panic!("bench messages encode: {error}"));
        self.stream
            .write_all(&bytes)
            .await
            .unwrap_or_else(|error| panic!("pipe open: {error}"));
    }
}

/// Configures `address` as a passive peer, hands the speaker one end of a pipe from it and
/// plays the session up to Established on the other.
async fn connect(
    commands: &mpsc::Sender<SpeakerCommand<DuplexStream>>,
    address: Ipv4Addr,
    asn: u32,
) -> Raw {
    let refuse: Connector<DuplexStream> =
        Arc::new(|| Box::pin(async { Err(std::io::Error::other("passive")) }));
    let config = PeerConfig {
        passive: true,
        ..PeerConfig::new(IpAddr::V4(address), asn, IpAddr::V4(SPEAKER))
    };
    let send = |command| async {
        if commands.send(command).await.is_err() {
            panic!("the speaker ended");
        }
    };
    send(SpeakerCommand::AddPeer(config, refuse)).await;
    // The peer task starts in Active: retry until the connection is taken.
    let (ours, theirs) = tokio::io::duplex(PIPE);
    tokio::time::sleep(Duration::from_millis(20)).await;
    send(SpeakerCommand::Accepted {
        from: IpAddr::V4(address),
        stream: theirs,
    })
    .await;
    let mut raw = Raw {
        stream: ours,
        buffer: Vec::new(),
        start: 0,
    };
    assert!(matches!(raw.receive().await, Some(Message::Open(_))));
    let capabilities = vec![Capability::Multiprotocol(Family::IPV4_UNICAST)];
    raw.send(Message::Open(Open::new(asn, 90, address, capabilities)))
        .await;
    raw.send(Message::Keepalive).await;
    while raw.receive().await != Some(Message::Keepalive) {}
    raw
}

struct Sample {
    ingest: Duration,
    propagation: Duration,
    /// CPU time of the whole process (speaker, raw peers) over the run: steadier than
    /// wall time on a machine others load.
    cpu: Duration,
}

/// User and system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn run(wire: &[u8]) -> Sample {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("tokio runtime: {error}"));
    runtime.block_on(async {
        let (commands, commands_rx) = mpsc::channel(64);
        let (routes_tx, mut routes) = mpsc::channel(64);
        let config = SpeakerConfig {
            asn: 64512,
            router_id: SPEAKER,
            cluster_id: None,
            graceful_restart: None,
        };
        tokio::spawn(run_speaker(config, commands_rx, routes_tx));

        // The second peer first: it gets the (empty) table and End-of-RIB, then counts
        // every prefix it is sent.
        let mut second = connect(&commands, SECOND, 64514).await;
        let (propagated_tx, propagated) = oneshot::channel();
        tokio::spawn(async move {
            let mut received = 0u32;
            let mut propagated_tx = Some(propagated_tx);
            while let Some(message) = second.receive().await {
                if let Message::Update(update) = message {
                    received += update.nlri.len() as u32;
                    if let Some(Prefixes::V4(nlri)) = &update.mp_reach.map(|m| m.nlri) {
                        received += nlri.len() as u32;
                    }
                    if received >= PREFIXES
                        && let Some(tx) = propagated_tx.take()
                    {
                        let _ = tx.send(Instant::now());
                    }
                }
            }
        });
        let mut feeder = connect(&commands, FEEDER, 64513).await;

        let started = Instant::now();
        let cpu_before = cpu_time();
        let write = feeder.stream.write_all(wire);
        let count = async {
            let mut best = 0u32;
            while best < PREFIXES {
                let batch = routes
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("speaker ended"));
                best += batch.len() as u32;
            }
            Instant::now()
        };
        let (written, ingested) = tokio::join!(write, count);
        written.unwrap_or_else(|error| panic!("feed written: {error}"));
        let propagated = propagated
            .await
            .unwrap_or_else(|_| panic!("the second peer stopped counting"));
        let cpu = cpu_time() - cpu_before;
        drop(feeder);
        Sample {
            ingest: ingested - started,
            propagation: propagated - started,
            cpu,
        }
    })
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let kind = match args.next().as_deref() {
        None | Some("realistic") => feed::Feed::Realistic,
        Some("four-sets") => feed::Feed::FourSets,
        Some(other) => panic!("unknown feed {other}: realistic or four-sets"),
    };
    let runs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(3);
    let wire = feed::feed(kind, 64513, FEEDER, PREFIXES)
        .unwrap_or_else(|error| panic!("the feed builds: {error}"));
    println!(
        "feed {kind:?}: {PREFIXES} prefixes, {} attribute sets, {} UPDATEs, {} octets",
        wire.attribute_sets,
        wire.updates,
        wire.bytes.len()
    );
    let mut ingest = Vec::new();
    let mut propagation = Vec::new();
    let mut cpu = Vec::new();
    for run_number in 1..=runs {
        let sample = run(&wire.bytes);
        println!(
            "run {run_number}: ingest {:.3} s, propagation to a second peer {:.3} s, CPU {:.3} s",
            sample.ingest.as_secs_f64(),
            sample.propagation.as_secs_f64(),
            sample.cpu.as_secs_f64()
        );
        ingest.push(sample.ingest);
        propagation.push(sample.propagation);
        cpu.push(sample.cpu);
    }
    println!(
        "median of {runs}: ingest {:.3} s, propagation {:.3} s, CPU {:.3} s",
        median(ingest).as_secs_f64(),
        median(propagation).as_secs_f64(),
        median(cpu).as_secs_f64()
    );
}
