//! `tortie-node autodetect`, the real binary, run inside network namespaces built to look
//! like the hosts Calico users run on: several NICs, a keepalived VIP, a docker bridge, a
//! NIC that is down, a NIC with a secondary address, and the classic two-NIC lab.
//!
//! Every test builds its own namespaces (the guards remove them, and every link in them,
//! also when the test fails), so the tests run in parallel.

use serde::Deserialize;
use std::time::Duration;
use tortie_tests::{Exec, Netns, Output, tortie_node, veth};

// ---------------------------------------------------------------------------------------
// Running the binary and reading its report
// ---------------------------------------------------------------------------------------

/// Variables that configure tortie-node (or would make it think it runs in a cluster, or
/// print logs): removed from what the test process inherited, so only the test's own
/// settings count.
const INHERITED_SETTINGS: &[&str] = &[
    "IP",
    "IP6",
    "IP_AUTODETECTION_METHOD",
    "IP6_AUTODETECTION_METHOD",
    "NODENAME",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "KUBECONFIG",
    "RUST_LOG",
];

/// `-o json`: one object on stdout.
#[derive(Debug, Deserialize)]
struct Report {
    ipv4: Option<Detection>,
    ipv6: Option<Detection>,
    warnings: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Detection {
    address: String,
    interface: Option<String>,
    method: String,
    #[serde(default)]
    considered: Vec<Considered>,
}

#[derive(Debug, Deserialize)]
struct Considered {
    interface: String,
    /// Null when the interface was rejected as a whole.
    address: Option<String>,
    verdict: Verdict,
    reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Taken,
    Candidate,
    Skipped,
}

#[derive(Debug, Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// Runs `tortie-node autodetect <args>` in `netns` with exactly the settings in `env`.
fn autodetect(netns: &Netns, env: &[(&str, &str)], args: &[&str]) -> Output {
    let exec = INHERITED_SETTINGS
        .iter()
        .fold(Exec::new(tortie_node()).arg("autodetect"), |exec, key| {
            exec.env_remove(key)
        });
    exec.args(args).envs(env.iter().copied()).run_in(netns)
}

/// A successful `-o json` run, parsed.
struct Detected {
    report: Report,
    output: Output,
}

/// Runs `tortie-node autodetect -o json` and expects exit 0 and one JSON object.
#[track_caller]
fn detect(netns: &Netns, env: &[(&str, &str)]) -> Detected {
    let output = autodetect(netns, env, &["-o", "json"]);
    assert_eq!(
        output.code(),
        Some(0),
        "expected success in {netns}:\n{output}\naddresses:\n{}",
        netns.describe_addresses()
    );
    let report = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("stdout is not the documented JSON ({error}):\n{output}"));
    Detected { report, output }
}

/// Runs `tortie-node autodetect -o json` and expects it to fail with `code`.
#[track_caller]
fn detect_fails(netns: &Netns, env: &[(&str, &str)], code: i32) -> Output {
    let output = autodetect(netns, env, &["-o", "json"]);
    assert_eq!(output.code(), Some(code), "expected exit {code}:\n{output}");
    assert!(
        !output.stderr.trim().is_empty(),
        "exit {code} must say why on stderr:\n{output}"
    );
    output
}

impl Detected {
    #[track_caller]
    fn family(&self, family: Family) -> &Detection {
        let detection = match family {
            Family::V4 => &self.report.ipv4,
            Family::V6 => &self.report.ipv6,
        };
        detection
            .as_ref()
            .unwrap_or_else(|| panic!("expected an {family:?} result:\n{}", self.output))
    }

    /// Expects the chosen address, its interface and the normalized method.
    #[track_caller]
    fn assert_chosen(&self, family: Family, address: &str, interface: Option<&str>, method: &str) {
        let detection = self.family(family);
        assert_eq!(
            (
                detection.address.as_str(),
                detection.interface.as_deref(),
                detection.method.as_str()
            ),
            (address, interface, method),
            "chosen {family:?} address, interface, method:\n{}",
            self.output
        );
        // A given address (IP=...) is not detected, so only detection lists its choice.
        if let (Some(interface), false) = (interface, method.starts_with("IP")) {
            self.assert_considered(family, interface, Some(address), Verdict::Taken, "");
        }
    }

