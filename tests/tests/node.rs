//! `tortie-node run` on a LAN of network namespaces sharing one SQLite datastore: the mesh
//! comes up, every node routes every other node's blocks (plainly, or through VXLAN), a
//! joining node is learned, a restart leaves no gap in the routes, a stopped node's routes
//! go after its graceful-restart time, and a bad variable changes nothing.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tortie_tests::cluster::CLUSTER_WAIT;
use tortie_tests::{Cluster, Exec, ScratchDir, run_in, tortie_node, wait_until};

/// The route node `index` should have to `block` of node `owner` in a plain (Never) pool.
fn plain_route(cluster: &Cluster, block: &str, owner: usize) -> String {
    format!("{block} via {} dev eth0", cluster.lan.v4(owner))
}

fn has_route(routes: &[String], prefix: &str) -> bool {
    routes.iter().any(|r| r.starts_with(prefix))
}

/// Waits until node `index`'s kernel has every route in `wanted` (line prefixes).
#[track_caller]
fn wait_routes(cluster: &Cluster, index: usize, wanted: &[String]) {
    wait_until(
        CLUSTER_WAIT,
        &format!("node {index} has routes {wanted:?}"),
        || {
            let routes = cluster.routes(index);
            if wanted.iter().all(|w| has_route(&routes, w)) {
                Ok(())
            } else {
                Err(format!("{routes:?}"))
            }
        },
    );
}

/// `tortie-node health <probe>` against node `index`'s agent.
fn health(cluster: &Cluster, index: usize, probe: &str) -> tortie_tests::Output {
    run_in(
        &cluster.lan.hosts[index],
        tortie_node(),
        ["health", probe],
        &[("TORTIE_SOCKET", &cluster.socket(index))],
    )
}

fn apply(cluster: &Cluster, yaml: &str) {
    let file = cluster.scratch.write("apply.yaml", yaml);
    let output = cluster.tortiectl(0, &["apply", "-f", &file.display().to_string()]);
    assert!(output.success(), "{output}");
}

