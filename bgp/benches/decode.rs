//! Decode speed of packed UPDATEs: 1,000,000 IPv4 /24s in four attribute sets (different
//! AS paths and communities), packed into 4096-octet UPDATEs as a full-table feeder sends
//! them. Prints a table; run with `cargo bench -p tortie-bgp`.
//!
//! The figure to beat is BIRD's whole ingest, 1M prefixes in 0.25 s (4M prefixes/s, see
//! NOTES.md): decoding must cost a small fraction of that, leaving the rest for the RIB.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tortie_bgp::packet::attribute::decode_ipv4_prefixes;
use tortie_bgp::packet::{
    AsPath, AsSegment, Community, LargeCommunity, Message, Negotiated, Origin, PathAttributes,
    SegmentKind, message_length,
};

const PREFIXES: u32 = 1_000_000;
const RUNS: usize = 7;

fn attribute_set(set: u32) -> PathAttributes {
    let asns = (0..2 + set)
        .map(|i| 64600 + set * 10 + i)
        .chain([4_200_000_000 + set])
        .collect();
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath {
            segments: vec![AsSegment {
                kind: SegmentKind::Sequence,
                asns,
            }],
        }),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        multi_exit_disc: set.is_multiple_of(2).then_some(set * 10),
        communities: (0..=set).map(|i| Community(0xFDE8_0000 + i)).collect(),
        large_communities: (0..set)
            .map(|i| LargeCommunity {
                global_admin: 64512,
                local_data_1: set,
                local_data_2: i,
            })
            .collect(),
        ..PathAttributes::default()
    }
}

/// The feed: a stream of packed UPDATEs, as it would arrive on the socket.
pub fn feed(prefixes: &[Ipv4Net], negotiated: &Negotiated) -> (Vec<u8>, usize) {
    let mut wire = Vec::with_capacity(prefixes.len() * 4 + prefixes.len() / 8);
    let mut messages = 0;
    for (set, chunk) in prefixes.chunks(prefixes.len().div_ceil(4)).enumerate() {
        messages += tortie_bgp::packet::Update::encode_ipv4_packed(
            &attribute_set(set as u32),
            chunk,
            negotiated,
            &mut wire,
        )
        .unwrap_or_else(|error| panic!("the feed encodes: {error}"));
    }
    (wire, messages)
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn measure(mut run: impl FnMut() -> usize) -> (Duration, usize) {
    let mut count = 0;
    let runs = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            count = black_box(run());
            start.elapsed()
        })
        .collect();
    (median(runs), count)
}

/// Frames and fully decodes every message, keeping nothing.
fn decode_all(wire: &[u8], negotiated: &Negotiated) -> usize {
    let mut rest = wire;
    let mut prefixes = 0;
    while let Ok(Some(length)) = message_length(rest) {
        match Message::decode(&rest[..length], negotiated) {
            Ok(decoded) => {
                if let Message::Update(update) = decoded.message {
                    prefixes += update.nlri.len();
                }
            }
            Err(error) => panic!("the feed decodes: {error}"),
        }
        rest = &rest[length..];
    }
    prefixes
}

/// Frames and decodes every message, keeping the decoded UPDATEs (as a receive queue
/// would): shows the memory a decoded table takes.
fn decode_and_keep(wire: &[u8], negotiated: &Negotiated, kept: &mut Vec<Message>) -> usize {
    let mut rest = wire;
    while let Ok(Some(length)) = message_length(rest) {
        if let Ok(decoded) = Message::decode(&rest[..length], negotiated) {
            kept.push(decoded.message);
        }
        rest = &rest[length..];
    }
    kept.iter()
        .map(|m| {
            if let Message::Update(u) = m {
                u.nlri.len()
            } else {
                0
            }
        })
        .sum()
}

/// Only the NLRI loop, into one reused vector: the floor under a full decode.
fn nlri_only(wire: &[u8]) -> usize {
    let mut rest = wire;
    let mut prefixes = Vec::with_capacity(1024);
    let mut count = 0;
    while let Ok(Some(length)) = message_length(rest) {
        let body = &rest[19..length];
        let attributes_len = usize::from(u16::from_be_bytes([body[2], body[3]]));
        prefixes.clear();
        if decode_ipv4_prefixes(&body[4 + attributes_len..], &mut prefixes).is_ok() {
            count += prefixes.len();
        }
        rest = &rest[length..];
    }
    count
}

fn row(case: &str, messages: usize, (time, prefixes): (Duration, usize)) {
    let seconds = time.as_secs_f64();
    println!(
        "| {case:<46} | {messages:>8} | {prefixes:>9} | {:>9.1} | {:>12.1} | {:>8.1} |",
        seconds * 1e3,
        prefixes as f64 / seconds / 1e6,
        0.25 / seconds,
    );
}

fn main() {
    let four = Negotiated {
        four_octet_as: true,
    };
    let two = Negotiated {
        four_octet_as: false,
    };
    let prefixes: Vec<Ipv4Net> = (0..PREFIXES)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x1000_0000 + (i << 8)), 24).unwrap_or_default())
        .collect();
    let (wire, messages) = feed(&prefixes, &four);
    let (wire_two, messages_two) = feed(&prefixes, &two);

    println!(
        "decode of {PREFIXES} IPv4 /24s in packed UPDATEs ({} octets), median of {RUNS} runs, one core",
        wire.len()
    );
    println!(
        "| {:<46} | {:>8} | {:>9} | {:>9} | {:>12} | {:>8} |",
        "case", "messages", "prefixes", "ms", "M prefixes/s", "x BIRD"
    );
    println!(
        "|{:-<48}|{:->10}|{:->11}|{:->11}|{:->14}|{:->10}|",
        "", "", "", "", "", ""
    );
    row(
        "frame + decode, 4-octet AS session",
        messages,
        measure(|| decode_all(&wire, &four)),
    );
    row(
        "frame + decode, 2-octet AS session (AS4_PATH)",
        messages_two,
        measure(|| decode_all(&wire_two, &two)),
    );
    row(
        "frame + NLRI loop only",
        messages,
        measure(|| nlri_only(&wire)),
    );
    let mut kept = Vec::new();
    row(
        "frame + decode, keeping every UPDATE",
        messages,
        measure(|| {
            kept = Vec::with_capacity(messages);
            decode_and_keep(&wire, &four, &mut kept)
        }),
    );
    row(
        "encode: pack the prefixes into UPDATEs",
        messages,
        measure(|| {
            black_box(feed(&prefixes, &four));
            prefixes.len()
        }),
    );
    println!("\"x BIRD\": how many times faster than BIRD's whole 1M-prefix ingest (0.25 s).");
    println!(
        "memory: {} octets per decoded prefix (Ipv4Net), {} octets per decoded UPDATE header \
         (Message); the kept table holds about {:.1} MiB of prefixes",
        std::mem::size_of::<Ipv4Net>(),
        std::mem::size_of::<Message>(),
        (PREFIXES as usize * std::mem::size_of::<Ipv4Net>()) as f64 / (1 << 20) as f64,
    );
}
