//! The feeds of the ingest benchmarks, shared by the raw feeder (`feeder.rs`) and the
//! in-process speaker bench (`benches/speaker.rs`): the same generator, from the same seed,
//! so both measure the very same bytes. What the feeds hold and why is described in
//! `feeder.rs`'s docs.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;

use tortie_bgp::packet::{
    AsPath, AsSegment, Community, Family, LargeCommunity, Message, Negotiated, Origin,
    PathAttributes, SegmentKind, Update,
};

/// Which variety of attributes to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    Realistic,
    FourSets,
}

/// A feed on the wire, and what it holds.
pub struct Wire {
    pub bytes: Vec<u8>,
    pub attribute_sets: usize,
    pub updates: usize,
}

/// The `count` /24s from 16.0.0.0 up (see the crate docs above for why these).
pub fn prefixes(count: u32) -> Result<Vec<Ipv4Net>> {
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

pub fn feed(kind: Feed, asn: u32, next_hop: Ipv4Addr, count: u32) -> Result<Wire> {
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
