//! The `tortie` CNI plugin, invoked as a runtime does (`CNI_*` environment, configuration on
//! stdin) inside the nodes' namespaces of a two-node cluster: pods get addresses and
//! `cali*` veths and reach each other and both nodes; CHECK names what is broken; DEL leaves
//! no trace and may be repeated; bad input is a spec error that changes nothing; parallel
//! ADDs get distinct addresses; pods' routes survive the agent's reconcile.

use std::time::Duration;

use tortie_tests::{Cluster, Exec, Netns, Output, Pod, run_in, wait_ping};

/// The network configuration a runtime would pass, for node `index`'s agent.
fn config(cluster: &Cluster, index: usize, version: &str) -> String {
    cluster.cni_config(index, version, 1400)
}

fn plugin(cluster: &Cluster, index: usize, env: &[(&str, &str)], stdin: &str) -> Output {
    cluster.plugin(index, env, stdin)
}

/// Creates a pod on node `node` with ADD (MTU 1400) and checks the result's shape.
#[track_caller]
fn add_pod(cluster: &Cluster, node: usize, name: &str) -> Pod {
    cluster.add_pod_with(node, name, &config(cluster, node, "1.0.0"))
}

fn start_cluster(tag: &str) -> Cluster {
    let mut cluster = Cluster::new(tag, 2, &[("TORTIE_IPV4POOL_IPIP", "Never")]);
    cluster.start_meshed(2, 1);
    cluster
}

fn ip(cluster: &Cluster, index: usize, args: &[&str]) -> String {
    cluster.lan.hosts[index].ip(args).stdout
}

/// `tortiectl ipam check -o json`: must be clean; returns the number of allocations.
#[track_caller]
fn ipam_allocations(cluster: &Cluster) -> u64 {
    let output = cluster.tortiectl(0, &["ipam", "check", "-o", "json"]);
    assert!(output.success(), "ipam check: {output}");
    let report: serde_json::Value =
        serde_json::from_str(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output}"));
    report["allocations"]
        .as_u64()
        .unwrap_or_else(|| panic!("{report}"))
}

