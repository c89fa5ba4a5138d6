//! `tortiectl node status`: what `calicoctl node status` shows a Calico user, read from the
//! node agent's local API rather than from BIRD's socket.

use std::net::IpAddr;

use crate::api::NodeStatus;
use crate::ctl::table::Table;

/// The status as text: the process line, then one BGP table per family.
pub fn render_status(status: &NodeStatus, now: u64) -> String {
    let mut text = String::from("tortie-node is running.\n");
    if let Some(problem) = &status.ipip.problem {
        text += &format!("\nWARNING: {problem}\n");
    }
    if !status.ready {
        text += &format!("\nNot ready: {}\n", status.not_ready.join("; "));
    }
    for (family, is_family) in [
        ("IPv4", IpAddr::is_ipv4 as fn(&IpAddr) -> bool),
        ("IPv6", IpAddr::is_ipv6),
    ] {
        text += &format!("\n{family} BGP status\n");
        let mut table = Table::new(&["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"]);
        for peer in status.peers.iter().filter(|p| is_family(&p.address)) {
            let established = peer.state == "Established";
            let info = match (established, peer.info.is_empty()) {
                (true, _) | (false, true) => peer.state.clone(),
                (false, false) => format!("{}: {}", peer.state, peer.info),
            };
            table.row(vec![
                peer.address.to_string(),
                peer.peer_type.clone(),
                if established { "up" } else { "start" }.to_string(),
                since(peer.since, now),
                info,
            ]);
        }
        if table.is_empty() {
            text += &format!("No {family} peers found.\n");
        } else {
            text += &table.render();
        }
    }
    text
}

/// A time of day (UTC) within the last day, else the date, as BIRD shows `since`.
fn since(at: u64, now: u64) -> String {
    let days = at / 86_400;
    let seconds = at % 86_400;
    if now.saturating_sub(at) < 86_400 {
        format!(
            "{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        )
    } else {
        let (year, month, day) = civil_date(days as i64);
        format!("{year:04}-{month:02}-{day:02}")
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use tortie_bgp::daemon::PeerRow;

    use super::*;
    use crate::api::IpipStatus;

    fn status(peers: Vec<PeerRow>) -> NodeStatus {
        NodeStatus {
            node: "node-1".into(),
            version: "0".into(),
            started: 0,
            ipv4_address: Some("198.51.100.10/24".into()),
            ipv6_address: None,
            asn: 64512,
            ready: true,
            not_ready: vec![],
            ipip: IpipStatus {
                required: false,
                available: false,
                problem: None,
            },
            peers,
            blocks: vec![],
            routes_programmed: 0,
            addresses_in_use: 0,
            reconcile_errors: 0,
            dataplane_error: None,
            datastore_error: None,
        }
    }

    fn peer(address: &str, state: &str, info: &str) -> PeerRow {
        PeerRow {
            address: address.parse().unwrap(),
            asn: 64512,
            peer_type: "node-to-node mesh".into(),
            state: state.into(),
            since: 1_700_000_000,
            info: info.into(),
            received: 0,
            accepted: 0,
            advertised: 0,
        }
    }

    #[test]
    fn renders_like_calicoctl_node_status() {
        let text = render_status(
            &status(vec![
                peer("198.51.100.11", "Established", ""),
                peer("198.51.100.12", "Active", "Connection refused"),
            ]),
            1_700_000_100,
        );
        let expected = [
            "tortie-node is running.",
            "",
            "IPv4 BGP status",
            "+---------------+-------------------+-------+----------+----------------------------+",
            "| PEER ADDRESS  |     PEER TYPE     | STATE |  SINCE   |            INFO            |",
            "+---------------+-------------------+-------+----------+----------------------------+",
            "| 198.51.100.11 | node-to-node mesh | up    | 22:13:20 | Established                |",
            "| 198.51.100.12 | node-to-node mesh | start | 22:13:20 | Active: Connection refused |",
            "+---------------+-------------------+-------+----------+----------------------------+",
            "",
            "IPv6 BGP status",
            "No IPv6 peers found.",
            "",
        ]
        .join("\n");
        assert_eq!(text, expected);
    }

    #[test]
    fn no_peers_says_so_per_family() {
        let text = render_status(&status(vec![]), 0);
        assert!(text.contains("No IPv4 peers found.\n"), "{text}");
        assert!(text.contains("No IPv6 peers found.\n"), "{text}");
    }

    #[test]
    fn older_than_a_day_shows_the_date() {
        assert_eq!(since(1_700_000_000, 1_800_000_000), "2023-11-14");
    }
}
