//! Unit tests of the IPAM operations, on the in-memory store.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ipnet::IpNet;

use crate::ipam::node_hash;
use crate::*;

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn ipam_with(pools: &[(&str, &str)]) -> Ipam<MemoryStore> {
    let ipam = Ipam::new(MemoryStore::new());
    for (name, cidr) in pools {
        ipam.create_pool(IPPool::new(*name, net(cidr))).unwrap();
    }
    ipam
}

fn one(ipam: &Ipam<impl Store>, handle: &str, node: &str) -> IpAddr {
    ipam.auto_assign(&AutoAssignArgs::new(handle, node))
        .unwrap()
        .ipv4[0]
        .address
}

fn assert_clean(ipam: &Ipam<impl Store>) {
    let report = ipam.check().unwrap();
    assert!(
        report.is_clean(),
        "check found problems: {:#?}",
        report.problems
    );
}

#[test]
fn first_assignment_claims_the_block_the_node_name_hashes_to() {
    let ipam = ipam_with(&[("pool", "198.18.0.0/16")]);
    let assigned = ipam
        .auto_assign(&AutoAssignArgs::new("net.c1", "node-a"))
        .unwrap();
    let pool = ipam.pool("pool").unwrap().unwrap();
    let expected = pool.block_at(u128::from(node_hash("node-a")) % pool.block_count());
    assert_eq!(assigned.ipv4[0].block, expected);
    assert_eq!(assigned.ipv4[0].address, expected.network());
    let affinities = ipam.affinities(Some("node-a")).unwrap();
    assert_eq!(affinities.len(), 1);
    assert_eq!(affinities[0].state, AffinityState::Confirmed);
    assert_eq!(ipam.handle("net.c1").unwrap().unwrap().total(), 1);
    assert_clean(&ipam);
}

#[test]
fn a_full_block_leads_to_a_second_claim_and_addresses_never_repeat() {
    let ipam = ipam_with(&[("pool", "198.18.0.0/16")]);
    let mut seen = HashSet::new();
    for pod in 0..100 {
        assert!(seen.insert(one(&ipam, &format!("net.pod{pod}"), "node-a")));
    }
    assert_eq!(ipam.affinities(Some("node-a")).unwrap().len(), 2);
    assert_eq!(ipam.handles().unwrap().len(), 100);
    assert_clean(&ipam);
}

/// Counts the calls that list every block, to show that claims do not.
struct CountingStore {
    inner: MemoryStore,
    full_block_lists: AtomicUsize,
}