#[test]
fn a_plain_mesh_routes_blocks_learns_joiners_and_survives_restarts() {
    let mut cluster = Cluster::new("mesh", 4, &[("TORTIE_IPV4POOL_IPIP", "Never")]);
    // A short graceful-restart time, so a stopped node's routes go within the test.
    apply(
        &cluster,
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: true\n  nodeMeshMaxRestartTime: 15s\n",
    );
    cluster.start_meshed(3, 2);
    let blocks: Vec<String> = (0..3)
        .map(|i| {
            let blocks = cluster.blocks(i);
            assert_eq!(
                blocks.len(),
                1,
                "node {i} claims one block at start: {blocks:?}"
            );
            blocks[0].clone()
        })
        .collect();
    for index in 0..3 {
        let mut wanted = vec![format!("blackhole {}", blocks[index])];
        for owner in (0..3).filter(|&o| o != index) {
            wanted.push(plain_route(&cluster, &blocks[owner], owner));
        }
        wait_routes(&cluster, index, &wanted);
    }

    let names = std::fs::read_to_string(cluster.scratch.join("rt_protos.d/tortie.conf"))
        .expect("the agent names protocol 75 for iproute2");
    assert!(
        names
            .lines()
            .any(|l| l.split_whitespace().eq(["75", "tortie"])),
        "{names}"
    );

    // What an operator sees.
    let text = cluster.tortiectl(0, &["node", "status"]);
    assert!(text.success(), "{text}");
    for expected in [
        "tortie-node is running.",
        "IPv4 BGP status",
        "| PEER ADDRESS  |     PEER TYPE     | STATE |  SINCE   |    INFO     |",
        &format!("| {} | node-to-node mesh | up    |", cluster.lan.v4(1)),
        &format!("| {} | node-to-node mesh | up    |", cluster.lan.v4(2)),
        "IPv6 BGP status\nNo IPv6 peers found.",
    ] {
        assert!(
            text.stdout.contains(expected),
            "{expected:?} in:\n{}",
            text.stdout
        );
    }
    let ready = health(&cluster, 0, "--ready");
    assert!(ready.success(), "{ready}");
    let metrics = http_get(&cluster, 0, "/metrics");
    assert!(
        metrics.contains("tortie_bgp_peers{state=\"Established\"} 2"),
        "{metrics}"
    );
    assert!(http_get(&cluster, 0, "/readiness").starts_with("HTTP/1.1 200"));

    // A fourth node joins: everyone peers with it and learns its block.
    cluster.start(3);
    for index in 0..4 {
        cluster.wait_established(index, 3);
    }
    let block3 = cluster.blocks(3)[0].clone();
    for index in 0..3 {
        wait_routes(&cluster, index, &[plain_route(&cluster, &block3, 3)]);
    }

    // Node 0 restarts while its routes, and node 1's route to it, are watched without
    // pause: not one may go missing, not even for one look.
    let watched = |cluster: &Cluster, index: usize| -> Vec<String> {
        (0..4)
            .filter(|&owner| owner != index)
            .map(|owner| {
                if owner == 3 {
                    plain_route(cluster, &block3, 3)
                } else {
                    plain_route(cluster, &blocks[owner], owner)
                }
            })
            .chain(std::iter::once(if index == 0 {
                format!("blackhole {}", blocks[0])
            } else {
                plain_route(cluster, &blocks[0], 0)
            }))
            .collect()
    };
    let watched = [(0, watched(&cluster, 0)), (1, watched(&cluster, 1))];
    let gaps = watch_routes(&mut cluster, &watched, |cluster| {
        let stopped = cluster.stop(0);
        assert!(
            stopped.stderr.contains("kernel routes stay"),
            "node 0 stopped on SIGTERM: {stopped}"
        );
        cluster.start(0);
        cluster.wait_established(0, 3);
        // Until node 0 has seen every peer's End-of-RIB and swept: let it finish.
        wait_until(CLUSTER_WAIT, "node 0 finishes its restart", || {
            let log = cluster.log(0);
            if log.contains("restart complete") {
                Ok(())
            } else {
                Err(log)
            }
        });
    });
    assert!(
        gaps.is_empty(),
        "routes went missing during the restart: {gaps:#?}"
    );

    // Node 3 stops for good: its route stays for the graceful-restart time, then goes.
    cluster.stop(3);
    assert!(
        has_route(&cluster.routes(1), &plain_route(&cluster, &block3, 3)),
        "kept while node 3 may be restarting"
    );
    for index in 0..3 {
        wait_until(
            CLUSTER_WAIT,
            &format!("node {index} drops node 3's route after the restart time"),
            || {
                let routes = cluster.routes(index);
                if has_route(&routes, &block3) {
                    Err(format!("{routes:?}"))
                } else {
                    Ok(())
                }
            },
        );
    }
}

/// Runs `during` while a thread reads the routes of the given nodes over and over; returns
/// every observation where an expected route was missing.
fn watch_routes(
    cluster: &mut Cluster,
    watched: &[(usize, Vec<String>)],
    during: impl FnOnce(&mut Cluster),
) -> Vec<String> {
    let stop = Arc::new(AtomicBool::new(false));
    let gaps = Arc::new(Mutex::new(Vec::new()));
    let looks = Arc::new(Mutex::new(0usize));
    let names: Vec<(String, Vec<String>)> = watched
        .iter()
        .map(|(index, wanted)| (cluster.lan.hosts[*index].name().to_string(), wanted.clone()))
        .collect();
    let watcher = {
        let (stop, gaps, looks) = (Arc::clone(&stop), Arc::clone(&gaps), Arc::clone(&looks));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (netns, wanted) in &names {
                    let output = Exec::new("ip")
                        .args(["-n", netns, "route", "show", "proto", "75"])
                        .timeout(Duration::from_secs(30))
                        .run_here();
                    let routes: Vec<String> = output
                        .stdout
                        .lines()
                        .map(|l| l.trim().to_string())
                        .collect();
                    for route in wanted {
                        if !has_route(&routes, route) {
                            gaps.lock()
                                .unwrap()
                                .push(format!("{netns}: {route} missing from {routes:?}"));
                        }
                    }
                    *looks.lock().unwrap() += 1;
                }
            }
        })
    };
    // The watcher reads the namespaces by name only, so the cluster is free to change.
    during(cluster);
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("the route watcher panicked");
    let looks = *looks.lock().unwrap();
    assert!(looks > 10, "the watcher looked only {looks} times");
    println!("route watcher: {looks} looks");
    Arc::try_unwrap(gaps).unwrap().into_inner().unwrap()
}

