#!/usr/bin/env bash
# Two namespaces joined by a veth pair and an IPIP tunnel over it; pings across the tunnel.
# Run inside the VM tier by the VM self-test: it proves the VM gives tests a kernel with
# working IPIP. Cleans up after itself (the VM is thrown away anyway).
set -euo pipefail
a=vm-ipip-a b=vm-ipip-b
cleanup() { ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$a"
ip netns add "$b"
ip link add eth0 netns "$a" type veth peer name eth0 netns "$b"
ip -n "$a" addr add 198.51.100.1/24 dev eth0
ip -n "$b" addr add 198.51.100.2/24 dev eth0
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up; done
ip -n "$a" link add tun0 type ipip local 198.51.100.1 remote 198.51.100.2
ip -n "$b" link add tun0 type ipip local 198.51.100.2 remote 198.51.100.1
ip -n "$a" addr add 203.0.113.1/32 peer 203.0.113.2/32 dev tun0
ip -n "$b" addr add 203.0.113.2/32 peer 203.0.113.1/32 dev tun0
ip -n "$a" link set tun0 up
ip -n "$b" link set tun0 up
ip -n "$a" -d link show tun0 | grep -q 'ipip'
ip netns exec "$a" ping -c 3 -W 5 -i 0.2 203.0.113.2
echo "ipip tunnel: ok"
