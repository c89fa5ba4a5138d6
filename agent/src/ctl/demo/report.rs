//! What `demo up` and `demo status` print: per node its status table and tortie routes,
//! the pods, and the reachability matrix with its one-line verdict.

use super::state::PodState;
use super::topology::KernelRoute;
use crate::ctl::table::Table;

/// A route as `ip route` prints it (without `proto tortie`, which all of them are).
pub fn route_line(route: &KernelRoute) -> String {
    if route.blackhole {
        return format!("blackhole {}", route.destination);
    }
    let mut line = route.destination.clone();
    if let Some(gateway) = &route.gateway {
        line += &format!(" via {gateway}");
    }
    if let Some(device) = &route.device {
        line += &format!(" dev {device}");
    }
    if route.link_scope {
        line += " scope link";
    }
    if route.onlink {
        line += " onlink";
    }
    line
}

pub fn render_routes(routes: &[KernelRoute]) -> String {
    if routes.is_empty() {
        return "  (no tortie routes)\n".to_string();
    }
    routes
        .iter()
        .map(|r| format!("  {}\n", route_line(r)))
        .collect()
}

pub fn render_pods(pods: &[PodState]) -> String {
    let mut table = Table::new(&["POD", "NODE", "ADDRESS", "HOST LINK", "NETNS"]);
    for pod in pods {
        table.row(vec![
            pod.name.clone(),
            pod.node.clone(),
            pod.address.clone(),
            pod.link.clone(),
            pod.netns.clone(),
        ]);
    }
    table.render()
}

/// Rows are sources, columns destinations; `ok` or `--`.
pub fn render_matrix(names: &[String], results: &[Vec<bool>]) -> String {
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0).max(7);
    let mut text = format!("{:width$}", "from\\to");
    for name in names {
        text += &format!("  {name:>width$}");
    }
    text += "\n";
    for (name, row) in names.iter().zip(results) {
        text += &format!("{name:width$}");
        for reached in row {
            text += &format!("  {:>width$}", if *reached { "ok" } else { "--" });
        }
        text += "\n";
    }
    text
}

/// The final line, and whether every pair answered.
pub fn verdict(results: &[Vec<bool>]) -> (String, bool) {
    let pods = results.len();
    let total = pods * pods;
    let failed = results.iter().flatten().filter(|r| !**r).count();
    if failed == 0 {
        (
            format!("all {pods}×{pods} pod pairs reach each other"),
            true,
        )
    } else {
        (format!("{failed} of {total} pairs failed"), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(destination: &str) -> KernelRoute {
        KernelRoute {
            destination: destination.into(),
            gateway: None,
            device: None,
            blackhole: false,
            onlink: false,
            link_scope: false,
        }
    }

    #[test]
    fn routes_read_like_ip_route() {
        let remote = KernelRoute {
            gateway: Some("198.51.100.11".into()),
            device: Some("eth0".into()),
            onlink: true,
            ..route("198.18.1.0/26")
        };
        assert_eq!(
            route_line(&remote),
            "198.18.1.0/26 via 198.51.100.11 dev eth0 onlink"
        );
        let own = KernelRoute {
            blackhole: true,
            ..route("198.18.0.0/26")
        };
        assert_eq!(route_line(&own), "blackhole 198.18.0.0/26");
        let pod = KernelRoute {
            device: Some("cali0123456789a".into()),
            link_scope: true,
            ..route("198.18.0.1/32")
        };
        assert_eq!(
            route_line(&pod),
            "198.18.0.1/32 dev cali0123456789a scope link"
        );
        assert_eq!(render_routes(&[]), "  (no tortie routes)\n");
    }

    #[test]
    fn the_matrix_marks_each_pair_and_the_verdict_counts() {
        let names = vec!["pod-0-0".to_string(), "pod-1-0".to_string()];
        let results = vec![vec![true, true], vec![false, true]];
        assert_eq!(
            render_matrix(&names, &results),
            "from\\to  pod-0-0  pod-1-0\n\
             pod-0-0       ok       ok\n\
             pod-1-0       --       ok\n"
        );
        assert_eq!(
            verdict(&results),
            ("1 of 4 pairs failed".to_string(), false)
        );
        let all = vec![vec![true; 2]; 2];
        assert_eq!(
            verdict(&all),
            ("all 2×2 pod pairs reach each other".to_string(), true)
        );
    }
}