/// A GET on node `index`'s health endpoint (127.0.0.1:9099 in its namespace).
fn http_get(cluster: &Cluster, index: usize, path: &str) -> String {
    let path = path.to_string();
    cluster.lan.hosts[index]
        .spawn_thread(move || {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", 9099))
                .unwrap_or_else(|e| panic!("health endpoint: {e}"));
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        })
        .join()
        .expect("the HTTP client thread panicked")
}

#[test]
fn vxlan_nodes_route_blocks_through_vxlan_tortie() {
    let mut cluster = Cluster::new(
        "vxlan",
        3,
        &[
            ("TORTIE_IPV4POOL_IPIP", "Never"),
            ("TORTIE_IPV4POOL_VXLAN", "Always"),
        ],
    );
    cluster.start_meshed(3, 2);
    let nodes: Vec<serde_json::Value> = {
        let output = cluster.tortiectl(0, &["get", "nodes", "-o", "json"]);
        assert!(output.success(), "{output}");
        let value: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
        match value {
            serde_json::Value::Array(items) => items,
            other => other["items"].as_array().cloned().unwrap_or_default(),
        }
    };
    let tunnel = |index: usize| -> String {
        let name = Cluster::node_name(index);
        let node = nodes
            .iter()
            .find(|n| n["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not in {nodes:?}"));
        node["spec"]["ipv4VXLANTunnelAddr"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no VXLAN tunnel address: {node}"))
            .to_string()
    };
    for index in 0..3 {
        let mut wanted = Vec::new();
        for owner in (0..3).filter(|&o| o != index) {
            let block = cluster.blocks(owner)[0].clone();
            wanted.push(format!(
                "{block} via {} dev vxlan.tortie onlink",
                tunnel(owner)
            ));
        }
        wait_routes(&cluster, index, &wanted);
        let link = run_in(
            &cluster.lan.hosts[index],
            "ip",
            ["-d", "link", "show", "vxlan.tortie"],
            &[],
        )
        .expect_success();
        assert!(link.stdout.contains("vxlan id 4096"), "{link}");
        assert!(link.stdout.contains("dstport 4789"), "{link}");
        assert!(link.stdout.contains("mtu 1450"), "{link}");
    }
    // Real packets through the tunnel: node 0's tunnel address to node 2's.
    let ping = run_in(
        &cluster.lan.hosts[0],
        "ping",
        [
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "5",
            "-I",
            &tunnel(0),
            &tunnel(2),
        ],
        &[],
    );
    assert!(ping.success(), "ping over vxlan.tortie: {ping}");
}

#[test]
fn a_bad_variable_stops_the_agent_before_it_creates_anything() {
    let scratch = ScratchDir::new("badenv");
    let lan = tortie_tests::Lan::new("badenv", 1);
    let datastore = scratch.join("sub/tortie.db");
    let run_dir = scratch.join("run");
    for (variable, value) in [
        ("TORTIE_IPV4POOL_IPIP", "always"),
        ("TORTIE_IPV4POOL_CIDR", "10.244.0.1/16"),
        ("AS", "sixty-four"),
        ("IP_AUTODETECTION_METHOD", "interfaces=eth0"),
        ("DATASTORE_TYPE", "mysql"),
    ] {
        let output = run_in(
            &lan.hosts[0],
            tortie_node(),
            ["run"],
            &[
                ("NODENAME", "node-0"),
                ("TORTIE_DATASTORE", &datastore.display().to_string()),
                ("TORTIE_RUN_DIR", &run_dir.display().to_string()),
                (variable, value),
            ],
        );
        assert_eq!(output.code(), Some(2), "{variable}={value}: {output}");
        assert!(
            output.stderr.contains(value),
            "{variable}={value}: {output}"
        );
        assert!(
            !datastore.exists() && !run_dir.exists(),
            "{variable}={value} created files"
        );
    }
    let routes =
        run_in(&lan.hosts[0], "ip", ["route", "show", "proto", "75"], &[]).expect_success();
    assert_eq!(routes.stdout, "", "no route was added");
}

#[test]
fn node_status_says_when_the_agent_is_not_running() {
    let scratch = ScratchDir::new("nostatus");
    let socket = scratch.join("agent.sock").display().to_string();
    let output = Exec::new(tortie_tests::binary("tortiectl"))
        .args(["node", "status", "--socket", &socket])
        .run_here();
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output
            .stderr
            .contains("tortie-node is not running on this node"),
        "{output}"
    );
    assert!(output.stderr.contains(&socket), "{output}");
}