impl Store for CountingStore {
    fn get(&self, kind: Kind, name: &str) -> Result<Option<Versioned>, StoreError> {
        self.inner.get(kind, name)
    }
    fn list(&self, kind: Kind, node: Option<&str>) -> Result<Vec<Versioned>, StoreError> {
        if kind == Kind::IPAMBlock && node.is_none() {
            self.full_block_lists.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.list(kind, node)
    }
    fn create(&self, value: Resource) -> Result<Revision, StoreError> {
        self.inner.create(value)
    }
    fn update(&self, value: Resource, revision: &Revision) -> Result<Revision, StoreError> {
        self.inner.update(value, revision)
    }
    fn delete(&self, kind: Kind, name: &str, revision: &Revision) -> Result<(), StoreError> {
        self.inner.delete(kind, name, revision)
    }
}

#[test]
fn claims_never_list_every_block() {
    let ipam = Ipam::new(CountingStore {
        inner: MemoryStore::new(),
        full_block_lists: AtomicUsize::new(0),
    });
    ipam.create_pool(IPPool::new("pool", net("198.18.0.0/16")))
        .unwrap();
    for node in 0..50 {
        for pod in 0..70 {
            ipam.auto_assign(&AutoAssignArgs::new(
                format!("h-{node}-{pod}"),
                format!("node-{node}"),
            ))
            .unwrap();
        }
    }
    assert_eq!(ipam.affinities(None).unwrap().len(), 100);
    assert_eq!(ipam.store().full_block_lists.load(Ordering::SeqCst), 0);
}

#[test]
fn borrows_when_the_node_may_claim_no_more_and_refuses_under_strict_affinity() {
    let ipam = ipam_with(&[("small", "192.0.2.0/25")]);
    ipam.set_config(IPAMConfig {
        max_blocks_per_host: 1,
        ..IPAMConfig::default()
    })
    .unwrap();
    one(&ipam, "b0", "node-b");
    for pod in 0..64 {
        one(&ipam, &format!("a{pod}"), "node-a");
    }
    // node-a's block is full and it may own only one: the next address is borrowed.
    let borrowed = one(&ipam, "a64", "node-a");
    let b_block = ipam.affinities(Some("node-b")).unwrap()[0].cidr;
    assert!(b_block.contains(&borrowed));
    let usage = ipam.utilization().unwrap();
    let b_usage = usage.pools[0]
        .blocks
        .iter()
        .find(|b| b.cidr == b_block)
        .unwrap();
    assert_eq!(b_usage.borrowed.len(), 1);
    assert_eq!(b_usage.borrowed[0].node.as_deref(), Some("node-a"));
    assert_clean(&ipam);

    ipam.set_config(IPAMConfig {
        max_blocks_per_host: 1,
        strict_affinity: true,
        ..IPAMConfig::default()
    })
    .unwrap();
    let error = ipam
        .auto_assign(&AutoAssignArgs::new("a65", "node-a"))
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("pool small (192.0.2.0/25): block limit"),
        "{text}"
    );
    assert!(text.contains("node-a"), "{text}");
}

#[test]
fn no_address_names_every_pool_and_why() {
    let ipam = ipam_with(&[("full", "192.0.2.0/26")]);
    let mut disabled = IPPool::new("off", net("198.51.100.0/24"));
    disabled.disabled = true;
    ipam.create_pool(disabled).unwrap();
    let mut selective = IPPool::new("gpu", net("203.0.113.0/24"));
    selective.node_selector = "gpu == 'true'".to_string();
    ipam.create_pool(selective).unwrap();
    let mut tunnels = IPPool::new("tunnels", net("198.18.0.0/24"));
    tunnels.allowed_uses = vec![AllowedUse::Tunnel];
    ipam.create_pool(tunnels).unwrap();
    let args = AutoAssignArgs {
        num4: 65,
        ..AutoAssignArgs::new("h", "node-a")
    };
    let error = ipam.auto_assign(&args).unwrap_err();
    let text = error.to_string();
    for expected in [
        "wanted 65, found 64",
        "pool full (192.0.2.0/26): full",
        "pool off (198.51.100.0/24): disabled",
        "pool gpu (203.0.113.0/24): nodeSelector \"gpu == 'true'\" does not match",
        "pool tunnels (198.18.0.0/24): allowedUses does not include Workload",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in {text}");
    }
    // All or nothing: the 64 it did find were given back.
    assert_eq!(
        ipam.utilization()
            .unwrap()
            .pools
            .iter()
            .map(|p| p.in_use)
            .sum::<u128>(),
        0
    );
    assert!(ipam.handle("h").unwrap().is_none());
    assert_clean(&ipam);

    let empty = Ipam::new(MemoryStore::new());
    let text = empty
        .auto_assign(&AutoAssignArgs::new("h", "n"))
        .unwrap_err()
        .to_string();
    assert!(text.contains("no IPv4 pool exists"), "{text}");
}

#[test]
fn node_labels_select_pools() {
    let ipam = Ipam::new(MemoryStore::new());
    let mut gpu = IPPool::new("gpu", net("203.0.113.0/24"));
    gpu.node_selector = "gpu == 'true'".to_string();
    ipam.create_pool(gpu).unwrap();
    let args = AutoAssignArgs {
        node_labels: BTreeMap::from([("gpu".to_string(), "true".to_string())]),
        ..AutoAssignArgs::new("h", "node-a")
    };
    assert!(net("203.0.113.0/24").contains(&ipam.auto_assign(&args).unwrap().ipv4[0].address));
}

