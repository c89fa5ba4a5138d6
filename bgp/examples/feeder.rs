//! A raw BGP feeder for ingest benchmarks: opens a session to a receiver (a real BGP
//! session: OPEN with capabilities, KEEPALIVE exchange, keepalives answered), sends a full
//! table of IPv4 /24s in packed UPDATEs as fast as the socket takes them, then End-of-RIB,
//! and keeps the session up until the receiver closes it or the process is stopped.
//!
//! It prints two lines on stdout: `feed prefixes=.. attribute_sets=.. updates=.. octets=..`
//! once the feed is built (before the session opens, so building it is never timed), and
//! `first_update_unix <seconds since the epoch>` when the first UPDATE goes out, so that a
//! benchmark can time the receiver from there.
//!
//! ```text
//! cargo run --release -p tortie-bgp --example feeder -- 192.0.2.1 --as 64513 --count 1000000
//! ```
//!
//! Two feeds (`--feed`):
//!
//! - `realistic` (the default): routes grouped by origin AS as in a full table seen from
//!   one transit provider. Tens of thousands of origin ASes, each behind one of 16 tier-1
//!   and 400 tier-2 ASes (paths of 3 to 8 hops, some with prepending), each origin holding
//!   a run of consecutive prefixes of heavy-tailed length (most 1 to 32, a few hundreds to
//!   thousands) and sometimes more runs elsewhere; the provider's own communities (where
//!   learned, which region), the origin's communities on 40% of them, large communities on
//!   15%, MED on 30%, and 15% of prefixes tagged (traffic engineering) with one of eight
//!   extra communities. At 1M prefixes that makes about 89,000 attribute sets in as many
//!   UPDATEs (11 prefixes each on average, most far fewer) rather than hundreds of
//!   prefixes per UPDATE. The feed is generated from a fixed seed: every receiver gets the
//!   very same bytes.
//! - `four-sets`: four attribute sets (AS paths of 2 to 5 hops, 1 to 4 communities), a
//!   quarter of the prefixes each, like the feed the figures in NOTES.md were measured with.
//!
//! # Which prefixes
//!
//! 1,000,000 distinct IPv4 prefixes do not fit in the ranges tests may configure: all of
//! 198.18.0.0/15's prefixes of every length from /15 to /32 number 2^18 - 1 = 262,143, and
//! the three documentation /24s add 1,533. So the feed takes /24s from 16.0.0.0 up (1M of
//! them end at 31.66.63.0/24), as a real table would carry them. That is harmless here:
//! the prefixes only ever sit in the RIBs of BGP daemons inside throwaway network
//! namespaces with no link to the outside, none of which is configured to install routes
//! into a kernel (BIRD without a kernel protocol, GoBGP without zebra, tortie-bgpd knows
//! nothing of the kernel), and no packet is ever sent to them. The only addresses
//! configured on interfaces stay within the documentation ranges.
//!
//! AS numbers are private-use (RFC 6996): the paths' tier-1 and tier-2 ASes are 2-octet
//! (65001 to 65499, clear of the 6451x the benchmark's speakers use), origins 4-octet from
//! 4200000000, so the 4-octet AS capability (which every receiver benchmarked speaks) is
//! exercised.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use ipnet::Ipv4Net;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tortie_bgp::packet::{
    AsPath, AsSegment, Capability, Community, Family, LargeCommunity, Message, Negotiated, Open,
    Origin, PathAttributes, SegmentKind, Update, message_length,
};

#[derive(Parser)]
struct Args {
    /// The receiver's address.
    receiver: IpAddr,
    #[arg(long, default_value_t = 179)]
    port: u16,
    /// The feeder's AS.
    #[arg(long = "as", default_value_t = 64513)]
    asn: u32,
    /// The feeder's BGP identifier and next hop (default: its source address).
    #[arg(long)]
    router_id: Option<Ipv4Addr>,
    /// How many /24s to send, from 16.0.0.0 up.
    #[arg(long, default_value_t = 1_000_000)]
    count: u32,
    /// Which variety of attributes to send.
    #[arg(long, value_enum, default_value = "realistic")]
    feed: Feed,
    /// How long to keep retrying the connection while the receiver is not listening yet.
    #[arg(long, default_value_t = 30)]
    connect_within: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Feed {
    Realistic,
    FourSets,
}

/// A feed on the wire, and what it holds.
struct Wire {
    bytes: Vec<u8>,
    attribute_sets: usize,
    updates: usize,
}

/// The `count` /24s from 16.0.0.0 up (see the crate docs above for why these).
fn prefixes(count: u32) -> Result<Vec<Ipv4Net>> {
    if count > 1 << 20 {
        bail!(
            "at most {} /24s fit from 16.0.0.0 up to 31.255.255.0",
            1 << 20
        );
    }
    (0..count)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x1000_0000u32 + (i << 8)), 24))
        .collect::<Result<_, _>>()
        .context("building prefixes")
}

