//! Route install benchmark: how fast `Dataplane::update_routes` (tortie-node's path from a
//! BGP event to the kernel) programs a burst of routes, next to a minimal raw netlink
//! sender and `ip -batch` on the same machine in the same run. A benchmark, not a test:
//! it prints a table and fails only when something breaks.
//!
//! ```text
//! cargo run --release -p tortie-tests --bin route-install-bench                 # as root
//! cargo run --release -p tortie-tests --bin route-install-bench -- --routes 100000 --runs 7
//! cargo run --release -p tortie-tests --bin route-install-bench -- --methods raw,tortie
//! ```
//!
//! # How it measures
//!
//! Every run of every method gets a fresh namespace whose `eth0` (a veth, far end up)
//! holds 198.51.100.1/24. The routes are `/32`s from 198.18.0.0/15, all
//! `via 198.51.100.2 dev eth0 proto 75`, "arriving at once": the clock starts with the
//! list of prefixes in hand and stops when the last acknowledgement is in, so building the
//! requests is included for every method. Afterwards the kernel's proto-75 routes are
//! counted; a run that did not install them all aborts the benchmark.
//!
//! - raw netlink: the floor. Requests built with netlink-packet-route's typed builder,
//!   256 per `sendmsg` on a blocking socket, the acknowledgements of each batch drained
//!   before the next (NOTES.md measured 189k routes/s this way).
//! - `Dataplane::update_routes`: connected beforehand (connecting reads the namespace's
//!   routes, which is not what is measured), on a current-thread tokio runtime.
//! - `ip -batch`: one round trip per route, for reference (NOTES.md: 84k routes/s). Its
//!   time includes starting `ip` (under `ip netns exec`, a few milliseconds) and parsing
//!   the batch file.
//!
//! - restart: not an install but tortie-node's restart path, for scale: the routes are
//!   already in the kernel (put there untimed by an earlier `reconcile`), and the clock
//!   covers a new `Dataplane::connect` (which reads the kernel's routes) and a `reconcile`
//!   that finds every route as wanted and changes nothing.
//!
//! Figures on a 2-vCPU machine shared with other builds (load average 4 to 9), medians:
//!
//! | routes | raw netlink | update_routes | ip -batch | restart (connect + reconcile) |
//! |---:|---:|---:|---:|---:|
//! | 10,000 (7 runs) | 165k/s | 158k/s (0.96×) | 67k/s (0.41×) | 200k/s |
//! | 100,000 (3 runs) | 143k/s | 120k/s (0.84×) | 65k/s (0.46×) | 174k/s |
//!
//! `perf` puts over 80% of update_routes' time in the kernel (FIB insertion, the ACKs);
//! the agent's own share (building requests, the bookkeeping) is a few per cent.
//!
//! Methods run interleaved (raw, tortie, ip, raw, ...) so a change in the machine's load
//! hits all alike; the table shows the median of `--runs` (5 by default), and min/max.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::RouteProtocol;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_core::{
    ErrorBuffer, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR, NetlinkBuffer,
    NetlinkMessage,
};
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tortie_agent::dataplane::{Dataplane, Desired, Device, ROUTE_PROTOCOL, RouteTarget};
use tortie_tests::{Exec, Netns, ScratchDir, block_on_in, veth};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const BATCH: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Raw,
    Tortie,
    IpBatch,
    Restart,
}

impl Method {
    const ALL: [Method; 4] = [
        Method::Raw,
        Method::Tortie,
        Method::IpBatch,
        Method::Restart,
    ];