    /// Expects exactly one entry for (`interface`, `address`) in `considered`, with
    /// `verdict` and a reason containing `reason_contains`. `address: None` is an interface
    /// rejected as a whole.
    #[track_caller]
    fn assert_considered(
        &self,
        family: Family,
        interface: &str,
        address: Option<&str>,
        verdict: Verdict,
        reason_contains: &str,
    ) {
        let considered = &self.family(family).considered;
        let matching: Vec<&Considered> = considered
            .iter()
            .filter(|entry| entry.interface == interface && entry.address.as_deref() == address)
            .collect();
        let [entry] = matching.as_slice() else {
            panic!(
                "expected one {family:?} considered entry for {interface} / {address:?}, \
                 found {}:\n{}",
                matching.len(),
                self.output
            )
        };
        assert_eq!(
            entry.verdict, verdict,
            "verdict for {interface} / {address:?}:\n{}",
            self.output
        );
        assert!(
            entry.reason.contains(reason_contains) && !entry.reason.trim().is_empty(),
            "reason for {interface} / {address:?} should mention {reason_contains:?}, \
             got {:?}:\n{}",
            entry.reason,
            self.output
        );
    }
}

#[track_caller]
fn assert_mentions(output: &Output, parts: &[&str]) {
    for part in parts {
        assert!(
            output.stderr.contains(part),
            "stderr should mention {part:?}:\n{output}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The busy host: every kind of interface a node carries
// ---------------------------------------------------------------------------------------

/// A node namespace and the namespace holding the far ends of its veths (its "network").
/// The node's links, in creation order (so in ifindex order, which first-found walks from
/// the top):
///
/// | link    | state             | addresses                              |
/// |---------|-------------------|----------------------------------------|
/// | lo      | up                | 127.0.0.1/8                            |
/// | eth0    | up                | 198.51.100.10/24, 198.51.100.11/24 (secondary) |
/// | ens1    | up                | 203.0.113.10/24                        |
/// | eth2    | down              | 192.0.2.20/24                          |
/// | docker0 | up, port vethd1   | 198.18.0.1/24                          |
/// | vethd1  | up (docker0 port) | none                                   |
/// | lb0     | up                | 203.0.113.100/32 (a keepalived VIP)    |
///
/// The far ends hold 198.51.100.1/24 (behind eth0) and 203.0.113.1/24 (behind ens1).
struct BusyHost {
    node: Netns,
    _network: Netns,
}

fn busy_host(tag: &str) -> BusyHost {
    let node = Netns::new(tag);
    let network = Netns::new(&format!("{tag}-net"));

    let link = |name: &str, far_name: &str| {
        veth(&node, name, &network, far_name);
        network.link_up(far_name);
    };

    link("eth0", "p-eth0");
    network.add_address("p-eth0", "198.51.100.1/24");
    node.add_address("eth0", "198.51.100.10/24");
    node.add_address("eth0", "198.51.100.11/24");
    node.link_up("eth0");

    link("ens1", "p-ens1");
    network.add_address("p-ens1", "203.0.113.1/24");
    node.add_address("ens1", "203.0.113.10/24");
    node.link_up("ens1");

    link("eth2", "p-eth2");
    node.add_address("eth2", "192.0.2.20/24");

    node.add_bridge("docker0");
    node.add_address("docker0", "198.18.0.1/24");
    link("vethd1", "p-vethd1");
    node.set_master("vethd1", "docker0");
    node.link_up("vethd1");
    node.link_up("docker0");

    // Last, so it has the highest ifindex and first-found meets it first, as Calico does.
    link("lb0", "p-lb0");
    node.add_address("lb0", "203.0.113.100/32");
    node.link_up("lb0");

    for up in ["eth0", "ens1", "vethd1", "docker0", "lb0"] {
        node.wait_carrier(up);
    }
    let eth2 = node.link_state("eth2");
    assert!(!eth2.admin_up(), "eth2 should be down: {eth2}");
    let lb0 = node.link_state("lb0");
    let docker0 = node.link_state("docker0");
    assert!(
        lb0.index > docker0.index,
        "lb0 ({lb0}) should come after docker0 ({docker0})"
    );

    BusyHost {
        node,
        _network: network,
    }
}

#[test]
fn first_found_takes_the_newest_real_interface_and_explains_the_rest() {
    let host = busy_host("ff");
    let detected = detect(&host.node, &[]);

    detected.assert_chosen(Family::V4, "203.0.113.10/24", Some("ens1"), "first-found");
    let v4 = Family::V4;
    // The VIP comes first in the walk, but another candidate exists.
    detected.assert_considered(v4, "lb0", Some("203.0.113.100/32"), Verdict::Skipped, "/32");
    detected.assert_considered(v4, "vethd1", None, Verdict::Skipped, "default skip list");
    detected.assert_considered(v4, "docker0", None, Verdict::Skipped, "default skip list");
    detected.assert_considered(v4, "eth2", None, Verdict::Skipped, "down");
    detected.assert_considered(v4, "eth0", Some("198.51.100.10/24"), Verdict::Candidate, "");
    detected.assert_considered(v4, "lo", None, Verdict::Skipped, "default skip list");
    assert!(
        detected.report.ipv6.is_none(),
        "IPv6 is off unless IP6=autodetect:\n{}",
        detected.output
    );

    // IP=autodetect means the same as no IP at all.
    let explicit = detect(&host.node, &[("IP", "autodetect")]);
    explicit.assert_chosen(Family::V4, "203.0.113.10/24", Some("ens1"), "first-found");
}

#[test]
fn text_output_names_the_choice_then_every_interface() {
    let host = busy_host("text");
    let output = autodetect(&host.node, &[], &[]).expect_success();
    let mut lines = output.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("IPv4 203.0.113.10/24 on ens1 (method: first-found)"),
        "first line:\n{output}"
    );
    let rest: Vec<&str> = lines.collect();
    for interface in ["lb0", "vethd1", "docker0", "eth2", "ens1", "eth0", "lo"] {
        assert!(
            rest.iter()
                .any(|line| line.split_whitespace().any(|word| word == interface)),
            "a line should explain {interface}:\n{output}"
        );
    }
    // One line per considered entry (eth0 has two addresses), then the IPv6 section.
    let considered = detect(&host.node, &[]).family(Family::V4).considered.len();
    assert!(
        rest.len() >= considered,
        "expected at least {considered} lines after the first:\n{output}"
    );

    // IP=none with nothing else enabled is a configuration error, so IPv6 is on here.
    host.node.add_address("ens1", "2001:db8:113::10/64");
    let none =
        autodetect(&host.node, &[("IP", "none"), ("IP6", "autodetect")], &[]).expect_success();
    assert_eq!(
        none.stdout.lines().next(),
        Some("IPv4 none (IP=none)"),
        "first line:\n{none}"
    );
}

#[test]
fn interface_ignores_the_default_skip_list_and_takes_the_primary_address() {
    let host = busy_host("iface");
    let v4 = Family::V4;

    // Two addresses on one interface: the primary is chosen, the secondary is a candidate.
    let eth0 = detect(&host.node, &[("IP_AUTODETECTION_METHOD", "interface=eth0")]);
    eth0.assert_chosen(v4, "198.51.100.10/24", Some("eth0"), "interface=eth0");
    eth0.assert_considered(v4, "eth0", Some("198.51.100.11/24"), Verdict::Candidate, "");
    eth0.assert_considered(v4, "ens1", None, Verdict::Skipped, "");

    // A pattern is a regex; the down eth2 matches ^eth too but is never chosen.
    let prefix = detect(&host.node, &[("IP_AUTODETECTION_METHOD", "interface=^eth")]);
    prefix.assert_chosen(v4, "198.51.100.10/24", Some("eth0"), "interface=^eth");
    prefix.assert_considered(v4, "eth2", None, Verdict::Skipped, "down");

    // Several patterns: any may match.
    let list = detect(
        &host.node,
        &[("IP_AUTODETECTION_METHOD", "interface=nothing-here,ens1")],
    );
    list.assert_chosen(
        v4,
        "203.0.113.10/24",
        Some("ens1"),
        "interface=nothing-here,ens1",
    );

    // Named explicitly, a docker bridge is a choice like any other.
    let docker = detect(
        &host.node,
        &[("IP_AUTODETECTION_METHOD", "interface=docker0")],
    );
    docker.assert_chosen(v4, "198.18.0.1/24", Some("docker0"), "interface=docker0");

    // Named explicitly and the only candidate, the VIP is chosen.
    let vip = detect(&host.node, &[("IP_AUTODETECTION_METHOD", "interface=lb0")]);
    vip.assert_chosen(v4, "203.0.113.100/32", Some("lb0"), "interface=lb0");

    // A down interface is never chosen, even when it is the only one named.
    let down = detect_fails(
        &host.node,
        &[("IP_AUTODETECTION_METHOD", "interface=eth2")],
        1,
    );
    assert_mentions(&down, &["eth2", "down"]);
}

#[test]
fn skip_interface_adds_to_the_default_list() {
    let host = busy_host("skip");
    let v4 = Family::V4;

    let detected = detect(
        &host.node,
        &[("IP_AUTODETECTION_METHOD", "skip-interface=ens1")],
    );
    detected.assert_chosen(v4, "198.51.100.10/24", Some("eth0"), "skip-interface=ens1");
    detected.assert_considered(v4, "ens1", None, Verdict::Skipped, "");
    detected.assert_considered(v4, "docker0", None, Verdict::Skipped, "default skip list");
    detected.assert_considered(v4, "lb0", Some("203.0.113.100/32"), Verdict::Skipped, "/32");

    // With every real NIC skipped, the VIP is the only candidate left, and it is chosen.
    let only_vip = detect(
        &host.node,
        &[("IP_AUTODETECTION_METHOD", "skip-interface=ens1,eth0")],
    );
    only_vip.assert_chosen(
        v4,
        "203.0.113.100/32",
        Some("lb0"),
        "skip-interface=ens1,eth0",
    );
}

#[test]
fn cidr_looks_at_every_interface_but_prefers_a_real_subnet_to_the_vip() {
    let host = busy_host("cidr");
    let v4 = Family::V4;

    // lb0's /32 is inside 203.0.113.0/24 and comes first, but ens1's /24 is a real subnet.
    let detected = detect(
        &host.node,
        &[("IP_AUTODETECTION_METHOD", "cidr=203.0.113.0/24")],
    );
    detected.assert_chosen(v4, "203.0.113.10/24", Some("ens1"), "cidr=203.0.113.0/24");
    detected.assert_considered(v4, "lb0", Some("203.0.113.100/32"), Verdict::Skipped, "/32");

    let eth0 = detect(
        &host.node,
        &[("IP_AUTODETECTION_METHOD", "cidr=198.51.100.0/24")],
    );
    eth0.assert_chosen(v4, "198.51.100.10/24", Some("eth0"), "cidr=198.51.100.0/24");

    // cidr= ignores the default skip list.
    let docker = detect(
        &host.node,
        &[("IP_AUTODETECTION_METHOD", "cidr=198.18.0.0/15")],
    );
    docker.assert_chosen(v4, "198.18.0.1/24", Some("docker0"), "cidr=198.18.0.0/15");

    // Several networks: 192.0.2.0/24 is only on the down eth2, so 198.51.100.0/24 wins.
    let list = detect(
        &host.node,
        &[(
            "IP_AUTODETECTION_METHOD",
            "cidr=192.0.2.0/24,198.51.100.0/24",
        )],
    );
    list.assert_chosen(
        v4,
        "198.51.100.10/24",
        Some("eth0"),
        "cidr=192.0.2.0/24,198.51.100.0/24",
    );

    let down_only = detect_fails(
        &host.node,
        &[("IP_AUTODETECTION_METHOD", "cidr=192.0.2.0/24")],
        1,
    );
    assert_mentions(&down_only, &["192.0.2.0/24"]);
}

#[test]
fn can_reach_takes_the_source_address_the_kernel_would_use() {
    let host = busy_host("reach");
    let v4 = Family::V4;

    let eth0 = detect(
        &host.node,
        &[("IP_AUTODETECTION_METHOD", "can-reach=198.51.100.1")],
    );
    eth0.assert_chosen(
        v4,
        "198.51.100.10/24",
        Some("eth0"),
        "can-reach=198.51.100.1",
    );

    let ens1 = detect(
        &host.node,
        &[("IP_AUTODETECTION_METHOD", "can-reach=203.0.113.1")],
    );
    ens1.assert_chosen(v4, "203.0.113.10/24", Some("ens1"), "can-reach=203.0.113.1");

    // No route leads there (the namespace has no default route).
    let unreachable = detect_fails(
        &host.node,
        &[("IP_AUTODETECTION_METHOD", "can-reach=198.19.200.1")],
        1,
    );
    assert_mentions(&unreachable, &["198.19.200.1"]);
}

#[test]
fn a_vip_alone_is_chosen_by_first_found() {
    let node = Netns::new("vip");
    let network = Netns::new("vip-net");
    veth(&node, "eth0", &network, "p-eth0");
    network.link_up("p-eth0");
    node.add_address("eth0", "198.51.100.10/24"); // down: not a candidate
    veth(&node, "lb0", &network, "p-lb0");
    network.link_up("p-lb0");
    node.add_address("lb0", "203.0.113.100/32");
    node.link_up("lb0");
    node.wait_carrier("lb0");

    let detected = detect(&node, &[]);
    detected.assert_chosen(Family::V4, "203.0.113.100/32", Some("lb0"), "first-found");
    detected.assert_considered(Family::V4, "eth0", None, Verdict::Skipped, "down");
}

#[test]
fn a_bridge_is_chosen_only_with_carrier() {
    let node = Netns::new("bridge");
    let network = Netns::new("bridge-net");
    veth(&node, "eth0", &network, "p-eth0");
    network.link_up("p-eth0");
    node.add_address("eth0", "198.51.100.10/24");
    node.link_up("eth0");
    node.add_bridge("docker0");
    node.add_address("docker0", "198.18.0.1/24");
    node.link_up("docker0");
    node.wait_carrier("eth0");
    let docker0_named = [("IP_AUTODETECTION_METHOD", "interface=docker0")];

    // A bridge without ports: some kernels give it carrier, others do not (this one's
    // `ip link` says which); the tool must follow what the kernel says.
    let empty = node.link_state("docker0");
    if empty.carrier() {
        detect(&node, &docker0_named).assert_chosen(
            Family::V4,
            "198.18.0.1/24",
            Some("docker0"),
            "interface=docker0",
        );
    } else {
        assert_mentions(&detect_fails(&node, &docker0_named, 1), &["no carrier"]);
    }

    // A port without carrier (its peer is down) takes the bridge's carrier away everywhere.
    veth(&node, "vethd1", &network, "p-vethd1");
    node.set_master("vethd1", "docker0");
    node.link_up("vethd1");
    node.wait_link(
        "docker0",
        "has lost carrier (its only port is dead)",
        |state| !state.carrier(),
    );
    let no_carrier = detect_fails(&node, &docker0_named, 1);
    assert_mentions(&no_carrier, &["docker0", "no carrier"]);

    // The port's peer comes up (a container started): the bridge has carrier and can be
    // chosen when named, but first-found still skips it by name.
    network.link_up("p-vethd1");
    node.wait_carrier("docker0");
    detect(&node, &docker0_named).assert_chosen(
        Family::V4,
        "198.18.0.1/24",
        Some("docker0"),
        "interface=docker0",
    );
    let first_found = detect(&node, &[]);
    first_found.assert_chosen(Family::V4, "198.51.100.10/24", Some("eth0"), "first-found");
    first_found.assert_considered(
        Family::V4,
        "docker0",
        None,
        Verdict::Skipped,
        "default skip list",
    );
}

// ---------------------------------------------------------------------------------------
// Settings given instead of detected, IPv6
// ---------------------------------------------------------------------------------------

#[test]
fn ip_given_takes_the_prefix_of_the_interface_that_holds_it() {
    let host = busy_host("ipset");
    let held = detect(&host.node, &[("IP", "198.51.100.10")]);
    held.assert_chosen(
        Family::V4,
        "198.51.100.10/24",
        Some("eth0"),
        "IP=198.51.100.10",
    );
    assert!(
        held.report.warnings.is_empty(),
        "an address an interface holds needs no warning:\n{}",
        held.output
    );

    let with_prefix = detect(&host.node, &[("IP", "203.0.113.10/24")]);
    with_prefix.assert_chosen(
        Family::V4,
        "203.0.113.10/24",
        Some("ens1"),
        "IP=203.0.113.10/24",
    );
}

#[test]
fn ip_given_that_no_interface_holds_is_a_host_address_with_a_warning() {
    let host = busy_host("iporph");
    let detected = detect(&host.node, &[("IP", "192.0.2.99")]);
    detected.assert_chosen(Family::V4, "192.0.2.99/32", None, "IP=192.0.2.99");
    assert!(
        detected
            .report
            .warnings
            .iter()
            .any(|warning| warning.contains("192.0.2.99")),
        "expected a warning about 192.0.2.99:\n{}",
        detected.output
    );
}

#[test]
fn ip_none_means_no_ipv4() {
    let host = busy_host("ipnone");
    // IP=none with nothing else enabled is a configuration error, so IPv6 is on here.
    host.node.add_address("ens1", "2001:db8:113::10/64");
    let detected = detect(&host.node, &[("IP", "none"), ("IP6", "autodetect")]);
    detected.assert_chosen(
        Family::V6,
        "2001:db8:113::10/64",
        Some("ens1"),
        "first-found",
    );
    let object: serde_json::Value = serde_json::from_str(&detected.output.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}):\n{}", detected.output));
    assert_eq!(
        object.get("ipv4"),
        Some(&serde_json::Value::Null),
        "expected \"ipv4\": null:\n{}",
        detected.output
    );
}

#[test]
fn ipv6_is_detected_when_ip6_is_autodetect() {
    // eth0 (dual stack), ens1 (IPv6 only), lb0 (a /128 VIP), in that order.
    let node = Netns::new("v6");
    let network = Netns::new("v6-net");
    veth(&node, "eth0", &network, "p-eth0");
    network.link_up("p-eth0");
    network.add_address("p-eth0", "2001:db8::1/64");
    node.add_address("eth0", "198.51.100.10/24");
    node.add_address("eth0", "2001:db8::10/64");
    node.link_up("eth0");
    veth(&node, "ens1", &network, "p-ens1");
    network.link_up("p-ens1");
    network.add_address("p-ens1", "2001:db8:1::1/64");
    node.add_address("ens1", "2001:db8:1::10/64");
    node.link_up("ens1");
    veth(&node, "lb0", &network, "p-lb0");
    network.link_up("p-lb0");
    node.add_address("lb0", "2001:db8:ffff::1/128");
    node.link_up("lb0");
    for link in ["eth0", "ens1", "lb0"] {
        node.wait_carrier(link);
    }
    let (v4, v6) = (Family::V4, Family::V6);

    let detected = detect(&node, &[("IP6", "autodetect")]);
    detected.assert_chosen(v4, "198.51.100.10/24", Some("eth0"), "first-found");
    detected.assert_considered(v4, "ens1", None, Verdict::Skipped, "no IPv4 address");
    detected.assert_chosen(v6, "2001:db8:1::10/64", Some("ens1"), "first-found");
    detected.assert_considered(
        v6,
        "lb0",
        Some("2001:db8:ffff::1/128"),
        Verdict::Skipped,
        "/128",
    );
    detected.assert_considered(v6, "eth0", Some("2001:db8::10/64"), Verdict::Candidate, "");

    let by_cidr = detect(
        &node,
        &[
            ("IP", "none"),
            ("IP6", "autodetect"),
            ("IP6_AUTODETECTION_METHOD", "cidr=2001:db8::/64"),
        ],
    );
    assert!(
        by_cidr.report.ipv4.is_none(),
        "IP=none:\n{}",
        by_cidr.output
    );
    by_cidr.assert_chosen(v6, "2001:db8::10/64", Some("eth0"), "cidr=2001:db8::/64");

    for (destination, address, interface) in [
        ("2001:db8::1", "2001:db8::10/64", "eth0"),
        ("2001:db8:1::1", "2001:db8:1::10/64", "ens1"),
    ] {
        let method = format!("can-reach={destination}");
        let reached = detect(
            &node,
            &[("IP6", "autodetect"), ("IP6_AUTODETECTION_METHOD", &method)],
        );
        reached.assert_chosen(v6, address, Some(interface), &method);
    }

    let given = detect(&node, &[("IP6", "2001:db8::10")]);
    given.assert_chosen(v6, "2001:db8::10/64", Some("eth0"), "IP6=2001:db8::10");

    let off = detect(&node, &[("IP6", "none")]);
    assert!(off.report.ipv6.is_none(), "IP6=none:\n{}", off.output);
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

#[test]
fn malformed_settings_exit_2_with_one_line_naming_the_bad_part() {
    let node = Netns::new("malformed");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("IP_AUTODETECTION_METHOD", "interfaces=eth0")],
            "interfaces",
        ),
        (
            &[("IP_AUTODETECTION_METHOD", "cidr=300.1.2.0/24")],
            "300.1.2.0/24",
        ),
        (&[("IP_AUTODETECTION_METHOD", "interface=eth[")], "eth["),
        (&[("IP_AUTODETECTION_METHOD", "can-reach=")], "can-reach="),
        (&[("IP", "300.1.2.3")], "300.1.2.3"),
        // Both families off: Calico refuses to start; so do we, saying why.
        (&[("IP", "none"), ("IP6", "none")], "no address family"),
        (
            &[
                ("IP6", "autodetect"),
                ("IP6_AUTODETECTION_METHOD", "interfaces=eth0"),
            ],
            "interfaces",
        ),
    ];
    for &(env, bad_part) in cases {
        for format in [&["-o", "json"][..], &[][..]] {
            let output = autodetect(&node, env, format);
            assert_eq!(output.code(), Some(2), "expected exit 2:\n{output}");
            let lines: Vec<&str> = output.stderr.lines().collect();
            let [line] = lines.as_slice() else {
                panic!("expected exactly one line on stderr:\n{output}")
            };
            assert!(
                line.starts_with("tortie-node: ")
                    && line.contains(bad_part)
                    && line.contains("valid forms:"),
                "the line should start with \"tortie-node: \", name {bad_part:?} and list \
                 the valid forms:\n{output}"
            );
        }
    }
}