#[test]
fn dual_stack_and_ipv6_blocks() {
    let ipam = ipam_with(&[("v4", "198.51.100.0/24"), ("v6", "2001:db8:0:1::/112")]);
    let args = AutoAssignArgs {
        num4: 1,
        num6: 2,
        ..AutoAssignArgs::new("pod", "node-a")
    };
    let assigned = ipam.auto_assign(&args).unwrap();
    assert_eq!(assigned.ipv4.len(), 1);
    assert_eq!(assigned.ipv6.len(), 2);
    assert_eq!(assigned.ipv6[0].block.prefix_len(), 122);
    assert_eq!(ipam.release_handle("pod").unwrap().len(), 3);
    assert_clean(&ipam);

    // IPv6 wanted, none exists: the IPv4 part is rolled back.
    let only_v4 = ipam_with(&[("v4", "198.51.100.0/24")]);
    let args = AutoAssignArgs {
        num4: 1,
        num6: 1,
        ..AutoAssignArgs::new("pod", "node-a")
    };
    assert!(
        only_v4
            .auto_assign(&args)
            .unwrap_err()
            .to_string()
            .contains("no IPv6 pool exists")
    );
    assert!(only_v4.handle("pod").unwrap().is_none());
}

#[test]
fn specific_addresses() {
    let ipam = ipam_with(&[("pool", "198.51.100.0/24")]);
    let args = AssignIpArgs {
        address: ip("198.51.100.77"),
        handle_id: "h1".into(),
        node: "node-a".into(),
        attributes: BTreeMap::new(),
    };
    let allocation = ipam.assign_ip(&args).unwrap();
    assert_eq!(allocation.block, net("198.51.100.64/26"));
    assert_eq!(
        ipam.affinities(Some("node-a")).unwrap()[0].cidr,
        net("198.51.100.64/26")
    );
    let again = AssignIpArgs {
        handle_id: "h2".into(),
        ..args.clone()
    };
    let error = ipam.assign_ip(&again).unwrap_err();
    assert!(
        matches!(&error, IpamError::AddressInUse { holder: Some(h), .. } if h == "h1"),
        "{error}"
    );
    assert!(
        ipam.handle("h2").unwrap().is_none(),
        "a refused assign must leave no handle"
    );
    let outside = AssignIpArgs {
        address: ip("192.0.2.1"),
        ..args.clone()
    };
    assert!(matches!(
        ipam.assign_ip(&outside),
        Err(IpamError::NotInAnyPool { .. })
    ));
    // The next automatic assignment on node-a uses the claimed block, around .77.
    let next = one(&ipam, "h3", "node-a");
    assert_eq!(next, ip("198.51.100.64"));
    assert_clean(&ipam);
}

#[test]
fn releases_by_address_check_the_sequence_number() {
    let ipam = ipam_with(&[("pool", "192.0.2.0/26")]);
    let first = ipam
        .auto_assign(&AutoAssignArgs::new("pod-1", "node-a"))
        .unwrap()
        .ipv4[0]
        .clone();
    ipam.release_address(first.address, Some("pod-1"), Some(first.sequence))
        .unwrap();
    assert!(ipam.handle("pod-1").unwrap().is_none());
    // Reuse the address (fill the block so it comes round again).
    let args = AutoAssignArgs {
        num4: 64,
        ..AutoAssignArgs::new("pod-2", "node-a")
    };
    ipam.auto_assign(&args).unwrap();
    let error = ipam
        .release_address(first.address, None, Some(first.sequence))
        .unwrap_err();
    assert!(matches!(error, IpamError::StaleRelease { .. }), "{error}");
    assert!(ipam.address_info(first.address).unwrap().allocated);
    assert_eq!(
        ipam.address_info(first.address)
            .unwrap()
            .handle_id
            .as_deref(),
        Some("pod-2")
    );
    assert_clean(&ipam);

    let never = ipam_with(&[("pool", "192.0.2.0/26")]);
    let error = never
        .release_address(ip("192.0.2.9"), None, None)
        .unwrap_err();
    assert!(
        error.to_string().contains("192.0.2.9 is not allocated"),
        "{error}"
    );
}