#[test]
fn pods_on_two_nodes_reach_each_other_and_del_leaves_no_trace() {
    let mut cluster = start_cluster("cni-mesh");
    // Ten pods per node, as the issue asks.
    let pods: Vec<Pod> = (0..20)
        .map(|i| add_pod(&cluster, i % 2, &format!("p{i}")))
        .collect();
    let mut addresses: Vec<&str> = pods.iter().map(|p| p.address.as_str()).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), pods.len(), "distinct addresses");

    // The wiring, as the issue says it should look.
    let pod = &pods[0];
    let host_routes = ip(&cluster, 0, &["route", "show", "proto", "75"]);
    assert!(
        host_routes.contains(&format!("{} dev {} scope link", pod.address, pod.host_link)),
        "{host_routes}"
    );
    let pod_routes = pod.netns.ip(&["route", "show"]).stdout;
    assert!(
        pod_routes.contains("default via 169.254.1.1 dev eth0"),
        "{pod_routes}"
    );
    assert!(
        pod_routes
            .lines()
            .any(|r| r.starts_with("169.254.1.1 dev eth0") && r.contains("scope link")),
        "{pod_routes}"
    );
    let link = pod.netns.ip(&["-d", "link", "show", "eth0"]).stdout;
    assert!(link.contains("mtu 1400"), "{link}");
    let proxy_arp = run_in(
        &cluster.lan.hosts[0],
        "cat",
        [format!(
            "/proc/sys/net/ipv4/conf/{}/proxy_arp",
            pod.host_link
        )],
        &[],
    )
    .expect_success();
    assert_eq!(proxy_arp.stdout.trim(), "1");

    for from in &pods {
        for to in &pods {
            if from.name != to.name {
                wait_ping(&from.netns, &to.address);
            }
        }
        for node in 0..2 {
            wait_ping(&from.netns, &cluster.lan.v4(node).to_string());
        }
    }

    for pod in &pods {
        let output = pod.run(&cluster, "CHECK", &config(&cluster, pod.node, "1.0.0"));
        assert!(output.success(), "CHECK of a healthy pod: {output}");
    }

    // The agent's reconcile (at start) leaves pods' routes alone.
    cluster.stop(0);
    cluster.start(0);
    cluster.wait_established(0, 1);
    let host_routes = ip(&cluster, 0, &["route", "show", "proto", "75"]);
    for pod in pods.iter().filter(|p| p.node == 0) {
        assert!(
            host_routes.contains(&format!("{} dev {} scope link", pod.address, pod.host_link)),
            "after the agent's restart: {host_routes}"
        );
    }
    wait_ping(&pods[1].netns, &pods[0].address);

    // CHECK names a deleted route and a missing address.
    let broken = &pods[0];
    cluster.lan.hosts[0].ip(&["route", "del", &format!("{}/32", broken.address)]);
    let output = broken.run(&cluster, "CHECK", &config(&cluster, 0, "1.0.0"));
    assert!(!output.success(), "{output}");
    assert!(output.stdout.contains("\"code\":101"), "{output}");
    assert!(output.stdout.contains("host route"), "{output}");
    let broken = &pods[2];
    broken.netns.ip(&[
        "address",
        "del",
        &format!("{}/32", broken.address),
        "dev",
        "eth0",
    ]);
    let output = broken.run(&cluster, "CHECK", &config(&cluster, 0, "1.0.0"));
    assert!(!output.success(), "{output}");
    assert!(output.stdout.contains("lacks its address"), "{output}");

    // A repeated ADD (a runtime's retry) rewires the pod with the address it holds.
    let again = &pods[4];
    let output = again.run(&cluster, "ADD", &config(&cluster, again.node, "1.0.0"));
    assert!(output.success(), "repeated ADD: {output}");
    assert!(
        output.stdout.contains(&format!("\"{}/32\"", again.address)),
        "{output}"
    );
    wait_ping(&pods[1].netns, &again.address);
    let output = again.run(&cluster, "CHECK", &config(&cluster, again.node, "1.0.0"));
    assert!(output.success(), "CHECK after a repeated ADD: {output}");

    // DEL removes every trace, and a second DEL succeeds.
    assert_eq!(ipam_allocations(&cluster), pods.len() as u64);
    for pod in &pods {
        for _ in 0..2 {
            let output = pod.run(&cluster, "DEL", &config(&cluster, pod.node, "1.0.0"));
            assert!(output.success(), "DEL of {}: {output}", pod.name);
            assert!(output.stdout.trim().is_empty(), "{output}");
        }
    }
    for node in 0..2 {
        let links = ip(&cluster, node, &["link", "show"]);
        assert!(!links.contains("cali"), "node {node}: {links}");
        let routes = ip(&cluster, node, &["route", "show", "proto", "75"]);
        assert!(!routes.contains("scope link"), "node {node}: {routes}");
    }
    for pod in &pods {
        let links = pod.netns.ip(&["link", "show"]).stdout;
        assert!(!links.contains("eth0"), "{}: {links}", pod.name);
    }
    assert_eq!(ipam_allocations(&cluster), 0);
}

/// A plugin's environment, owned.
type Env<'a> = Vec<(&'a str, String)>;

