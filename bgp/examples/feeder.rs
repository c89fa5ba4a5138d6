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

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tortie_bgp::packet::{Capability, Family, Message, Negotiated, Open, message_length};

#[path = "common/feed.rs"]
mod feed;

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
    feed: FeedArg,
    /// How long to keep retrying the connection while the receiver is not listening yet.
    #[arg(long, default_value_t = 30)]
    connect_within: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum FeedArg {
    Realistic,
    FourSets,
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
    let kind = match args.feed {
        FeedArg::Realistic => feed::Feed::Realistic,
        FeedArg::FourSets => feed::Feed::FourSets,
    };
    let wire = feed::feed(kind, args.asn, router_id, args.count)?;
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