#[test]
fn release_by_handle_is_idempotent_and_empty_blocks_go_back() {
    let ipam = ipam_with(&[("pool", "198.18.0.0/16")]);
    let args = AutoAssignArgs {
        num4: 70,
        ..AutoAssignArgs::new("big", "node-a")
    };
    ipam.auto_assign(&args).unwrap();
    one(&ipam, "small", "node-a");
    assert_eq!(ipam.affinities(Some("node-a")).unwrap().len(), 2);
    assert_eq!(ipam.release_handle("big").unwrap().len(), 70);
    assert!(ipam.release_handle("big").unwrap().is_empty());
    assert!(ipam.release_handle("never-existed").unwrap().is_empty());
    // One block is now empty, the other still holds "small".
    let released = ipam.release_empty_blocks("node-a").unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(ipam.blocks().unwrap().len(), 1);
    assert_eq!(ipam.affinities(None).unwrap().len(), 1);
    assert_clean(&ipam);
}

#[test]
fn tunnel_addresses_are_idempotent_and_need_the_encapsulation() {
    let ipam = ipam_with(&[("plain", "192.0.2.0/24")]);
    let labels = BTreeMap::new();
    let error = ipam
        .assign_tunnel_address("node-a", &labels, TunnelType::Ipip)
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("pool plain (192.0.2.0/24): ipipMode is Never"),
        "{error}"
    );
    let mut ipip = IPPool::new("ipip", net("198.51.100.0/24"));
    ipip.ipip_mode = EncapsulationMode::Always;
    ipam.create_pool(ipip).unwrap();
    let address = ipam
        .assign_tunnel_address("node-a", &labels, TunnelType::Ipip)
        .unwrap();
    assert_eq!(
        ipam.assign_tunnel_address("node-a", &labels, TunnelType::Ipip)
            .unwrap(),
        address
    );
    let info = ipam.address_info(address).unwrap();
    assert_eq!(info.handle_id.as_deref(), Some("ipip-tunnel-addr-node-a"));
    assert_eq!(
        info.attributes.get("type").map(String::as_str),
        Some("ipipTunnelAddress")
    );
    assert!(
        ipam.assign_tunnel_address("node-a", &labels, TunnelType::Vxlan)
            .is_err()
    );
}

#[test]
fn reservations_are_skipped_by_automatic_assignment() {
    let ipam = ipam_with(&[("pool", "192.0.2.0/26")]);
    ipam.set_reservation(IPReservation {
        name: "gw".into(),
        reserved_cidrs: vec![net("192.0.2.0/30")],
    })
    .unwrap();
    let args = AutoAssignArgs {
        num4: 60,
        ..AutoAssignArgs::new("h", "node-a")
    };
    let got = ipam.auto_assign(&args).unwrap();
    assert!(
        got.ipv4
            .iter()
            .all(|a| !net("192.0.2.0/30").contains(&a.address))
    );
    assert!(
        ipam.auto_assign(&AutoAssignArgs::new("h2", "node-a"))
            .is_err()
    );
    // Explicitly, a reserved address can be had.
    let explicit = AssignIpArgs {
        address: ip("192.0.2.1"),
        handle_id: "gw".into(),
        node: "node-a".into(),
        attributes: BTreeMap::new(),
    };
    ipam.assign_ip(&explicit).unwrap();
}