#[test]
fn without_ipip_in_the_kernel_an_ipip_pool_is_reported_not_retried_silently() {
    if tortie_tests::vm::host_has_ipip() {
        println!("skipped: this host's kernel has ipip, so there is no missing module to report");
        return;
    }
    // The default pool: IPIP Always.
    let mut cluster = Cluster::new("noipip", 1, &[]);
    cluster.start(0);
    let fix = "modprobe ipip";
    let text = cluster.tortiectl(0, &["node", "status"]);
    assert!(text.success(), "{text}");
    assert!(
        text.stdout.contains(fix),
        "node status names the fix: {}",
        text.stdout
    );
    assert!(
        text.stdout.contains("VXLAN"),
        "and the alternative: {}",
        text.stdout
    );
    let ready = health(&cluster, 0, "--ready");
    assert_eq!(ready.code(), Some(1), "{ready}");
    assert!(ready.stdout.contains(fix), "{ready}");
    let live = health(&cluster, 0, "--live");
    assert!(live.success(), "{live}");
    assert!(
        cluster.log(0).contains(fix),
        "the log says so: {}",
        cluster.log(0)
    );
}

/// A top-of-rack router (BIRD 2) as a global BGPPeer: every node peers with it, it learns
/// every node's block with the node as next hop, and what it announces reaches every
/// node's kernel.
#[test]
fn a_global_bgppeer_router_learns_every_block_and_teaches_its_routes() {
    use tortie_tests::peers::{Announcement, BgpDaemon, Bird, Neighbor, PeerConfig};

    let router = 3;
    let mut cluster = Cluster::new("tor", 4, &[("TORTIE_IPV4POOL_IPIP", "Never")]);
    let router_address = cluster.lan.v4(router);
    apply(
        &cluster,
        &format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: {router_address}\n  asNumber: 65000\n"
        ),
    );
    let std::net::IpAddr::V4(router_id) = router_address else {
        unreachable!("the LAN's first address is IPv4")
    };
    let mut config = PeerConfig::new(router_id, 65000, router_address)
        .originate(Announcement::new("203.0.113.0/24"));
    for index in 0..3 {
        config = config.neighbor(Neighbor::new(cluster.lan.v4(index), 64512).passive());
    }
    let bird = Bird::start(&cluster.lan.hosts[router], &config);
    for index in 0..3 {
        cluster.start(index);
    }
    for index in 0..3 {
        let status = cluster.wait_established(index, 3);
        let router_row = status["peers"]
            .as_array()
            .and_then(|peers| {
                peers
                    .iter()
                    .find(|p| p["address"] == router_address.to_string().as_str())
                    .cloned()
            })
            .unwrap_or_else(|| panic!("node {index} peers with the router: {status}"));
        assert_eq!(router_row["peerType"], "global", "{router_row}");
    }
    let blocks: Vec<(String, std::net::IpAddr)> = (0..3)
        .map(|i| (cluster.blocks(i)[0].clone(), cluster.lan.v4(i)))
        .collect();
    wait_until(
        CLUSTER_WAIT,
        "BIRD learns every block from its node",
        || {
            let routes = bird.routes();
            let missing: Vec<&(String, std::net::IpAddr)> = blocks
                .iter()
                .filter(|(block, node)| {
                    !routes
                        .iter()
                        .any(|r| r.prefix.to_string() == *block && r.next_hop == Some(*node))
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {missing:?} in {routes:?}"))
            }
        },
    );
    for index in 0..3 {
        wait_routes(
            &cluster,
            index,
            &[format!("203.0.113.0/24 via {router_address} dev eth0")],
        );
    }
}