    fn parse(text: &str) -> Method {
        match text {
            "raw" => Method::Raw,
            "tortie" => Method::Tortie,
            "ip" => Method::IpBatch,
            "restart" => Method::Restart,
            other => panic!("unknown method {other}; the methods are raw, tortie, ip, restart"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Method::Raw => "raw netlink, 256 per sendmsg",
            Method::Tortie => "Dataplane::update_routes",
            Method::IpBatch => "ip -batch",
            Method::Restart => "restart: connect + reconcile, all present",
        }
    }
}

fn prefixes(count: usize) -> Vec<Ipv4Net> {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    assert!(
        count <= 1 << 17,
        "198.18.0.0/15 holds 131072 /32s; asked for {count}"
    );
    (0..count as u32)
        .map(|n| Ipv4Net::new(Ipv4Addr::from(base + n), 32).expect("a /32"))
        .collect()
}

fn node() -> (Netns, Netns) {
    let node = Netns::new("rib-node");
    let far = Netns::new("rib-far");
    veth(&node, "eth0", &far, "eth0");
    node.add_address("eth0", "198.51.100.1/24");
    far.add_address("eth0", "198.51.100.2/24");
    node.link_up("eth0");
    far.link_up("eth0");
    node.wait_carrier("eth0");
    (node, far)
}

/// One run of `method` in a fresh namespace: how long installing `count` routes took.
fn run(method: Method, count: usize) -> Duration {
    let (node, _far) = node();
    let elapsed = match method {
        Method::Raw => block_on_in(&node, move || async move { raw_install(&prefixes(count)) }),
        Method::Tortie => block_on_in(&node, move || async move {
            let mut dataplane = Dataplane::connect()
                .await
                .unwrap_or_else(|error| panic!("connect: {error}"));
            let list = prefixes(count);
            let started = Instant::now();
            let target = RouteTarget::Via {
                gateway: IpAddr::V4(GATEWAY),
                device: Device::Named("eth0".to_string()),
                onlink: false,
            };
            let upserts: Vec<(IpNet, RouteTarget)> = list
                .iter()
                .map(|prefix| (IpNet::V4(*prefix), target.clone()))
                .collect();
            let report = dataplane
                .update_routes(&upserts, &[])
                .await
                .unwrap_or_else(|error| panic!("update_routes: {error}"));
            let elapsed = started.elapsed();
            assert!(
                report.failures.is_empty() && report.added == count,
                "update_routes: {report}: {:?}",
                report.failures.first()
            );
            elapsed
        }),
        Method::Restart => block_on_in(&node, move || async move {
            let list = prefixes(count);
            let target = RouteTarget::Via {
                gateway: IpAddr::V4(GATEWAY),
                device: Device::Named("eth0".to_string()),
                onlink: false,
            };
            let desired = Desired {
                routes: list
                    .iter()
                    .map(|prefix| (IpNet::V4(*prefix), target.clone()))
                    .collect(),
                ..Desired::default()
            };
            // The previous run's state, installed untimed; then the restart: a new
            // dataplane reads the kernel and finds everything already as wanted.
            let mut before = Dataplane::connect()
                .await
                .unwrap_or_else(|error| panic!("connect: {error}"));
            before
                .reconcile(&desired)
                .await
                .unwrap_or_else(|error| panic!("reconcile: {error}"));
            drop(before);
            let started = Instant::now();
            let mut dataplane = Dataplane::connect()
                .await
                .unwrap_or_else(|error| panic!("connect: {error}"));
            let report = dataplane
                .reconcile(&desired)
                .await
                .unwrap_or_else(|error| panic!("reconcile: {error}"));
            let elapsed = started.elapsed();
            assert!(
                report.is_unchanged() && report.unchanged >= count,
                "the restart's reconcile: {report}"
            );
            elapsed
        }),
        Method::IpBatch => {
            let scratch = ScratchDir::new("route-install-bench");
            let list = prefixes(count);
            let started = Instant::now();
            let mut batch = String::with_capacity(count * 64);
            for prefix in &list {
                batch.push_str(&format!(
                    "route add {prefix} via {GATEWAY} dev eth0 proto {ROUTE_PROTOCOL}\n"
                ));
            }
            let file = scratch.write("routes.batch", &batch);
            Exec::new("ip")
                .arg("-batch")
                .arg(&file)
                .timeout(Duration::from_secs(600))
                .run_in(&node)
                .expect_success();
            started.elapsed()
        }
    };
    let installed = node
        .ip(&["-4", "route", "show", "proto", &ROUTE_PROTOCOL.to_string()])
        .stdout
        .lines()
        .count();
    assert_eq!(
        installed,
        count,
        "{} installed {installed} of {count} routes",
        method.name()
    );
    elapsed
}

/// The floor: typed requests, serialised back to back, 256 per `sendmsg`, the batch's
/// acknowledgements drained before the next one is sent.
fn raw_install(list: &[Ipv4Net]) -> Duration {
    let mut socket = Socket::new(NETLINK_ROUTE).unwrap_or_else(|e| panic!("socket: {e}"));
    socket.bind_auto().unwrap_or_else(|e| panic!("bind: {e}"));
    socket
        .set_cap_ack(true)
        .unwrap_or_else(|e| panic!("cap_ack: {e}"));
    let size: libc::c_int = 4 * 1024 * 1024;
    // SAFETY: a valid socket and a c_int option value.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let kernel = SocketAddr::new(0, 0);
    let started = Instant::now();
    let mut outgoing = Vec::with_capacity(BATCH * 128);
    let mut incoming = vec![0u8; 64 * 1024];
    let mut sequence = 0u32;
    for chunk in list.chunks(BATCH) {
        outgoing.clear();
        for prefix in chunk {
            let message = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(prefix.addr(), prefix.prefix_len())
                .gateway(GATEWAY)
                .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
                .build();
            let mut request = NetlinkMessage::from(RouteNetlinkMessage::NewRoute(message));
            request.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
            request.header.sequence_number = sequence;
            sequence = sequence.wrapping_add(1);
            request.finalize();
            let start = outgoing.len();
            outgoing.resize(start + request.buffer_len(), 0);
            request.serialize(&mut outgoing[start..]);
        }
        socket
            .send_to(&outgoing, &kernel, 0)
            .unwrap_or_else(|e| panic!("sendmsg: {e}"));
        let mut answered = 0;
        while answered < chunk.len() {
            let length = socket
                .recv(&mut &mut incoming[..], 0)
                .unwrap_or_else(|e| panic!("recv: {e}"));
            let mut offset = 0;
            while offset < length {
                let header = NetlinkBuffer::new_checked(&incoming[offset..length])
                    .unwrap_or_else(|e| panic!("a malformed answer: {e}"));
                if header.message_type() == NLMSG_ERROR {
                    let error = ErrorBuffer::new_checked(header.payload())
                        .unwrap_or_else(|e| panic!("a malformed error: {e}"));
                    if let Some(code) = error.code() {
                        panic!(
                            "the kernel refused a route: {}",
                            std::io::Error::from_raw_os_error(-code.get())
                        );
                    }
                    answered += 1;
                }
                offset += (header.length() as usize).next_multiple_of(4);
            }
        }
    }
    started.elapsed()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn main() {
    let mut routes = 10_000usize;
    let mut runs = 5usize;
    let mut methods = Method::ALL.to_vec();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> usize {
            args.next()
                .and_then(|text| text.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--routes" => routes = value("--routes"),
            "--runs" => runs = value("--runs").max(1),
            "--methods" => {
                let list = args.next().unwrap_or_default();
                methods = list.split(',').map(Method::parse).collect();
            }
            other => {
                panic!("unknown argument {other}; use --routes N --runs N --methods raw,tortie,ip")
            }
        }
    }
    let load_before = tortie_tests::bench::load_average();
    let mut rates: Vec<(Method, Vec<f64>)> = methods.iter().map(|m| (*m, Vec::new())).collect();
    for round in 1..=runs {
        for (method, seen) in &mut rates {
            let elapsed = run(*method, routes);
            let rate = routes as f64 / elapsed.as_secs_f64();
            eprintln!(
                "run {round}/{runs}: {:<30} {:>8.1} ms  {:>9.0} routes/s",
                method.name(),
                elapsed.as_secs_f64() * 1000.0,
                rate
            );
            seen.push(rate);
        }
    }
    // The ratio is to the raw sender's median when it ran, else to the first method's.
    let raw = rates
        .iter()
        .find(|(method, _)| *method == Method::Raw)
        .unwrap_or(&rates[0])
        .1
        .clone();
    let raw = median(raw);
    println!();
    println!(
        "route-install-bench: {routes} IPv4 /32 routes via one gateway arriving at once, \
         a fresh namespace per run, median of {runs} runs"
    );
    println!(
        "load average before: {load_before}; after: {}",
        tortie_tests::bench::load_average()
    );
    println!();
    println!("| method | routes/s (median) | min | max | vs raw |");
    println!("|---|---:|---:|---:|---:|");
    for (method, seen) in &rates {
        let middle = median(seen.clone());
        let low = seen.iter().copied().fold(f64::INFINITY, f64::min);
        let high = seen.iter().copied().fold(0.0, f64::max);
        // A restart installs nothing, so its rate is not comparable to the others'.
        let ratio = if *method == Method::Restart {
            "—".to_string()
        } else {
            format!("{:.2}", middle / raw)
        };
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {ratio} |",
            method.name(),
            middle,
            low,
            high,
        );
    }
}