fn sequence(asns: Vec<u32>) -> Option<AsPath> {
    Some(AsPath {
        segments: vec![AsSegment {
            kind: SegmentKind::Sequence,
            asns,
        }],
    })
}

fn four_sets(
    asn: u32,
    next_hop: Ipv4Addr,
    prefixes: &[Ipv4Net],
) -> Vec<(PathAttributes, Vec<Ipv4Net>)> {
    let quarter = prefixes.len().div_ceil(4).max(1);
    prefixes
        .chunks(quarter)
        .enumerate()
        .map(|(set, chunk)| {
            let set = set as u32;
            let asns = std::iter::once(asn)
                .chain((0..1 + set).map(|i| 64600 + set * 10 + i))
                .collect();
            let attributes = PathAttributes {
                origin: Some(Origin::Igp),
                as_path: sequence(asns),
                next_hop: Some(next_hop),
                communities: (0..=set).map(|i| Community(0xFDE9_0000 + i)).collect(),
                ..PathAttributes::default()
            };
            (attributes, chunk.to_vec())
        })
        .collect()
}

/// SplitMix64: small, fast and deterministic, so every run and every receiver gets the
/// same feed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n)) as u32
    }

    fn percent(&mut self, p: u32) -> bool {
        self.below(100) < p
    }
}

const TIER1: u32 = 16;
const TIER2: u32 = 400;
const FIRST_ORIGIN_ASN: u32 = 4_200_000_000;

/// The attributes of every route of origin AS number `origin` (an index), as the feeder's
/// provider would send them: derived from the index alone, so an origin's runs of
/// prefixes all share them.
fn origin_attributes(feeder_asn: u32, next_hop: Ipv4Addr, origin: u32) -> PathAttributes {
    let mut random = SplitMix(0x7072_6566_6978 ^ u64::from(origin).wrapping_mul(0x9E37_79B9));
    let origin_asn = FIRST_ORIGIN_ASN + origin;
    let tier1 = random.below(TIER1);
    let mut asns = vec![feeder_asn, 65001 + tier1];
    let tier2_hops = match random.below(100) {
        0..25 => 0,
        25..75 => 1,
        75..95 => 2,
        _ => 3,
    };
    for _ in 0..tier2_hops {
        asns.push(65100 + random.below(TIER2));
    }
    let prepends = if random.percent(20) {
        1 + random.below(3)
    } else {
        0
    };
    asns.extend(std::iter::repeat_n(origin_asn, 1 + prepends as usize));

    // Communities are 16-bit AS : 16-bit value; the feeder's AS fits (it is 6451x).
    let provider = (feeder_asn & 0xFFFF) << 16;
    let mut communities = vec![
        Community(provider | (100 + tier1)),
        Community(provider | (200 + random.below(8))),
    ];
    if random.percent(40) {
        for _ in 0..1 + random.below(4) {
            let asn = 65000 + random.below(500);
            communities.push(Community((asn << 16) | random.below(1000)));
        }
    }
    communities.sort();
    communities.dedup();
    let large_communities = if random.percent(15) {
        vec![
            LargeCommunity {
                global_admin: feeder_asn,
                local_data_1: 1,
                local_data_2: tier1,
            },
            LargeCommunity {
                global_admin: origin_asn,
                local_data_1: 2,
                local_data_2: random.below(100),
            },
        ]
    } else {
        Vec::new()
    };
    let multi_exit_disc = if random.percent(30) {
        Some(random.below(200) * 10)
    } else {
        None
    };
    let origin_code = match random.below(100) {
        0..90 => Origin::Igp,
        90..98 => Origin::Incomplete,
        _ => Origin::Egp,
    };
    PathAttributes {
        origin: Some(origin_code),
        as_path: sequence(asns),
        next_hop: Some(next_hop),
        multi_exit_disc,
        communities,
        large_communities,
        ..PathAttributes::default()
    }
}

