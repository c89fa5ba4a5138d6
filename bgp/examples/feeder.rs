//! A raw BGP feeder for ingest benchmarks: opens a session to a receiver, sends a full
//! table of IPv4 /24s in packed UPDATEs as fast as the socket takes them, then End-of-RIB,
//! and keeps the session up (answering keepalives) until the receiver closes it or the
//! process is stopped. It prints one line when the first UPDATE goes out, as
//! `first_update_unix <seconds since the epoch>`, so that a benchmark can time the
//! receiver from there.
//!
//! ```text
//! cargo run --release -p tortie-bgp --example feeder -- 192.0.2.1 --as 64513 --count 1000000
//! ```
//!
//! The feed has four attribute sets (AS paths of 2 to 5 hops, 1 to 4 communities), a
//! quarter of the prefixes each, like the feed the figures in NOTES.md were measured with.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ipnet::Ipv4Net;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tortie_bgp::packet::{
    AsPath, AsSegment, Capability, Community, Family, Message, Negotiated, Open, Origin,
    PathAttributes, SegmentKind, Update, message_length,
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
}

fn feed(asn: u32, next_hop: Ipv4Addr, count: u32) -> Result<Vec<u8>> {
    let prefixes: Vec<Ipv4Net> = (0..count)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x1000_0000u32.wrapping_add(i << 8)), 24))
        .collect::<Result<_, _>>()
        .context("building prefixes")?;
    let mut wire = Vec::with_capacity(prefixes.len() * 4 + 4096);
    let quarter = prefixes.len().div_ceil(4).max(1);
    for (set, chunk) in prefixes.chunks(quarter).enumerate() {
        let set = set as u32;
        let asns = std::iter::once(asn)
            .chain((0..1 + set).map(|i| 64600 + set * 10 + i))
            .collect();
        let attributes = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath {
                segments: vec![AsSegment {
                    kind: SegmentKind::Sequence,
                    asns,
                }],
            }),
            next_hop: Some(next_hop),
            communities: (0..=set).map(|i| Community(0xFDE9_0000 + i)).collect(),
            ..PathAttributes::default()
        };
        Update::encode_ipv4_packed(&attributes, chunk, &Negotiated::default(), &mut wire)?;
    }
    Message::Update(Update::end_of_rib(Family::IPV4_UNICAST))
        .encode(&Negotiated::default(), &mut wire)?;
    Ok(wire)
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut stream = TcpStream::connect(SocketAddr::new(args.receiver, args.port))
        .await
        .with_context(|| format!("connecting to {}:{}", args.receiver, args.port))?;
    stream.set_nodelay(true)?;
    let router_id = match (args.router_id, stream.local_addr()?.ip()) {
        (Some(id), _) => id,
        (None, IpAddr::V4(source)) => source,
        (None, IpAddr::V6(_)) => bail!("over IPv6, give --router-id"),
    };
    let wire = feed(args.asn, router_id, args.count)?;

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
    println!("first_update_unix {started:.3}");
    std::io::stdout().flush()?;
    stream.write_all(&wire).await?;
    eprintln!("feed written: {} octets", wire.len());

    loop {
        match receive(&mut stream, &mut buffer).await? {
            Message::Keepalive => send(&mut stream, Message::Keepalive).await?,
            Message::Notification(notification) => bail!("session ended: {notification}"),
            _ => {}
        }
    }
}