#[test]
fn nothing_found_exits_1_and_says_why() {
    let host = busy_host("none");
    let output = detect_fails(
        &host.node,
        &[("IP_AUTODETECTION_METHOD", "cidr=192.0.2.0/24")],
        1,
    );
    assert_mentions(&output, &["192.0.2.0/24"]);

    // A namespace with nothing but loopback: Calico would crash-loop; we explain.
    let bare = Netns::new("bare");
    let output = detect_fails(&bare, &[], 1);
    assert_mentions(&output, &["first-found"]);
}

#[test]
fn kubernetes_internal_ip_outside_a_cluster_exits_1_and_says_why() {
    let host = busy_host("k8s");
    let output = detect_fails(
        &host.node,
        &[
            ("IP_AUTODETECTION_METHOD", "kubernetes-internal-ip"),
            // No ~/.kube/config either, whatever the machine's root has.
            ("HOME", "/nonexistent/tortie-tests-home"),
        ],
        1,
    );
    let stderr = output.stderr.to_lowercase();
    assert!(
        stderr.contains("kubernetes")
            && ["cluster", "kubernetes_service_host", "kubeconfig"]
                .iter()
                .any(|why| stderr.contains(why)),
        "stderr should say kubernetes-internal-ip needs a cluster:\n{output}"
    );
}