/// Route reflection: two reflector nodes, four clients, the mesh off. Clients peer only
/// with the reflectors, and every node still routes every other node's block.
#[test]
fn route_reflectors_replace_the_mesh() {
    let mut cluster = Cluster::new("rr", 6, &[("TORTIE_IPV4POOL_IPIP", "Never")]);
    let mut documents = String::from(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: to-reflectors\nspec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n",
    );
    // Nodes 0 and 1 are reflectors, declared before their agents start (as an operator
    // labels nodes); the agents keep the labels and cluster id when they register.
    for index in 0..2 {
        documents += &format!(
            "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {}\n  labels:\n    route-reflector: 'true'\nspec:\n  bgp:\n    routeReflectorClusterID: 192.0.2.1\n",
            Cluster::node_name(index)
        );
    }
    apply(&cluster, &documents);
    for index in 0..6 {
        cluster.start(index);
    }
    // A reflector peers with the other reflector and the four clients; a client with the
    // two reflectors only.
    for index in 0..6 {
        let status = cluster.wait_established(index, if index < 2 { 5 } else { 2 });
        let labels: Vec<String> = status["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["peerType"].as_str().expect("a peer type").to_string())
            .collect();
        assert!(
            labels.iter().all(|l| l != "node-to-node mesh"),
            "node {index}: no mesh sessions: {labels:?}"
        );
    }
    let blocks: Vec<String> = (0..6).map(|i| cluster.blocks(i)[0].clone()).collect();
    for index in 0..6 {
        let wanted: Vec<String> = (0..6)
            .filter(|&owner| owner != index)
            .map(|owner| plain_route(&cluster, &blocks[owner], owner))
            .collect();
        wait_routes(&cluster, index, &wanted);
    }
}

#[test]
fn a_second_node_with_the_same_address_is_refused_by_name() {
    let mut cluster = Cluster::new("dupaddr", 2, &[("TORTIE_IPV4POOL_IPIP", "Never")]);
    cluster.start(0);
    let taken = format!("{}/24", cluster.lan.v4(0));
    let mut env = cluster.agent_env(1);
    env.push(("IP".to_string(), taken.clone()));
    let output = Exec::new(tortie_node())
        .arg("run")
        .envs(env)
        .timeout(CLUSTER_WAIT)
        .run_in(&cluster.lan.hosts[1]);
    assert_eq!(output.code(), Some(1), "{output}");
    assert!(
        output.stderr.contains("node-0") && output.stderr.contains(&cluster.lan.v4(0).to_string()),
        "the error names the other node and the address: {output}"
    );
    let nodes = cluster.tortiectl(0, &["get", "nodes", "-o", "json"]);
    assert!(
        !nodes.stdout.contains("node-1"),
        "node-1 was not registered: {nodes}"
    );
}