/// The realistic feed: prefixes handed out in runs to origin ASes, grouped by attribute set
/// in the order the sets first appear, as a speaker packs its Adj-RIB-Out.
fn realistic(
    asn: u32,
    next_hop: Ipv4Addr,
    prefixes: &[Ipv4Net],
) -> Vec<(PathAttributes, Vec<Ipv4Net>)> {
    let mut random = SplitMix(0x6665_6564);
    let mut origins: Vec<PathAttributes> = Vec::new();
    let mut groups: Vec<(PathAttributes, Vec<Ipv4Net>)> = Vec::new();
    let mut group_of: HashMap<PathAttributes, usize> = HashMap::new();
    let mut next = 0;
    while next < prefixes.len() {
        // Run lengths: mostly 1 to 32, 1% of them 100 to 2,100 (the large networks).
        let run = if random.percent(1) {
            100 + random.below(2000)
        } else {
            let scale = random.below(6);
            1 + random.below(1 << scale)
        } as usize;
        // 30% of runs belong to an origin seen before: networks hold several blocks.
        let origin = if !origins.is_empty() && random.percent(30) {
            random.below(origins.len() as u32) as usize
        } else {
            origins.push(origin_attributes(asn, next_hop, origins.len() as u32));
            origins.len() - 1
        };
        for prefix in &prefixes[next..(next + run).min(prefixes.len())] {
            let mut attributes = origins[origin].clone();
            // Traffic engineering and per-prefix tags: some prefixes of a run get one more
            // community, which splits them off the run's attribute set.
            if random.percent(15) {
                let provider = (asn & 0xFFFF) << 16;
                attributes
                    .communities
                    .push(Community(provider | (300 + random.below(8))));
                attributes.communities.sort();
            }
            let index = *group_of.entry(attributes.clone()).or_insert_with(|| {
                groups.push((attributes, Vec::new()));
                groups.len() - 1
            });
            groups[index].1.push(*prefix);
        }
        next += run;
    }
    groups
}

fn feed(kind: Feed, asn: u32, next_hop: Ipv4Addr, count: u32) -> Result<Wire> {
    let prefixes = prefixes(count)?;
    let groups = match kind {
        Feed::Realistic => realistic(asn, next_hop, &prefixes),
        Feed::FourSets => four_sets(asn, next_hop, &prefixes),
    };
    let mut bytes = Vec::with_capacity(prefixes.len() * 4 + groups.len() * 80 + 4096);
    let mut updates = 0;
    for (attributes, prefixes) in &groups {
        updates +=
            Update::encode_ipv4_packed(attributes, prefixes, &Negotiated::default(), &mut bytes)?;
    }
    Message::Update(Update::end_of_rib(Family::IPV4_UNICAST))
        .encode(&Negotiated::default(), &mut bytes)?;
    Ok(Wire {
        bytes,
        attribute_sets: groups.len(),
        updates,
    })
}

/// Reads the next whole message.
async fn receive(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<Message> {
    loop {
        if let Some(length) = message_length(buffer)?
            && buffer.len() >= length
        {
            let frame: Vec<u8> = buffer.drain(..length).collect();
            return Ok(Message::decode(&frame, &Negotiated::default())?.message);
        }
        if stream.read_buf(buffer).await? == 0 {
            bail!("the receiver closed the connection");
        }
    }
}

async fn send(stream: &mut TcpStream, message: Message) -> Result<()> {
    let mut bytes = Vec::new();
    message.encode(&Negotiated::default(), &mut bytes)?;
    stream.write_all(&bytes).await?;
    Ok(())
}

/// Connects, retrying while the receiver is not listening yet.
async fn connect(address: SocketAddr, within: Duration) -> Result<TcpStream> {
    let started = Instant::now();
    loop {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(_) if started.elapsed() < within => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("connecting to {address} (retried for {within:?})"));
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let address = SocketAddr::new(args.receiver, args.port);
    let mut stream = connect(address, Duration::from_secs(args.connect_within)).await?;
    stream.set_nodelay(true)?;
    let router_id = match (args.router_id, stream.local_addr()?.ip()) {
        (Some(id), _) => id,
        (None, IpAddr::V4(source)) => source,
        (None, IpAddr::V6(_)) => bail!("over IPv6, give --router-id"),
    };
    let wire = feed(args.feed, args.asn, router_id, args.count)?;
    println!(
        "feed prefixes={} attribute_sets={} updates={} octets={}",
        args.count,
        wire.attribute_sets,
        wire.updates,
        wire.bytes.len()
    );
    std::io::stdout().flush()?;

    let capabilities = vec![
        Capability::Multiprotocol(Family::IPV4_UNICAST),
        Capability::RouteRefresh,
    ];
    send(
        &mut stream,
        Message::Open(Open::new(args.asn, 90, router_id, capabilities)),
    )
    .await?;
    let mut buffer = Vec::new();
    loop {
        match receive(&mut stream, &mut buffer).await? {
            Message::Open(_) => break,
            Message::Notification(notification) => bail!("refused: {notification}"),
            _ => {}
        }
    }
    send(&mut stream, Message::Keepalive).await?;
    loop {
        match receive(&mut stream, &mut buffer).await? {
            Message::Keepalive => break,
            Message::Notification(notification) => bail!("refused: {notification}"),
            _ => {}
        }
    }

    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    println!("first_update_unix {started:.6}");
    std::io::stdout().flush()?;
    stream.write_all(&wire.bytes).await?;
    eprintln!("feed written: {} octets", wire.bytes.len());

    loop {
        match receive(&mut stream, &mut buffer).await? {
            Message::Keepalive => send(&mut stream, Message::Keepalive).await?,
            Message::Notification(notification) => bail!("session ended: {notification}"),
            _ => {}
        }
    }
}