#[test]
fn bad_input_is_a_spec_error_and_changes_nothing() {
    let cluster = start_cluster("cni-bad");
    let pod_netns = Netns::new("pod-bad");
    let path = format!("/run/netns/{}", pod_netns.name());
    let good = config(&cluster, 0, "1.0.0");
    let base = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "ctr-bad"),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=test;K8S_POD_NAME=bad"),
    ];
    let with = |key: &str, value: Option<&str>| -> Env {
        let mut env: Env = base
            .iter()
            .filter(|(k, _)| *k != key)
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        if let Some(value) = value {
            env.push((
                base.iter().find(|(k, _)| *k == key).unwrap().0,
                value.to_string(),
            ));
        }
        env
    };
    let cases: Vec<(&str, Env, String, u64)> = vec![
        (
            "malformed JSON",
            with("", None),
            "{\"cniVersion\": ".to_string(),
            6,
        ),
        (
            "an unknown cniVersion",
            with("", None),
            config(&cluster, 0, "0.2.9"),
            1,
        ),
        ("no CNI_NETNS", with("CNI_NETNS", None), good.clone(), 4),
        (
            "a netns that does not exist",
            with("CNI_NETNS", Some("/run/netns/tt-no-such-netns")),
            good.clone(),
            3,
        ),
    ];
    for (what, env, stdin, code) in cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let output = plugin(&cluster, 0, &env, &stdin);
        assert!(!output.success(), "{what}: {output}");
        let error: serde_json::Value = serde_json::from_str(&output.stdout)
            .unwrap_or_else(|e| panic!("{what}: the error is not JSON ({e}): {output}"));
        assert_eq!(error["code"], code, "{what}: {error}");
        assert!(
            error["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {error}"
        );
        assert!(error["cniVersion"].is_string(), "{what}: {error}");
    }
    let links = ip(&cluster, 0, &["link", "show"]);
    assert!(!links.contains("cali"), "{links}");
    assert_eq!(ipam_allocations(&cluster), 0, "nothing allocated");

    // A failure after the assignment (the pod already has an `lo`) is rolled back.
    let env: Vec<(&str, String)> = with("CNI_IFNAME", Some("lo"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = plugin(&cluster, 0, &env, &good);
    assert!(!output.success(), "{output}");
    assert!(output.stdout.contains("\"code\":5"), "{output}");
    assert!(
        output.stdout.contains("cannot create the veth pair"),
        "{output}"
    );
    let links = ip(&cluster, 0, &["link", "show"]);
    assert!(!links.contains("cali"), "rolled back: {links}");
    assert_eq!(ipam_allocations(&cluster), 0, "the assignment was released");

    // An agent that is not there: named, after a short wait.
    let mut missing = serde_json::from_str::<serde_json::Value>(&good).unwrap();
    missing["agent_socket"] = cluster
        .scratch
        .join("nowhere.sock")
        .display()
        .to_string()
        .into();
    let output = plugin(&cluster, 0, &base, &missing.to_string());
    assert!(!output.success(), "{output}");
    assert!(
        output
            .stdout
            .contains("tortie-node is not running on this node"),
        "{output}"
    );
    assert!(output.stdout.contains("\"code\":11"), "{output}");

    // VERSION lists every version of the issue.
    let output = plugin(
        &cluster,
        0,
        &[("CNI_COMMAND", "VERSION")],
        "{\"cniVersion\":\"1.1.0\"}",
    );
    assert!(output.success(), "{output}");
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        assert!(output.stdout.contains(version), "{output}");
    }
}

#[test]
fn parallel_adds_get_distinct_addresses() {
    let cluster = start_cluster("cni-par");
    const PODS: usize = 32;
    let pods: Vec<Pod> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..PODS)
            .map(|i| {
                let cluster = &cluster;
                scope.spawn(move || add_pod(cluster, 0, &format!("par{i}")))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an ADD panicked"))
            .collect()
    });
    let mut addresses: Vec<&str> = pods.iter().map(|p| p.address.as_str()).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), PODS, "{addresses:?}");
    assert_eq!(ipam_allocations(&cluster), PODS as u64);
    for pod in &pods {
        wait_ping(&pod.netns, &cluster.lan.v4(1).to_string());
        let output = pod.run(&cluster, "DEL", &config(&cluster, 0, "0.4.0"));
        assert!(output.success(), "{output}");
    }
    assert_eq!(ipam_allocations(&cluster), 0);
}

/// Runs a network-wide command (GC, STATUS) of the plugin with `config` on node `index`.
fn network_command(cluster: &Cluster, index: usize, command: &str, config: &str) -> Output {
    plugin(cluster, index, &[("CNI_COMMAND", command)], config)
}

