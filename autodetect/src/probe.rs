//! The system side of [`Environment`]: the kernel's route lookup and name resolution.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};

use crate::select::Environment;

/// Asks the real system. Kubernetes is asked by the caller (who owns the API client) before
/// detection starts, and its answer handed in here.
pub struct SystemEnvironment {
    node_internal_ips: Result<(String, Vec<IpAddr>), String>,
}

impl SystemEnvironment {
    /// `node_internal_ips`: the Node's InternalIPs with where they came from, or why they
    /// could not be had (used only by `kubernetes-internal-ip`).
    pub fn new(node_internal_ips: Result<(String, Vec<IpAddr>), String>) -> Self {
        Self { node_internal_ips }
    }
}

impl Environment for SystemEnvironment {
    /// Connecting a UDP socket makes the kernel pick a route and a source address without
    /// sending anything; the port is arbitrary (80, as Calico uses).
    fn route_source(&self, destination: IpAddr) -> io::Result<IpAddr> {
        let unspecified: IpAddr = match destination {
            IpAddr::V4(_) => IpAddr::from([0u8; 4]),
            IpAddr::V6(_) => IpAddr::from([0u16; 8]),
        };
        let socket = UdpSocket::bind(SocketAddr::new(unspecified, 0))?;
        socket.connect(SocketAddr::new(destination, 80))?;
        Ok(socket.local_addr()?.ip())
    }

    fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        Ok((host, 80).to_socket_addrs()?.map(|a| a.ip()).collect())
    }

    fn node_internal_ips(&self) -> Result<(String, Vec<IpAddr>), String> {
        self.node_internal_ips.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_reached_from_loopback() {
        // Every network namespace has lo up with 127.0.0.1 once it is set up; the test
        // process runs where cargo runs, which has it.
        let environment = SystemEnvironment::new(Err("unused".into()));
        let source = environment
            .route_source("127.0.0.1".parse().unwrap())
            .expect("route lookup toward 127.0.0.1");
        assert!(source.is_loopback(), "{source}");
    }

    #[test]
    fn literal_addresses_resolve_to_themselves() {
        let environment = SystemEnvironment::new(Err("unused".into()));
        assert_eq!(
            environment.resolve("198.51.100.7").unwrap(),
            ["198.51.100.7".parse::<IpAddr>().unwrap()]
        );
    }
}