#[test]
fn pools_are_validated() {
    let ipam = ipam_with(&[("pool", "198.18.0.0/16")]);
    let text = |result: Result<(), IpamError>| result.unwrap_err().to_string();
    assert!(
        text(ipam.create_pool(IPPool::new("b", net("198.18.128.0/17"))))
            .contains("overlaps pool pool")
    );
    assert!(text(ipam.create_pool(IPPool::new("b", net("198.0.0.0/8")))).contains("overlaps"));
    let mut bad = IPPool::new("c", net("203.0.113.0/24"));
    bad.block_size = 19;
    assert!(
        text(ipam.create_pool(bad.clone()))
            .contains("blockSize: 19 is out of range for IPv4 pools (20–32)")
    );
    bad.block_size = 33;
    assert!(text(ipam.create_pool(bad)).contains("out of range"));
    let mut v6 = IPPool::new("d", net("2001:db8::/64"));
    v6.block_size = 115;
    assert!(text(ipam.create_pool(v6)).contains("116–128"));
    let mut wide = IPPool::new("e", net("203.0.113.0/24"));
    wide.block_size = 20;
    assert!(text(ipam.create_pool(wide)).contains("do not fit"));
    assert!(
        parse_pool_cidr("x", "198.18.0.1/15")
            .unwrap_err()
            .to_string()
            .contains("did you mean 198.18.0.0/15")
    );
    assert!(
        parse_pool_cidr("x", "198.18.0/15")
            .unwrap_err()
            .to_string()
            .contains("is not a CIDR")
    );
    assert!(
        text(ipam.create_pool(IPPool::new("pool", net("203.0.113.0/24"))))
            .contains("already exists")
    );
    assert_eq!(
        ipam.pools().unwrap().len(),
        1,
        "refused pools must not be stored"
    );

    one(&ipam, "h", "node-a");
    assert!(text(ipam.delete_pool("pool")).contains("still has 1 addresses in use"));
    ipam.release_handle("h").unwrap();
    ipam.delete_pool("pool").unwrap();
    assert!(ipam.blocks().unwrap().is_empty() && ipam.affinities(None).unwrap().is_empty());
    assert!(matches!(
        ipam.delete_pool("pool"),
        Err(IpamError::PoolNotFound { .. })
    ));
}

