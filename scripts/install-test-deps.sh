#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, and nothing when they are all present
# (so a machine that has them needs no network). Run as root.
set -euo pipefail

packages=(
  iproute2      # ip netns / ip link: the integration tests build their namespaces with it
  iputils-ping  # reachability checks inside the namespaces
  bird2         # BGP peers the speaker is tested against (BIRD 2, FRR's bgpd, GoBGP):
  frr           # the harness runs its own instances in the foreground inside test
  gobgpd        # namespaces, whatever the packages' system services do
  qemu-system-x86    # the VM tier (tests/vm/run-in-vm.sh): Debian's stock kernel, booted
  linux-image-amd64  # under qemu, has the ipip module that CI's kernel lacks; busybox,
  busybox-static     # kmod and cpio build the VM's initramfs
  kmod
  cpio
  containernetworking-plugins  # the reference CNI plugins (bridge, macvlan, portmap, ...) in
                               # /usr/lib/cni, chained with tortie and used with tortie-ipam
  tcpdump       # the end-to-end tests capture on a node's interface (encapsulated or not)
  iperf3        # full-size TCP transfers between pods; the throughput bench
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "test dependencies: all present (${packages[*]})"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "test dependencies missing (${missing[*]}) and not root: run as root to install them" >&2
  exit 1
fi

echo "test dependencies: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# One apt at a time on a shared machine: other jobs may be installing too.
flock /tmp/apt.lock apt-get update -qq
flock /tmp/apt.lock apt-get install -y -qq --no-install-recommends "${missing[@]}"