// ---------------------------------------------------------------------------------------
// The classic two-NIC lab
// ---------------------------------------------------------------------------------------

/// Two nodes wired crosswise on two subnets, as in the Calico docs' two-NIC examples:
///
/// ```text
///   node A                               node B
///   ens32 198.51.100.7/24  <-- veth -->  eth1 198.51.100.8/24
///   ens33 203.0.113.71/24  <-- veth -->  eth0 203.0.113.72/24
/// ```
struct Lab {
    a: Netns,
    b: Netns,
}

const A_198: &str = "198.51.100.7/24";
const A_203: &str = "203.0.113.71/24";
const B_198: &str = "198.51.100.8/24";
const B_203: &str = "203.0.113.72/24";

fn two_nic_lab(tag: &str) -> Lab {
    let a = Netns::new(&format!("{tag}-a"));
    let b = Netns::new(&format!("{tag}-b"));
    veth(&a, "ens32", &b, "eth1");
    veth(&a, "ens33", &b, "eth0");
    a.add_address("ens32", A_198);
    a.add_address("ens33", A_203);
    b.add_address("eth1", B_198);
    b.add_address("eth0", B_203);
    for (node, links) in [(&a, ["ens32", "ens33"]), (&b, ["eth0", "eth1"])] {
        for link in links {
            node.link_up(link);
        }
    }
    for (node, links) in [(&a, ["ens32", "ens33"]), (&b, ["eth0", "eth1"])] {
        for link in links {
            node.wait_carrier(link);
        }
    }
    Lab { a, b }
}

