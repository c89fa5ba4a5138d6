//! A LAN of hosts: one namespace per host, all plugged into a bridge in a "switch"
//! namespace, so every host reaches every other on one IPv4 and one IPv6 subnet.

use std::net::IpAddr;

use crate::{Netns, veth};

/// The hosts' IPv4 subnet and IPv6 subnet; host `i` gets `.10 + i` and `::10 + i`.
pub const LAN_V4: &str = "198.51.100";
pub const LAN_V6: &str = "2001:db8:100";

/// Hosts on one switch. Dropping it removes every namespace (and so every link).
pub struct Lan {
    // The hosts drop before the switch; either order removes everything.
    pub hosts: Vec<Netns>,
    pub switch: Netns,
}

impl Lan {
    /// `count` hosts tagged `<tag>0`, `<tag>1`, ..., each with `eth0` carrying its IPv4
    /// (/24) and IPv6 (/64) address, up, with carrier.
    #[track_caller]
    pub fn new(tag: &str, count: usize) -> Lan {
        assert!(count <= 200, "a LAN of {count} hosts does not fit the /24");
        let switch = Netns::new(&format!("{tag}-sw"));
        switch.add_bridge("br0");
        switch.link_up("br0");
        let mut hosts = Vec::with_capacity(count);
        for index in 0..count {
            let host = Netns::new(&format!("{tag}{index}"));
            let port = format!("p{index}");
            veth(&host, "eth0", &switch, &port);
            switch.set_master(&port, "br0");
            switch.link_up(&port);
            // No IPv6 link-local address: BIRD would then send it as a second next hop, and
            // FRR's bgpd, run without zebra here, cannot tell its interface and withdraws
            // such routes. The global addresses are all a LAN of tests needs.
            host.ip(&["link", "set", "dev", "eth0", "addrgenmode", "none"]);
            host.add_address("eth0", &format!("{}/24", Lan::v4_text(index)));
            host.add_address("eth0", &format!("{}/64", Lan::v6_text(index)));
            host.link_up("eth0");
            hosts.push(host);
        }
        for host in &hosts {
            host.wait_carrier("eth0");
        }
        Lan { hosts, switch }
    }

    fn v4_text(index: usize) -> String {
        format!("{LAN_V4}.{}", 10 + index)
    }

    fn v6_text(index: usize) -> String {
        format!("{LAN_V6}::{:x}", 0x10 + index)
    }

    /// Host `index`'s IPv4 address.
    pub fn v4(&self, index: usize) -> IpAddr {
        Lan::v4_text(index).parse().expect("a valid IPv4 address")
    }

    /// Host `index`'s IPv6 address.
    pub fn v6(&self, index: usize) -> IpAddr {
        Lan::v6_text(index).parse().expect("a valid IPv6 address")
    }
}