#[test]
fn check_names_each_kind_of_problem() {
    let ipam = ipam_with(&[("pool", "198.51.100.0/24")]);
    let held = one(&ipam, "h", "node-a");
    let store = ipam.store();
    // Handle gone: an allocation without handle.
    let handle = store.get(Kind::IPAMHandle, "h").unwrap().unwrap();
    store
        .delete(Kind::IPAMHandle, "h", &handle.revision)
        .unwrap();
    // A handle counting an address nobody holds.
    store
        .create(Resource::IPAMHandle(IPAMHandle {
            handle_id: "ghost".into(),
            block: HandleBlocks::from([("198-51-100-0-26".to_string(), 2)]),
            deleted: false,
            timestamp: 0,
        }))
        .unwrap();
    // A pending claim that never created its block.
    store
        .create(Resource::BlockAffinity(BlockAffinity {
            node: "node-b".into(),
            cidr: net("198.51.100.128/26"),
            state: AffinityState::Pending,
            timestamp: 0,
        }))
        .unwrap();
    // A block with an owner but no affinity, overlapping another block, outside every pool.
    let mut rogue = IPAMBlock::new(net("192.0.2.0/26"), Some("node-c"), false);
    let attribute = Arc::new(AllocationAttribute {
        handle_id: Some("r".into()),
        secondary: crate::secondary::Secondary::new(),
    });
    rogue.assign(1, &attribute, &|_| false);
    store.create(Resource::IPAMBlock(rogue.clone())).unwrap();
    let mut inner = IPAMBlock::new(net("192.0.2.0/28"), None, false);
    inner.assign(1, &attribute, &|_| false);
    store.create(Resource::IPAMBlock(inner)).unwrap();

    let report = ipam.check().unwrap();
    let kinds: Vec<String> = report
        .problems
        .iter()
        .map(|p| {
            serde_json::to_value(p).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for expected in [
        "allocationWithoutHandle",
        "handleWithoutAllocation",
        "affinityWithoutBlock",
        "blockWithoutConfirmedAffinity",
        "allocationOutsidePools",
        "overlappingBlocks",
        "addressHeldTwice",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "missing {expected} in {kinds:?}"
        );
    }
    assert!(report.problems.iter().any(|p| matches!(p,
        Problem::AllocationWithoutHandle { allocations, .. }
            if allocations.iter().map(|a| a.address).collect::<Vec<_>>() == vec![held])));

    // Acting on the report: the handle-less address is released, the ghost handle
    // recounted away; claims and rogue blocks are left (with the reason) for GC.
    let outcome = ipam.release_from_report(&report).unwrap();
    assert!(outcome.released.contains(&held), "{outcome:?}");
    assert!(
        outcome.repaired_handles.contains(&"ghost".to_string()),
        "{outcome:?}"
    );
    assert!(!outcome.skipped.is_empty());
    assert!(ipam.handle("ghost").unwrap().is_none());
    // A second run finds the address already free and says so instead of failing.
    let again = ipam.release_from_report(&report).unwrap();
    assert!(again.released.is_empty());
    assert!(
        again.skipped.iter().any(|s| s.contains("not allocated")),
        "{again:?}"
    );
}

#[test]
fn gc_releases_leaked_handles_and_finishes_half_done_work() {
    let ipam = ipam_with(&[("pool", "198.51.100.0/24")]);
    let specific = |address: &str, handle: &str| {
        let args = AssignIpArgs {
            address: ip(address),
            handle_id: handle.into(),
            node: "node-a".into(),
            attributes: BTreeMap::new(),
        };
        ipam.assign_ip(&args).unwrap().address
    };
    let live = specific("198.51.100.1", "live");
    let leaked = specific("198.51.100.2", "leaked");
    let store = ipam.store();
    store
        .create(Resource::BlockAffinity(BlockAffinity {
            node: "node-b".into(),
            cidr: net("198.51.100.128/26"),
            state: AffinityState::Pending,
            timestamp: 0,
        }))
        .unwrap();
    // node-c crashed after creating its block, before confirming.
    store
        .create(Resource::BlockAffinity(BlockAffinity {
            node: "node-c".into(),
            cidr: net("198.51.100.192/26"),
            state: AffinityState::Pending,
            timestamp: 0,
        }))
        .unwrap();
    store
        .create(Resource::IPAMBlock(IPAMBlock::new(
            net("198.51.100.192/26"),
            Some("node-c"),
            false,
        )))
        .unwrap();
    let live_set: HashSet<String> = HashSet::from(["live".to_string()]);

    // Within the grace period, nothing that might be in flight is touched; the claims,
    // stamped long ago, are finished.
    let report = ipam.gc(&live_set, Duration::from_secs(3600)).unwrap();
    assert!(report.released_handles.is_empty(), "{report:?}");
    assert!(ipam.address_info(leaked).unwrap().allocated);
    assert_eq!(
        report.deleted_affinities,
        vec!["198-51-100-128-26.node-b".to_string()],
        "{report:?}"
    );
    assert_eq!(
        report.confirmed_affinities,
        vec!["198-51-100-192-26.node-c".to_string()],
        "{report:?}"
    );

    let report = ipam.gc(&live_set, Duration::ZERO).unwrap();
    assert_eq!(report.released_handles.get("leaked"), Some(&vec![leaked]));
    assert!(ipam.address_info(live).unwrap().allocated);
    assert!(!ipam.address_info(leaked).unwrap().allocated);
    assert_clean(&ipam);
    // And a second run has nothing to do.
    let again = ipam.gc(&live_set, Duration::ZERO).unwrap();
    assert_eq!(again, GcReport::default());
}

/// The memory store with only the five compare-and-swap calls, so `apply` takes the trait's
/// default (read, then compare-and-swap, retried on conflict): the path an etcd or
/// Kubernetes backend takes.
struct CompareAndSwapOnly(MemoryStore);

impl Store for CompareAndSwapOnly {
    fn get(&self, kind: Kind, name: &str) -> Result<Option<Versioned>, StoreError> {
        self.0.get(kind, name)
    }
    fn list(&self, kind: Kind, node: Option<&str>) -> Result<Vec<Versioned>, StoreError> {
        self.0.list(kind, node)
    }
    fn create(&self, value: Resource) -> Result<Revision, StoreError> {
        self.0.create(value)
    }
    fn update(&self, value: Resource, revision: &Revision) -> Result<Revision, StoreError> {
        self.0.update(value, revision)
    }
    fn delete(&self, kind: Kind, name: &str, revision: &Revision) -> Result<(), StoreError> {
        self.0.delete(kind, name, revision)
    }
}

#[test]
fn concurrent_threads_never_share_an_address() {
    concurrent_assignments(Ipam::new(MemoryStore::new()));
}

#[test]
fn concurrent_threads_never_share_an_address_with_compare_and_swap_alone() {
    concurrent_assignments(Ipam::new(CompareAndSwapOnly(MemoryStore::new())));
}

fn concurrent_assignments<S: Store + 'static>(ipam: Ipam<S>) {
    ipam.create_pool(IPPool::new("pool", net("198.18.0.0/16")))
        .unwrap();
    let ipam = Arc::new(ipam);
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let ipam = Arc::clone(&ipam);
            std::thread::spawn(move || {
                (0..150)
                    .map(|pod| {
                        // Two threads per node, so they fight over the same blocks.
                        let node = format!("node-{}", thread % 2);
                        one(ipam.as_ref(), &format!("t{thread}-{pod}"), &node)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = HashSet::new();
    for thread in threads {
        for address in thread.join().unwrap() {
            assert!(all.insert(address), "{address} handed out twice");
        }
    }
    assert_eq!(all.len(), 600);
    assert_clean(ipam.as_ref());
}

/// A store whose every update is overtaken by another writer, to show that IPAM's retries
/// are bounded. (A stand-in only for the contention, inside a unit test of the retry loop.)
struct AlwaysOvertaken(MemoryStore);

impl Store for AlwaysOvertaken {
    fn get(&self, kind: Kind, name: &str) -> Result<Option<Versioned>, StoreError> {
        self.0.get(kind, name)
    }
    fn list(&self, kind: Kind, node: Option<&str>) -> Result<Vec<Versioned>, StoreError> {
        self.0.list(kind, node)
    }
    fn create(&self, value: Resource) -> Result<Revision, StoreError> {
        self.0.create(value)
    }
    fn update(&self, value: Resource, revision: &Revision) -> Result<Revision, StoreError> {
        Err(StoreError::Conflict {
            kind: value.kind(),
            name: value.name(),
            expected: revision.clone(),
        })
    }
    fn delete(&self, kind: Kind, name: &str, revision: &Revision) -> Result<(), StoreError> {
        self.0.delete(kind, name, revision)
    }
}

#[test]
fn conflicts_are_retried_a_bounded_number_of_times() {
    let ipam = Ipam::new(AlwaysOvertaken(MemoryStore::new())).with_max_attempts(5);
    ipam.create_pool(IPPool::new("pool", net("192.0.2.0/24")))
        .unwrap();
    let error = ipam
        .auto_assign(&AutoAssignArgs::new("h", "node-a"))
        .unwrap_err();
    assert!(
        matches!(error, IpamError::TooManyConflicts { attempts: 5, .. }),
        "{error}"
    );
}

#[test]
fn bad_arguments_are_refused() {
    let ipam = ipam_with(&[("pool", "192.0.2.0/24")]);
    assert!(
        ipam.auto_assign(&AutoAssignArgs::new("", "node-a"))
            .is_err()
    );
    assert!(ipam.auto_assign(&AutoAssignArgs::new("h", "")).is_err());
    let args = AutoAssignArgs {
        pools: vec!["nope".into()],
        ..AutoAssignArgs::new("h", "n")
    };
    assert!(matches!(
        ipam.auto_assign(&args),
        Err(IpamError::PoolNotFound { .. })
    ));
    assert!(ipam.blocks().unwrap().is_empty());
}

#[test]
fn huge_ipv6_pools_claim_without_overflow() {
    let ipam = ipam_with(&[("v6", "2001:db8::/32")]);
    let pool = ipam.pool("v6").unwrap().unwrap();
    assert_eq!(pool.block_count(), 1u128 << 90);
    let mut seen = HashSet::new();
    for node in 0..20 {
        let args = AutoAssignArgs {
            num4: 0,
            num6: 1,
            ..AutoAssignArgs::new(format!("h{node}"), format!("node-{node}"))
        };
        let address = ipam.auto_assign(&args).unwrap().ipv6[0].address;
        assert!(net("2001:db8::/32").contains(&address));
        assert!(seen.insert(address));
    }
    assert_eq!(ipam.affinities(None).unwrap().len(), 20);
    assert_clean(&ipam);
}

/// The memory store, with a hook that runs just before a block is deleted: there another
/// process would allocate from the block after `release_empty_blocks` saw it empty.
struct AllocateBeforeBlockDelete {
    inner: Arc<MemoryStore>,
    fired: AtomicUsize,
}

impl Store for AllocateBeforeBlockDelete {
    fn get(&self, kind: Kind, name: &str) -> Result<Option<Versioned>, StoreError> {
        self.inner.get(kind, name)
    }
    fn list(&self, kind: Kind, node: Option<&str>) -> Result<Vec<Versioned>, StoreError> {
        self.inner.list(kind, node)
    }
    fn create(&self, value: Resource) -> Result<Revision, StoreError> {
        self.inner.create(value)
    }
    fn update(&self, value: Resource, revision: &Revision) -> Result<Revision, StoreError> {
        self.inner.update(value, revision)
    }
    fn delete(&self, kind: Kind, name: &str, revision: &Revision) -> Result<(), StoreError> {
        if kind == Kind::IPAMBlock && self.fired.fetch_add(1, Ordering::SeqCst) == 0 {
            let racer = Ipam::new(Arc::clone(&self.inner));
            let args = AssignIpArgs {
                address: ip("192.0.2.5"),
                handle_id: "late-pod".into(),
                node: "node-a".into(),
                attributes: BTreeMap::new(),
            };
            racer
                .assign_ip(&args)
                .map_err(|error| StoreError::Backend {
                    location: "test".into(),
                    what: "racing assignment".into(),
                    source: error.to_string().into(),
                })?;
        }
        self.inner.delete(kind, name, revision)
    }
    fn apply(
        &self,
        kind: Kind,
        name: &str,
        step: &mut crate::store::Step<'_>,
    ) -> Result<(), StoreError> {
        self.inner.apply(kind, name, step)
    }
}

#[test]
fn an_allocation_racing_a_block_release_keeps_the_block() {
    let inner = Arc::new(MemoryStore::new());
    let ipam = Ipam::new(AllocateBeforeBlockDelete {
        inner: Arc::clone(&inner),
        fired: AtomicUsize::new(0),
    });
    ipam.create_pool(IPPool::new("pool", net("192.0.2.0/26")))
        .unwrap();
    one(&ipam, "first", "node-a");
    ipam.release_handle("first").unwrap();
    // The block looks empty, but an address is taken between the look and the delete.
    let released = ipam.release_empty_blocks("node-a").unwrap();
    assert!(
        released.is_empty(),
        "a block holding an address was released: {released:?}"
    );
    assert_eq!(ipam.blocks().unwrap().len(), 1);
    assert!(ipam.address_info(ip("192.0.2.5")).unwrap().allocated);
    let affinities = ipam.affinities(Some("node-a")).unwrap();
    assert_eq!(affinities[0].state, AffinityState::Confirmed);
    assert_clean(&ipam);
}