#[test]
fn gc_frees_exactly_the_stale_attachments_and_status_says_ready() {
    let cluster = start_cluster("cni-gc");
    let pods: Vec<Pod> = (0..4)
        .map(|i| add_pod(&cluster, usize::from(i == 3), &format!("gc{i}")))
        .collect();
    assert_eq!(ipam_allocations(&cluster), 4);

    // Node 0's runtime still knows gc0 only: gc1 and gc2 go; node 1's gc3 is not node 0's.
    let mut config: serde_json::Value =
        serde_json::from_str(&config(&cluster, 0, "1.1.0")).unwrap();
    config["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": pods[0].container_id(), "ifname": "eth0"}]);
    let output = network_command(&cluster, 0, "GC", &config.to_string());
    assert!(output.success(), "{output}");
    assert_eq!(ipam_allocations(&cluster), 2);
    for pod in [&pods[0], &pods[3]] {
        let output = pod.run(
            &cluster,
            "CHECK",
            &self::config(&cluster, pod.node, "1.1.0"),
        );
        assert!(output.success(), "{} survives GC: {output}", pod.name);
    }
    let output = pods[1].run(&cluster, "CHECK", &self::config(&cluster, 0, "1.1.0"));
    assert!(output.stdout.contains("holds no address"), "{output}");

    // GC without the list is refused rather than taken as "nothing is valid".
    let output = network_command(&cluster, 0, "GC", &self::config(&cluster, 0, "1.1.0"));
    assert!(!output.success(), "{output}");
    assert!(output.stdout.contains("valid-attachments"), "{output}");
    assert_eq!(ipam_allocations(&cluster), 2);

    // STATUS: ready with the agent and an IPv4 pool; not with no IPv6 pool or no agent.
    let output = network_command(&cluster, 0, "STATUS", &self::config(&cluster, 0, "1.1.0"));
    assert!(output.success(), "{output}");
    let mut v6 = config.clone();
    v6["assign_ipv6"] = true.into();
    let output = network_command(&cluster, 0, "STATUS", &v6.to_string());
    assert!(!output.success(), "{output}");
    assert!(output.stdout.contains("\"code\":50"), "{output}");
    assert!(output.stdout.contains("IPv6 pool"), "{output}");
    let mut nowhere = config.clone();
    nowhere["agent_socket"] = cluster
        .scratch
        .join("nowhere.sock")
        .display()
        .to_string()
        .into();
    let output = network_command(&cluster, 0, "STATUS", &nowhere.to_string());
    assert!(!output.success(), "{output}");
    assert!(output.stdout.contains("\"code\":50"), "{output}");
    assert!(output.stdout.contains("not running"), "{output}");

    for pod in &pods {
        let output = pod.run(&cluster, "DEL", &self::config(&cluster, pod.node, "1.1.0"));
        assert!(output.success(), "{output}");
    }
    assert_eq!(ipam_allocations(&cluster), 0);
}

/// A reference interface plugin's configuration (`bridge`, `macvlan` or `ipvlan`), with
/// tortie-ipam's addresses, on node 0.
fn reference_config(cluster: &Cluster, plugin: &str) -> String {
    let mut config = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("{plugin}-net"),
        "type": plugin,
        "ipam": {
            "type": "tortie-ipam",
            "agent_socket": cluster.socket(0),
            "routes": [{"dst": "198.18.0.0/16"}],
        },
    });
    match plugin {
        "bridge" => {
            config["bridge"] = "br-tt".into();
            config["isGateway"] = false.into();
            config["ipMasq"] = false.into();
        }
        "macvlan" => {
            config["master"] = "eth0".into();
            config["mode"] = "bridge".into();
        }
        _ => {
            config["master"] = "eth0".into();
            config["mode"] = "l2".into();
        }
    }
    config.to_string()
}

/// Runs the reference `plugin` in node 0's namespace, as a runtime would.
fn reference(
    cluster: &Cluster,
    plugin: &str,
    pod: &Netns,
    container: &str,
    command: &str,
) -> Output {
    let reference = format!("/usr/lib/cni/{plugin}");
    assert!(
        std::path::Path::new(&reference).is_file(),
        "{reference} is missing: install containernetworking-plugins (scripts/install-test-deps.sh)"
    );
    Exec::new(reference)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/run/netns/{}", pod.name()))
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_PATH",
            format!("{}:/usr/lib/cni", tortie_tests::bin_dir().display()),
        )
        .stdin(reference_config(cluster, plugin).into_bytes())
        .timeout(Duration::from_secs(60))
        .run_in(&cluster.lan.hosts[0])
}

#[test]
fn the_reference_bridge_and_macvlan_plugins_wire_pods_with_tortie_ipam() {
    let cluster = start_cluster("cni-ref");
    for plugin in ["bridge", "macvlan"] {
        reference_pair(&cluster, plugin);
    }
}