impl Lab {
    /// Runs detection with `method` on each node and expects (address, interface) there.
    #[track_caller]
    fn expect(&self, method_a: &str, method_b: &str, a: (&str, &str), b: (&str, &str)) {
        for (node, method, (address, interface)) in [(&self.a, method_a, a), (&self.b, method_b, b)]
        {
            let detected = detect(node, &[("IP_AUTODETECTION_METHOD", method)]);
            detected.assert_chosen(Family::V4, address, Some(interface), method);
        }
    }
}

#[test]
fn lab_first_found_takes_the_last_created_nic_on_each_node() {
    let lab = two_nic_lab("lab-ff");
    lab.expect(
        "first-found",
        "first-found",
        (A_203, "ens33"),
        (B_203, "eth0"),
    );
}

#[test]
fn lab_interface_picks_the_named_nic_on_both_nodes() {
    let lab = two_nic_lab("lab-if");
    lab.expect(
        "interface=ens33,eth0",
        "interface=ens33,eth0",
        (A_203, "ens33"),
        (B_203, "eth0"),
    );
    lab.expect(
        "interface=ens32,eth1",
        "interface=ens32,eth1",
        (A_198, "ens32"),
        (B_198, "eth1"),
    );
}

#[test]
fn lab_skip_interface_picks_the_other_nic_on_both_nodes() {
    let lab = two_nic_lab("lab-skip");
    lab.expect(
        "skip-interface=ens32,eth1",
        "skip-interface=ens32,eth1",
        (A_203, "ens33"),
        (B_203, "eth0"),
    );
    lab.expect(
        "skip-interface=ens33,eth0",
        "skip-interface=ens33,eth0",
        (A_198, "ens32"),
        (B_198, "eth1"),
    );
}

