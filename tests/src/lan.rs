//! A LAN of hosts: one namespace per host, all plugged into a bridge in a "switch"
//! namespace, so every host reaches every other on one IPv4 and one IPv6 subnet. Or two such
//! subnets joined by a router namespace ([`Lan::routed`]), for what differs across subnets
//! (CrossSubnet encapsulation).

use std::net::IpAddr;

use crate::{Netns, veth};

/// The hosts' IPv4 subnet and IPv6 subnet; host `i` gets `.10 + i` and `::10 + i`.
pub const LAN_V4: &str = "198.51.100";
pub const LAN_V6: &str = "2001:db8:100";
/// The second subnet of a routed LAN; its router is `.1` on both.
pub const SECOND_V4: &str = "203.0.113";
pub const SECOND_V6: &str = "2001:db8:113";

/// Hosts on one switch (or two, with a router). Dropping it removes every namespace (and so
/// every link).
pub struct Lan {
    // The hosts drop before the switches; either order removes everything.
    pub hosts: Vec<Netns>,
    pub switch: Netns,
    /// A routed LAN's second switch and its router; `None` on a flat LAN.
    pub second: Option<(Netns, Netns)>,
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
}

impl Lan {
    /// `count` hosts tagged `<tag>0`, `<tag>1`, ..., each with `eth0` carrying its IPv4
    /// (/24) and IPv6 (/64) address, up, with carrier.
    #[track_caller]
    pub fn new(tag: &str, count: usize) -> Lan {
        assert!(count <= 200, "a LAN of {count} hosts does not fit the /24");
        let switch = Lan::switch(&format!("{tag}-sw"));
        let mut lan = Lan {
            hosts: Vec::with_capacity(count),
            switch,
            second: None,
            v4: Vec::new(),
            v6: Vec::new(),
        };
        for index in 0..count {
            lan.plug(tag, (LAN_V4, LAN_V6), 10 + index);
        }
        lan.wait_carrier();
        lan
    }

    /// Two subnets joined by a router: `first` hosts on 198.51.100.0/24 (host `i` at
    /// `.10 + i`), then `second` hosts on 203.0.113.0/24 (host `first + j` at `.10 + j`),
    /// every host with a default route through its subnet's router at `.1`. The router
    /// namespace `<tag>-rt` forwards between its legs `eth0` and `eth1`.
    #[track_caller]
    pub fn routed(tag: &str, first: usize, second: usize) -> Lan {
        assert!(
            first.max(second) <= 200,
            "a subnet of that many hosts does not fit the /24"
        );
        let mut lan = Lan {
            hosts: Vec::with_capacity(first + second),
            switch: Lan::switch(&format!("{tag}-sw")),
            second: Some((
                Lan::switch(&format!("{tag}-sw2")),
                Netns::new(&format!("{tag}-rt")),
            )),
            v4: Vec::new(),
            v6: Vec::new(),
        };
        let (second_switch, router) = lan.second.as_ref().expect("just made");
        for (leg, (switch, (v4, v6))) in [
            (&lan.switch, (LAN_V4, LAN_V6)),
            (second_switch, (SECOND_V4, SECOND_V6)),
        ]
        .into_iter()
        .enumerate()
        {
            let link = format!("eth{leg}");
            let port = format!("r{leg}");
            veth(router, &link, switch, &port);
            switch.set_master(&port, "br0");
            switch.link_up(&port);
            router.add_address(&link, &format!("{v4}.1/24"));
            router.add_address(&link, &format!("{v6}::1/64"));
            router.link_up(&link);
        }
        router.ip(&["link", "set", "dev", "lo", "up"]);
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            crate::run_in(router, "sysctl", ["-qw", key], &[]).expect_success();
        }
        for index in 0..first + second {
            let subnet = if index < first {
                (LAN_V4, LAN_V6)
            } else {
                (SECOND_V4, SECOND_V6)
            };
            let host_number = 10 + if index < first { index } else { index - first };
            let host = lan.plug(tag, subnet, host_number);
            host.ip(&["route", "add", "default", "via", &format!("{}.1", subnet.0)]);
            host.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("{}::1", subnet.1),
            ]);
        }
        lan.wait_carrier();
        lan
    }

    fn switch(name: &str) -> Netns {
        let switch = Netns::new(name);
        switch.add_bridge("br0");
        switch.link_up("br0");
        switch
    }

    /// Adds the next host on the switch of `subnet` (the second switch for 203.0.113.0/24)
    /// with address number `host_number` in it; returns it.
    fn plug(&mut self, tag: &str, subnet: (&str, &str), host_number: usize) -> &Netns {
        let index = self.hosts.len();
        let switch = match &self.second {
            Some((second, _)) if subnet.0 == SECOND_V4 => second,
            _ => &self.switch,
        };
        let host = Netns::new(&format!("{tag}{index}"));
        let port = format!("p{index}");
        veth(&host, "eth0", switch, &port);
        switch.set_master(&port, "br0");
        switch.link_up(&port);
        // No IPv6 link-local address: BIRD would then send it as a second next hop, and
        // FRR's bgpd, run without zebra here, cannot tell its interface and withdraws
        // such routes. The global addresses are all a LAN of tests needs.
        host.ip(&["link", "set", "dev", "eth0", "addrgenmode", "none"]);
        let v4 = format!("{}.{host_number}", subnet.0);
        let v6 = format!("{}::{host_number:x}", subnet.1);
        host.add_address("eth0", &format!("{v4}/24"));
        host.add_address("eth0", &format!("{v6}/64"));
        host.link_up("eth0");
        self.v4.push(v4.parse().expect("a valid IPv4 address"));
        self.v6.push(v6.parse().expect("a valid IPv6 address"));
        self.hosts.push(host);
        &self.hosts[index]
    }

    fn wait_carrier(&self) {
        for host in &self.hosts {
            host.wait_carrier("eth0");
        }
        if let Some((_, router)) = &self.second {
            router.wait_carrier("eth0");
            router.wait_carrier("eth1");
        }
    }

    /// Host `index`'s IPv4 address.
    pub fn v4(&self, index: usize) -> IpAddr {
        self.v4[index]
    }

    /// Host `index`'s IPv6 address.
    pub fn v6(&self, index: usize) -> IpAddr {
        self.v6[index]
    }
}