/// Whether this host's kernel makes ipvlan links (CI's lacks the module): tried for real in
/// a throwaway namespace.
fn host_has_ipvlan() -> bool {
    let probe = Netns::new("ipvlan-probe");
    let far = Netns::new("ipvlan-far");
    tortie_tests::veth(&probe, "eth0", &far, "eth0");
    probe
        .try_ip(&[
            "link", "add", "link", "eth0", "name", "ipv0", "type", "ipvlan",
        ])
        .success()
}

/// The reference `ipvlan` with tortie-ipam: on this host when its kernel has ipvlan, else in
/// the VM tier (Debian's stock kernel has it), as [`inside_the_vm_ipvlan_pods_get_tortie_addresses`].
#[test]
fn the_reference_ipvlan_plugin_wires_pods_with_tortie_ipam() {
    if host_has_ipvlan() {
        println!("this kernel has ipvlan: testing it here");
        let cluster = start_cluster("cni-ipvl");
        reference_pair(&cluster, "ipvlan");
        return;
    }
    if let Some(reason) = tortie_tests::vm::unavailable() {
        tortie_tests::cannot_run(
            "the_reference_ipvlan_plugin_wires_pods_with_tortie_ipam",
            &format!("this kernel has no ipvlan and no VM can start here: {reason}"),
        );
    }
    let executable = std::env::current_exe().expect("the test executable's path");
    let output = tortie_tests::vm::run_in_vm(
        &executable.display().to_string(),
        &[
            "--ignored",
            "--exact",
            "inside_the_vm_ipvlan_pods_get_tortie_addresses",
            "--nocapture",
            "--test-threads=1",
        ],
        Duration::from_secs(600),
    );
    assert!(
        output.success() && output.stdout.contains("ipvlan pair: ok"),
        "ipvlan with tortie-ipam in the VM: {output}"
    );
}

#[test]
#[ignore = "runs inside the VM tier: started by the_reference_ipvlan_plugin_wires_pods_with_tortie_ipam"]
fn inside_the_vm_ipvlan_pods_get_tortie_addresses() {
    assert!(
        host_has_ipvlan(),
        "the VM's kernel should make ipvlan links"
    );
    let cluster = start_cluster("cni-ipvl");
    reference_pair(&cluster, "ipvlan");
    println!("ipvlan pair: ok");
}

/// Runs `tortie-ipam` itself on node 0 with `command` and `config`, as an interface plugin
/// passes GC and STATUS on to its IPAM plugin (spec 1.1; Debian's reference plugins predate
/// it, so the test plays the interface plugin).
fn ipam_command(
    cluster: &Cluster,
    command: &str,
    pod: Option<&(Netns, String, String)>,
    config: &serde_json::Value,
) -> Output {
    let mut exec = Exec::new(tortie_tests::binary("tortie-ipam"));
    if let Some((netns, container, _)) = pod {
        exec = exec
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", format!("/run/netns/{}", netns.name()))
            .env("CNI_IFNAME", "eth0");
    }
    exec.env("CNI_COMMAND", command)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(config.to_string().into_bytes())
        .timeout(Duration::from_secs(60))
        .run_in(&cluster.lan.hosts[0])
}

