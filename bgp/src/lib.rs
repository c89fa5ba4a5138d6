//! tortie's BGP speaker: how every node learns where every other node's blocks are, and
//! how the cluster talks to top-of-rack routers. It takes configuration and prefixes to
//! originate, and hands back best-route changes; it knows nothing of the kernel or IPAM.
//!
//! Read this first; it is the crate's one-page design.
//!
//! # Layout (one file per concern)
//!
//! | module | what it is | state it owns |
//! |---|---|---|
//! | [`packet`] | the wire codec: bytes ⇄ [`packet::Message`], RFC 7606 error classes | none (pure) |
//! | [`neighbor`] | the RFC 4271 §8 session FSM of one peer, as a pure state machine: event in, actions out | its [`neighbor::Session`] |
//! | [`tasks`] | the tokio tasks of one peer: the peer task (FSM + timers, a second FSM while a connection collision is resolved) and, per connection, a reader (frame + decode) and a writer | the peer's `Session`s, their timers and sockets |
//! | [`net`] | TCP for sessions: listener, connector, TCP MD5 (RFC 2385), TTL security (RFC 5082) | the sockets it opens |
//! | [`speaker`] | the owner task: peers by address, the tables, import → decision → export, per-peer Adj-RIB-Out (prefixes sent), graceful restart (stale routes, restart timers, End-of-RIB), the agent's API (commands in, batches of [`speaker::RouteChange`] out, peer table) | every peer's handle, all routes |
//! | [`rib`] | interned attributes; per family one table of every accepted path per prefix (post-policy Adj-RIBs-In) with the best first (Loc-RIB); the §9.1 decision | (owned by the speaker) |
//! | [`propagation`] | the protocol's import and export rules: loop checks, split horizon, route reflection, next hop and AS path rewriting | none (pure) |
//! | [`daemon`] | `tortie-bgpd`'s YAML configuration and its peer and route tables (`src/bin/tortie-bgpd.rs` is the binary) | none |
//! | [`policy`] | user import/export policy as plain values: ordered rules on prefix lists (ge/le), communities, AS path; accept with changes or reject; per peer in the speaker ([`speaker::PeerConfig`]) | none (pure) |
//!
//! # Who owns what, and how work flows
//!
//! ```text
//!  per peer (tokio tasks)                          speaker task (owner of routes)     agent
//!  ┌────────────────────────────────────┐ events  ┌─────────────────────────────┐ best-route
//!  │ reader: read → frame → decode      │──────►  │ peers by address, RIBs,     │──changes──►
//!  │ peer task: Session FSM, timers     │ (UPDATE,│ decision, policy,           │
//!  │ writer: ← encoded messages         │ up/down)│ Adj-RIB-Out → packed UPDATEs│◄─config,
//!  └────────────────────────────────────┘ ◄────── └─────────────────────────────┘  originate
//!                                         commands (start, stop, socket, UPDATE bytes)
//! ```
//!
//! - Each peer has a task that owns its FSM and timers ([`tasks::run_peer`]), and per
//!   connection a reader task that frames ([`packet::message_length`]) and decodes
//!   ([`packet::Message::decode`]) before anything reaches the routing state, so decoding
//!   of different peers runs on different cores. Malformed input is answered there: a
//!   session reset becomes the NOTIFICATION the error names
//!   ([`packet::DecodeError::notification`]); treat-as-withdraw and attribute discard
//!   travel with the UPDATE ([`packet::Decoded::errors`]). Reader and writer are separate
//!   tasks, so a peer that stops reading cannot stop us reading (the full-table deadlock).
//! - One speaker task ([`speaker::run_speaker`]) owns every route and the map of peers;
//!   peer tasks send it [`tasks::PeerEvent`]s and take [`tasks::PeerCommand`]s over
//!   channels. No locks: one owner per piece of state, fed by events, one `process_*`
//!   function per kind of event.
//! - The FSM itself ([`neighbor`]) does no I/O and reads no clock: it returns the actions
//!   (send this, start that timer, drop the connection), so every transition is a unit
//!   test, and the tasks are tested over in-memory pipes with tokio's paused clock.
//! - Work moves in batches, because a real table is tens of thousands of small UPDATEs
//!   (one per attribute set) and a hop per UPDATE cost more than the RIB: a reader hands
//!   its peer task everything one read brought, the peer task hands the speaker that
//!   read's UPDATEs as one [`tasks::PeerEvent::Updates`], and the speaker takes in what
//!   is queued (up to 16k best-path changes) before it passes the burst on, once: to the
//!   agent in batches of 1,024 [`speaker::RouteChange`]s, and to each peer as one run of
//!   packed UPDATEs. Any other event or command first flushes the burst, so order holds;
//!   a prefix changed twice in a burst goes out once, as it ended. Queues are short (4
//!   events, 2 reads per connection): a queued read is some 300 KiB decoded, and a longer
//!   queue only holds more of the table in memory while the speaker catches up.
//!
//! # The wire codec: our own, not a crate
//!
//! bgp-rs is unfit (NOTES.md: unmaintained, GPL, `unimplemented!()` in its encoder). The
//! serious alternative was netgauze-bgp-pkt 0.13 (Apache-2.0, complete). We wrote our own
//! codec, for three reasons, the first measured:
//!
//! 1. **Speed and memory of ingest.** The goal is to ingest 1M IPv4 prefixes faster than
//!    BIRD (0.25 s, ~4M prefixes/s) within its 94 MiB. On the same feed (1M /24s in 1,002
//!    packed UPDATEs, 4 attribute sets, one core of this 2-vCPU machine, median of 7) our
//!    decoder frames and decodes in **6.9 ms (145M prefixes/s)**, netgauze-bgp-pkt in
//!    **21 ms (47M prefixes/s)**; a decoded prefix is **5 octets** (`ipnet::Ipv4Net`)
//!    against netgauze's 16. Either is far below the RIB's budget, but ours leaves 97% of
//!    BIRD's 0.25 s for the RIB, and a third of the memory for queued UPDATEs.
//!    `cargo bench -p tortie-bgp` prints the table.
//! 2. **Error handling we can prove.** RFC 7606 grades each malformed attribute (discard,
//!    treat-as-withdraw, session reset) and the speaker must act on the grade; our decoder
//!    returns exactly that per attribute and never panics (a stable fuzzer runs in the test
//!    suite). netgauze reports parse errors, not RFC 7606 actions, and parses graceful
//!    restart as an unknown capability.
//! 3. **Session-dependent encoding under our control**: AS_PATH and AGGREGATOR in 2- or
//!    4-octet form with AS4_PATH/AS4_AGGREGATOR toward 2-octet peers and their merge on
//!    receipt (RFC 6793 §4.2), packed UPDATEs straight from shared attributes
//!    ([`packet::Update::encode_ipv4_packed`]), and a small dependency tree (`ipnet`,
//!    `thiserror`).
//!
//! Codec values use 4-octet AS numbers everywhere; the 2-octet forms exist only on the
//! wire. [`packet::PathAttributes`] holds everything but the prefixes and is `Hash + Eq`,
//! so the RIB can intern one copy per distinct attribute set.
//!
//! # The RIB's share of the budget
//!
//! Decode costs ~7 ms per 1M prefixes; the rest of BIRD's 0.25 s is for the RIB, the
//! sockets and the kernel. [`rib`] keeps per prefix one 8-octet path (peer index,
//! interned attribute index) inline in a hash table keyed by the prefix (16 octets an
//! entry), counts attribute references by hand and hashes prefixes with a folded
//! multiply. Measured (`cargo bench -p tortie-bgp --bench ingest`, one core, machine
//! shared with two compiling neighbours): 1M /24s framed, decoded, interned and inserted
//! in **80 to 90 ms, 34 MiB** of RSS growth. The first version, with an `Arc` per path, SipHash
//! and the paths in an enum, took 382 ms and 66 MiB: half of that time was the atomic
//! reference counts.
//!
//! End to end, `tests/src/bin/bgp-ingest-bench.rs` feeds 1M /24s from a raw feeder over a
//! veth pair to tortie-bgpd, BIRD 2.0.12 and GoBGP 3.10 in turn (first UPDATE until the
//! receiver's RIB holds them all), and times propagation feeder → X → BIRD. Its default
//! feed is the one to quote: 89,279 attribute sets in 89,558 UPDATEs, as a real table has.
//! Medians of 3 interleaved runs on this 2-core machine, shared with other engineers'
//! compilers (load average 3.2 to 3.6 during the runs; BIRD alone varies ±25% run to run):
//!
//! | feed | tortie-bgpd | BIRD 2 | GoBGP 3 | tortie ÷ BIRD (time, RSS) |
//! |---|---:|---:|---:|---:|
//! | realistic, ingest | 0.234 s, 106 MiB | 0.385 s, 122 MiB | 10.3 s, 1.40 GiB | 0.61, 0.87 |
//! | realistic, feeder → X → BIRD | 0.476 s | 0.925 s | — | 0.51 |
//! | four sets, ingest | 0.135 s, 65 MiB | 0.194 s, 94 MiB | 8.2 s, 1.23 GiB | 0.70, 0.69 |
//! | four sets, feeder → X → BIRD | 0.267 s | 0.486 s | — | 0.55 |
//!
//! An earlier run of this branch under heavier load (4.4 to 8.9) gave 0.443 s / 109 MiB
//! against BIRD's 0.613 s / 122 MiB, and propagation 1.571 s against 1.677 s: with two
//! daemons and the feeder on two busy cores, propagation is set mostly by the machine,
//! and single runs of either daemon now and then take up to a second longer than their
//! neighbours (tortie's propagation runs above: 1.501, 0.476, 0.461 s).
//!
//! Before the work moved in batches (see above) the realistic feed took tortie-bgpd
//! 0.639 s against BIRD's 0.457 s (1.40× slower, 91 MiB), and propagation 1.94 s against
//! 1.15 s: each of the 89k UPDATEs paid two channel hops, a route-change batch, an export
//! pass and a write of its own, and SipHash in the interner and the Adj-RIB-Out. Memory
//! grew from 91 to 106 MiB with the batching (a queued event is now a read's worth of
//! UPDATEs); most of it is the table (34 MiB at 1M, half again while it grows) and the
//! 89k attribute sets (~40 MiB, some 400 octets each as [`packet::PathAttributes`]).
//!
//! `cargo bench -p tortie-bgp --bench speaker` runs the same feeds through
//! [`speaker::run_speaker`] over in-memory pipes, with a second peer taking the table, and
//! reports the process's CPU time as well as wall time (for comparing two builds run in
//! turn; it counts the raw peers and the runtime's idle spinning too). At load average 2:
//! realistic feed 0.35 s wall, 0.44 s CPU, from 2.9 s wall before the batching; four sets
//! 0.16 s wall, from 0.59 s. It is the loop to profile (`perf record` works here).

pub mod daemon;
pub mod neighbor;
pub mod net;
pub mod packet;
pub mod policy;
pub mod propagation;
pub mod rib;
pub mod speaker;
pub mod tasks;
#[cfg(test)]
mod testing;