#[test]
fn lab_can_reach_picks_the_nic_toward_the_other_node() {
    let lab = two_nic_lab("lab-reach");
    lab.expect(
        "can-reach=203.0.113.72",
        "can-reach=203.0.113.71",
        (A_203, "ens33"),
        (B_203, "eth0"),
    );
    lab.expect(
        "can-reach=198.51.100.8",
        "can-reach=198.51.100.7",
        (A_198, "ens32"),
        (B_198, "eth1"),
    );
}

#[test]
fn lab_cidr_picks_the_nic_in_the_subnet_on_both_nodes() {
    let lab = two_nic_lab("lab-cidr");
    lab.expect(
        "cidr=203.0.113.0/24",
        "cidr=203.0.113.0/24",
        (A_203, "ens33"),
        (B_203, "eth0"),
    );
    lab.expect(
        "cidr=198.51.100.0/24",
        "cidr=198.51.100.0/24",
        (A_198, "ens32"),
        (B_198, "eth1"),
    );
}

// ---------------------------------------------------------------------------------------
// kubernetes-internal-ip against an API server stand-in
// ---------------------------------------------------------------------------------------

/// A minimal Kubernetes API stand-in, serving `GET /api/v1/nodes/<name>` for one Node over
/// plain HTTP on a namespace's loopback, until dropped. No kube-apiserver can be installed
/// on these machines; this exercises tortie-node's real client (kubeconfig loading, the
/// request, the Node object's decoding) against the API's documented shape.
struct FakeApiServer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl FakeApiServer {
    fn start(
        netns: &Netns,
        node_name: &'static str,
        internal_ips: &'static [&'static str],
    ) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let thread_stop = stop.clone();
        let thread = netns.spawn_thread(move || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind in netns");
            port_tx
                .send(listener.local_addr().expect("bound address").port())
                .expect("port to the test");
            listener.set_nonblocking(true).expect("nonblocking listener");
            let mut requests = Vec::new();
            while !thread_stop.load(Ordering::Relaxed) {
                let mut stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        // Not a wait for a condition: the accept loop's idle pause.
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(error) => panic!("accept: {error}"),
                };
                stream.set_nonblocking(false).expect("blocking stream");
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("read timeout");
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request).into_owned();
                let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
                requests.push(path.clone());
                let wanted = format!("/api/v1/nodes/{node_name}");
                let (status, body) = if path == wanted {
                    let addresses: Vec<String> = internal_ips
                        .iter()
                        .map(|ip| format!(r#"{{"type":"InternalIP","address":"{ip}"}}"#))
                        .chain([format!(r#"{{"type":"Hostname","address":"{node_name}"}}"#)])
                        .collect();
                    (
                        "200 OK",
                        format!(
                            r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{node_name}"}},"status":{{"addresses":[{}]}}}}"#,
                            addresses.join(",")
                        ),
                    )
                } else {
                    (
                        "404 Not Found",
                        r#"{"apiVersion":"v1","kind":"Status","status":"Failure","message":"not found","reason":"NotFound","code":404}"#.to_string(),
                    )
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
            requests
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the stand-in API server reports its port");
        FakeApiServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn kubeconfig(&self, dir: &tortie_tests::ScratchDir) -> String {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: tester\ncurrent-context: stand-in\nusers:\n- name: tester\n  user:\n    token: not-a-secret\n",
            self.port
        );
        dir.write("kubeconfig", &text).display().to_string()
    }

    /// Stops serving and returns the paths that were requested.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(requests)) => requests,
            Some(Err(_)) => panic!("the stand-in API server panicked"),
            None => Vec::new(),
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn kubernetes_internal_ip_takes_the_nodes_internal_ip_from_the_api() {
    let host = Netns::new("k8s-api");
    let far = Netns::new("k8s-far");
    veth(&host, "ens3", &far, "eth0");
    host.add_address("ens3", "198.51.100.10/24");
    host.add_address("ens3", "2001:db8:100::10/64");
    host.link_up("ens3");
    far.link_up("eth0");
    host.wait_carrier("ens3");
    // A newer interface first-found would prefer: the API's answer must win.
    veth(&host, "ens4", &far, "eth1");
    host.add_address("ens4", "203.0.113.10/24");
    host.link_up("ens4");
    far.link_up("eth1");

    let server = FakeApiServer::start(&host, "node-7", &["198.51.100.10", "2001:db8:100::10"]);
    let scratch = tortie_tests::ScratchDir::new("k8s-api");
    let kubeconfig = server.kubeconfig(&scratch);
    let detected = detect(
        &host,
        &[
            ("IP_AUTODETECTION_METHOD", "kubernetes-internal-ip"),
            ("IP6", "autodetect"),
            ("IP6_AUTODETECTION_METHOD", "kubernetes-internal-ip"),
            ("NODENAME", "node-7"),
            ("KUBECONFIG", &kubeconfig),
        ],
    );
    detected.assert_chosen(
        Family::V4,
        "198.51.100.10/24",
        Some("ens3"),
        "kubernetes-internal-ip",
    );
    detected.assert_chosen(
        Family::V6,
        "2001:db8:100::10/64",
        Some("ens3"),
        "kubernetes-internal-ip",
    );

    // A node the API does not know: exit 1, naming the node and what the API said.
    let output = detect_fails(
        &host,
        &[
            ("IP_AUTODETECTION_METHOD", "kubernetes-internal-ip"),
            ("NODENAME", "node-unknown"),
            ("KUBECONFIG", &kubeconfig),
        ],
        1,
    );
    assert!(
        output.stderr.contains("node-unknown"),
        "the error names the node:\n{output}"
    );
    let requests = server.finish();
    assert!(
        requests.iter().any(|p| p == "/api/v1/nodes/node-7")
            && requests.iter().any(|p| p == "/api/v1/nodes/node-unknown"),
        "requests seen by the stand-in: {requests:?}"
    );
}