/// Two pods wired by the reference `plugin` with tortie-ipam: distinct addresses, they
/// reach each other; tortie-ipam's STATUS is ready and its GC frees exactly the pod missing
/// from the valid attachments; DEL releases the rest.
fn reference_pair(cluster: &Cluster, plugin: &str) {
    let pods: Vec<(Netns, String, String)> = (0..2)
        .map(|i| {
            let netns = Netns::new(&format!("{plugin}{i}"));
            let container = format!("{plugin}-ctr-{i}");
            let output = reference(cluster, plugin, &netns, &container, "ADD");
            assert!(output.success(), "{plugin} ADD: {output}");
            let result: serde_json::Value =
                serde_json::from_str(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output}"));
            let address = result["ips"][0]["address"]
                .as_str()
                .unwrap_or_else(|| panic!("{result}"))
                .trim_end_matches("/32")
                .to_string();
            assert!(address.starts_with("198.18."), "{result}");
            (netns, container, address)
        })
        .collect();
    assert_ne!(pods[0].2, pods[1].2);
    assert_eq!(ipam_allocations(cluster), 2);
    wait_ping(&pods[0].0, &pods[1].2);
    wait_ping(&pods[1].0, &pods[0].2);

    let mut config: serde_json::Value =
        serde_json::from_str(&reference_config(cluster, plugin)).expect("JSON");
    config["cniVersion"] = "1.1.0".into();
    let output = ipam_command(cluster, "STATUS", None, &config);
    assert!(output.success(), "tortie-ipam STATUS: {output}");
    let output = ipam_command(cluster, "GC", None, &config);
    assert!(
        !output.success() && output.stdout.contains("valid-attachments"),
        "tortie-ipam GC without the list must refuse: {output}"
    );
    assert_eq!(ipam_allocations(cluster), 2);
    config["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": pods[0].1, "ifname": "eth0"}]);
    let output = ipam_command(cluster, "GC", None, &config);
    assert!(output.success(), "tortie-ipam GC: {output}");
    assert_eq!(
        ipam_allocations(cluster),
        1,
        "GC frees exactly the stale pod"
    );
    let output = ipam_command(cluster, "CHECK", Some(&pods[0]), &config);
    assert!(output.success(), "the valid pod survives GC: {output}");
    let output = ipam_command(cluster, "CHECK", Some(&pods[1]), &config);
    assert!(
        !output.success() && output.stdout.contains("holds no address"),
        "the stale pod's addresses are gone: {output}"
    );

    for (netns, container, _) in &pods {
        let output = reference(cluster, plugin, netns, container, "DEL");
        assert!(output.success(), "{plugin} DEL: {output}");
    }
    assert_eq!(ipam_allocations(cluster), 0);
}

#[test]
fn install_cni_installs_a_working_plugin_and_conflist_once() {
    let cluster = start_cluster("cni-inst");
    let bin_dir = cluster.scratch.join("opt-cni-bin");
    let conf_dir = cluster.scratch.join("net.d");
    let install = || {
        Exec::new(tortie_tests::tortie_node())
            .args(["install-cni", "--mtu", "1400"])
            .arg("--bin-dir")
            .arg(&bin_dir)
            .arg("--conf-dir")
            .arg(&conf_dir)
            .env("NODENAME", Cluster::node_name(0))
            .env("TORTIE_RUN_DIR", cluster.scratch.join("run-0"))
            .timeout(Duration::from_secs(30))
            .run_here()
    };
    let first = install();
    assert!(first.success(), "{first}");
    assert_eq!(first.stdout.matches("installed").count(), 3, "{first}");
    let second = install();
    assert!(second.success(), "{second}");
    assert_eq!(second.stdout.matches("unchanged").count(), 3, "{second}");

    let conflist: serde_json::Value =
        serde_json::from_slice(&std::fs::read(conf_dir.join("10-tortie.conflist")).unwrap())
            .unwrap();
    assert_eq!(conflist["plugins"][1]["type"], "portmap", "{conflist}");
    // A runtime passes the plugin its entry with the list's name and version.
    let mut entry = conflist["plugins"][0].clone();
    entry["name"] = conflist["name"].clone();
    entry["cniVersion"] = conflist["cniVersion"].clone();
    assert_eq!(entry["nodename"], "node-0", "{entry}");

    let pod = Netns::new("inst-pod");
    let env = [
        ("CNI_CONTAINERID", "ctr-inst"),
        ("CNI_NETNS", &format!("/run/netns/{}", pod.name())),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", &bin_dir.display().to_string()),
    ];
    let run = |command: &str| {
        Exec::new(bin_dir.join("tortie"))
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .env("CNI_COMMAND", command)
            .stdin(entry.to_string().into_bytes())
            .timeout(Duration::from_secs(60))
            .run_in(&cluster.lan.hosts[0])
    };
    let added = run("ADD");
    assert!(added.success(), "the installed plugin's ADD: {added}");
    let link = pod.ip(&["link", "show", "eth0"]).stdout;
    assert!(link.contains("mtu 1400"), "{link}");
    wait_ping(&pod, &cluster.lan.v4(1).to_string());
    let deleted = run("DEL");
    assert!(deleted.success(), "{deleted}");
    assert_eq!(ipam_allocations(&cluster), 0);
}

