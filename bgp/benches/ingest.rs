//! Ingest of a full table into the RIB, without sockets: 1,000,000 IPv4 /24s in packed
//! UPDATEs (four attribute sets) framed, decoded, interned and inserted into the table,
//! on one core. Prints a table; run with `cargo bench -p tortie-bgp --bench ingest`.
//!
//! BIRD 2.0.12 ingests the same amount over a real session in 0.25 s with 94 MiB peak RSS
//! (NOTES.md): this is the part of that budget our RIB takes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tortie_bgp::packet::{
    AsPath, AsSegment, Community, Message, Negotiated, Origin, PathAttributes, SegmentKind, Update,
    message_length,
};
use tortie_bgp::rib::{AttributeStore, Path, PeerId, PeerInfo, Table};

const PREFIXES: u32 = 1_000_000;
const RUNS: usize = 5;

fn attribute_set(set: u32) -> PathAttributes {
    let asns = (0..2 + set).map(|i| 64600 + set * 10 + i).collect();
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath {
            segments: vec![AsSegment {
                kind: SegmentKind::Sequence,
                asns,
            }],
        }),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        communities: (0..=set).map(|i| Community(0xFDE8_0000 + i)).collect(),
        ..PathAttributes::default()
    }
}

fn feed() -> Vec<u8> {
    let prefixes: Vec<Ipv4Net> = (0..PREFIXES)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x1000_0000 + (i << 8)), 24).unwrap_or_default())
        .collect();
    let mut wire = Vec::new();
    for (set, chunk) in prefixes.chunks(prefixes.len().div_ceil(4)).enumerate() {
        Update::encode_ipv4_packed(
            &attribute_set(set as u32),
            chunk,
            &Negotiated::default(),
            &mut wire,
        )
        .unwrap_or_else(|error| panic!("the feed encodes: {error}"));
    }
    wire
}

/// Resident set size of this process, from /proc (Linux).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn ingest(wire: &[u8], peers: &HashMap<PeerId, PeerInfo>) -> (Table<Ipv4Net>, AttributeStore) {
    let negotiated = Negotiated::default();
    let mut table = Table::default();
    let mut store = AttributeStore::default();
    let mut rest = wire;
    while let Ok(Some(length)) = message_length(rest) {
        let decoded = Message::decode(&rest[..length], &negotiated)
            .unwrap_or_else(|error| panic!("the feed decodes: {error}"));
        rest = &rest[length..];
        let Message::Update(update) = decoded.message else {
            continue;
        };
        let attributes = store.intern(update.attributes);
        for prefix in update.nlri {
            let path = Path {
                peer: PeerId(1),
                attributes,
            };
            table.announce(prefix, path, &mut store, peers);
        }
    }
    (table, store)
}

fn main() {
    let wire = feed();
    let peers: HashMap<PeerId, PeerInfo> = [(
        PeerId(1),
        PeerInfo {
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
            router_id: Ipv4Addr::new(192, 0, 2, 2),
            internal: false,
        },
    )]
    .into();

    let mut times = Vec::new();
    let mut growth = 0;
    for _ in 0..RUNS {
        let before = rss_bytes().unwrap_or(0);
        let start = Instant::now();
        let (table, store) = ingest(&wire, &peers);
        times.push(start.elapsed());
        growth = rss_bytes().unwrap_or(0).saturating_sub(before);
        assert_eq!(table.len(), PREFIXES as usize);
        assert_eq!(store.len(), 4);
    }
    times.sort();
    let median: Duration = times[times.len() / 2];
    let seconds = median.as_secs_f64();
    println!(
        "ingest of {PREFIXES} IPv4 /24s from one peer into the RIB, median of {RUNS} runs, one core"
    );
    println!(
        "| {:<40} | {:>9} | {:>12} | {:>15} | {:>8} |",
        "case", "ms", "M prefixes/s", "RSS growth MiB", "x BIRD"
    );
    println!(
        "|{:-<42}|{:->11}|{:->14}|{:->17}|{:->10}|",
        "", "", "", "", ""
    );
    println!(
        "| {:<40} | {:>9.1} | {:>12.2} | {:>15.1} | {:>8.2} |",
        "frame + decode + intern + table insert",
        seconds * 1e3,
        f64::from(PREFIXES) / seconds / 1e6,
        growth as f64 / f64::from(1 << 20),
        0.25 / seconds,
    );
    println!("\"x BIRD\": BIRD's whole 1M ingest over a session (0.25 s) divided by this time.");
}
