//! The only addresses tests may configure: networks reserved for documentation (RFC 5737,
//! RFC 3849) and for benchmarking (RFC 2544). Nothing on a real network uses them, so a
//! test that misroutes a packet cannot reach anyone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The networks tests may use, as `(address, prefix length)`.
pub const TEST_NETWORKS: &[(IpAddr, u8)] = &[
    // RFC 5737: TEST-NET-1, TEST-NET-2, TEST-NET-3.
    (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)), 24),
    (IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 24),
    (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)), 24),
    // RFC 2544: benchmarking, large enough for pod pools.
    (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)), 15),
    // RFC 3849: IPv6 documentation.
    (
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0)),
        32,
    ),
];

/// Whether `address` lies inside one of [`TEST_NETWORKS`].
pub fn is_test_address(address: IpAddr) -> bool {
    TEST_NETWORKS
        .iter()
        .any(|&(network, prefix_len)| contains(network, prefix_len, address))
}

fn contains(network: IpAddr, prefix_len: u8, address: IpAddr) -> bool {
    match (network, address) {
        (IpAddr::V4(network), IpAddr::V4(address)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            u32::from(network) & mask == u32::from(address) & mask
        }
        (IpAddr::V6(network), IpAddr::V6(address)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            u128::from(network) & mask == u128::from(address) & mask
        }
        _ => false,
    }
}

/// Parses `address/prefix_len` (or a bare address) and panics unless it is a test address:
/// the guard every address-configuring helper goes through.
pub(crate) fn check_test_cidr(cidr: &str) -> IpAddr {
    let address_text = cidr.split_once('/').map_or(cidr, |(address, _)| address);
    let address: IpAddr = address_text
        .parse()
        .unwrap_or_else(|_| panic!("{cidr:?} is not an address or address/prefix_len"));
    assert!(
        is_test_address(address),
        "{cidr} is outside the networks tests may use (192.0.2.0/24, 198.51.100.0/24, \
         203.0.113.0/24, 198.18.0.0/15, 2001:db8::/32)"
    );
    address
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documentation_and_benchmark_networks_are_test_addresses() {
        for address in [
            "192.0.2.1",
            "198.51.100.255",
            "203.0.113.100",
            "198.18.0.1",
            "198.19.255.254",
            "2001:db8::1",
            "2001:db8:ffff::1",
        ] {
            assert!(is_test_address(address.parse().unwrap()), "{address}");
        }
    }

    #[test]
    fn everything_else_is_not() {
        for address in [
            "192.0.3.1",
            "198.20.0.1",
            "10.0.0.1",
            "8.8.8.8",
            "127.0.0.1",
            "2001:db9::1",
            "fe80::1",
        ] {
            assert!(!is_test_address(address.parse().unwrap()), "{address}");
        }
    }

    #[test]
    #[should_panic(expected = "outside the networks tests may use")]
    fn configuring_a_real_address_panics() {
        check_test_cidr("10.1.2.3/24");
    }
}