/// Runs a reference plugin of a chain on node 0 with `config` (its entry plus the list's
/// name, version, and prevResult), as a runtime runs a conflist.
fn chained(
    cluster: &Cluster,
    pod: &Netns,
    plugin: &str,
    command: &str,
    config: &serde_json::Value,
) -> Output {
    Exec::new(format!("/usr/lib/cni/{plugin}"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "ctr-chain")
        .env("CNI_NETNS", format!("/run/netns/{}", pod.name()))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(config.to_string().into_bytes())
        .timeout(Duration::from_secs(60))
        .run_in(&cluster.lan.hosts[0])
}

#[test]
fn tortie_chains_with_the_reference_portmap_and_bandwidth_plugins() {
    let cluster = start_cluster("cni-chain");
    let pod = Pod {
        netns: Netns::new("chain"),
        node: 0,
        name: "chain".into(),
        address: String::new(),
        host_link: String::new(),
    };
    let added = pod.run(&cluster, "ADD", &config(&cluster, 0, "1.0.0"));
    assert!(added.success(), "{added}");
    let mut previous: serde_json::Value = serde_json::from_str(&added.stdout).unwrap();
    let address = previous["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .to_string();
    let host_link = previous["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();

    let entry = |plugin: &str, previous: &serde_json::Value| {
        let mut entry = match plugin {
            "portmap" => serde_json::json!({
                "type": "portmap", "snat": true, "capabilities": {"portMappings": true},
                "runtimeConfig": {"portMappings": [
                    {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
            }),
            _ => serde_json::json!({
                "type": "bandwidth",
                "ingressRate": 100_000_000u64, "ingressBurst": 1_000_000u64,
                "egressRate": 100_000_000u64, "egressBurst": 1_000_000u64,
            }),
        };
        entry["name"] = "k8s-pod-network".into();
        entry["cniVersion"] = "1.0.0".into();
        entry["prevResult"] = previous.clone();
        entry
    };
    for plugin in ["portmap", "bandwidth"] {
        let output = chained(
            &cluster,
            &pod.netns,
            plugin,
            "ADD",
            &entry(plugin, &previous),
        );
        assert!(output.success(), "{plugin} ADD after tortie: {output}");
        previous = serde_json::from_str(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output}"));
    }
    let nat = run_in(&cluster.lan.hosts[0], "iptables", ["-t", "nat", "-S"], &[]).expect_success();
    assert!(
        nat.stdout.contains(&format!("{address}:80")),
        "portmap's DNAT to the pod: {}",
        nat.stdout
    );
    let qdisc = ip(&cluster, 0, &["-d", "link", "show"]);
    let tc = run_in(
        &cluster.lan.hosts[0],
        "tc",
        ["qdisc", "show", "dev", &host_link],
        &[],
    )
    .expect_success();
    assert!(
        tc.stdout.contains("tbf"),
        "bandwidth's qdisc on {host_link}: {}\n{qdisc}",
        tc.stdout
    );
    wait_ping(&pod.netns, &cluster.lan.v4(1).to_string());

    for plugin in ["bandwidth", "portmap"] {
        let output = chained(
            &cluster,
            &pod.netns,
            plugin,
            "DEL",
            &entry(plugin, &previous),
        );
        assert!(output.success(), "{plugin} DEL: {output}");
    }
    let deleted = pod.run(&cluster, "DEL", &config(&cluster, 0, "1.0.0"));
    assert!(deleted.success(), "{deleted}");
    let nat = run_in(&cluster.lan.hosts[0], "iptables", ["-t", "nat", "-S"], &[]).expect_success();
    assert!(!nat.stdout.contains(&address), "{}", nat.stdout);
    assert_eq!(ipam_allocations(&cluster), 0);
}

/// With no `mtu` in the network configuration, the pod gets what its node needs: the host
/// interface's MTU (9000 here, so no default could pass for it) less the encapsulation of
/// the pools the node routes (VXLAN: 50).
#[test]
fn without_a_configured_mtu_the_pod_gets_the_host_mtu_less_encapsulation() {
    let mut cluster = Cluster::new(
        "cni-mtu",
        1,
        &[
            ("TORTIE_IPV4POOL_IPIP", "Never"),
            ("TORTIE_IPV4POOL_VXLAN", "Always"),
        ],
    );
    cluster.lan.hosts[0].ip(&["link", "set", "dev", "eth0", "mtu", "9000"]);
    cluster.start(0);
    let pod = Pod {
        netns: Netns::new("pod-mtu"),
        node: 0,
        name: "mtu".to_string(),
        address: String::new(),
        host_link: String::new(),
    };
    let config = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "tortie",
        "agent_socket": cluster.socket(0),
    })
    .to_string();
    let output = pod.run(&cluster, "ADD", &config);
    assert!(output.success(), "{output}");
    let link = pod.netns.ip(&["link", "show", "eth0"]).stdout;
    assert!(link.contains("mtu 8950"), "9000 − 50 for VXLAN: {link}");
    let output = pod.run(&cluster, "DEL", &config);
    assert!(output.success(), "{output}");
}

/// Dual-stack pods: with an IPv6 pool and `assign_ipv6`, a pod gets a /128 beside its /32,
/// its IPv6 default route through fe80::ecee:eeff:feee:eeee (the host side's link-local,
/// from its fixed MAC), a host route `/128 dev cali…`, and reaches a pod on the other node
/// over IPv6 as over IPv4.
#[test]
fn dual_stack_pods_get_an_ipv6_address_and_reach_each_other_over_it() {
    let mut cluster = Cluster::new(
        "cni-v6",
        2,
        &[
            ("TORTIE_IPV4POOL_IPIP", "Never"),
            ("IP6", "autodetect"),
            ("IP6_AUTODETECTION_METHOD", "interface=eth0"),
            ("TORTIE_IPV6POOL_CIDR", "2001:db8:42::/48"),
        ],
    );
    // One session per family, as Calico's mesh has.
    cluster.start_meshed(2, 2);
    let pods: Vec<(Pod, String)> = (0..2)
        .map(|node| {
            let mut config: serde_json::Value =
                serde_json::from_str(&config(&cluster, node, "1.0.0")).expect("JSON");
            config["assign_ipv6"] = true.into();
            let pod = Pod {
                netns: Netns::new(&format!("pod-v6-{node}")),
                node,
                name: format!("v6-{node}"),
                address: String::new(),
                host_link: String::new(),
            };
            let output = pod.run(&cluster, "ADD", &config.to_string());
            assert!(output.success(), "dual-stack ADD: {output}");
            let result: serde_json::Value =
                serde_json::from_str(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output}"));
            let ips = result["ips"].as_array().expect("ips");
            assert_eq!(ips.len(), 2, "{result}");
            let v6 = ips[1]["address"].as_str().expect("an IPv6 address");
            assert!(
                v6.starts_with("2001:db8:42:") && v6.ends_with("/128"),
                "{result}"
            );
            assert_eq!(result["routes"][1]["dst"], "::/0", "{result}");
            assert_eq!(
                result["routes"][1]["gw"], "fe80::ecee:eeff:feee:eeee",
                "{result}"
            );
            let v6 = v6.trim_end_matches("/128").to_string();
            let pod_routes = pod.netns.ip(&["-6", "route", "show"]).stdout;
            assert!(
                pod_routes.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"),
                "{pod_routes}"
            );
            let host_link = result["interfaces"][0]["name"].as_str().expect("host link");
            let host_routes = ip(
                &cluster,
                node,
                &["-6", "route", "show", &format!("{v6}/128")],
            );
            assert!(
                host_routes.contains(&format!("dev {host_link}")),
                "{host_routes}"
            );
            (pod, v6)
        })
        .collect();
    wait_ping(&pods[0].0.netns, &pods[1].1);
    wait_ping(&pods[1].0.netns, &pods[0].1);
    let output = pods[0].0.run(&cluster, "CHECK", &{
        let mut config: serde_json::Value =
            serde_json::from_str(&config(&cluster, 0, "1.0.0")).expect("JSON");
        config["assign_ipv6"] = true.into();
        config.to_string()
    });
    assert!(output.success(), "CHECK of a dual-stack pod: {output}");
    for (pod, _) in &pods {
        let output = pod.run(&cluster, "DEL", &config(&cluster, pod.node, "1.0.0"));
        assert!(output.success(), "{output}");
    }
    assert_eq!(ipam_allocations(&cluster), 0);
}
