#!/usr/bin/env bash
# run-in-vm.sh — run one command as root in a throwaway virtual machine that boots
# Debian's stock kernel and sees this host's filesystem, then report its output and exit
# status as if it had run here.
#
# Why: some kernels (CI's among them) lack modules tortie needs to test, `ipip` first of
# all, and cannot load them. Debian's kernel package has them; a small VM boots it in a few
# seconds, even without hardware virtualisation.
#
#   tests/vm/run-in-vm.sh [--] COMMAND [ARG...]   run COMMAND in the VM
#   tests/vm/run-in-vm.sh --check                  say whether a VM can run here, and why not
#
# What the command sees:
#   - the host's root filesystem, read-only underneath a throwaway tmpfs layer: every host
#     file is visible and writable, and every write is gone when the VM stops;
#   - its own kernel (newest /boot/vmlinuz-* whose modules are installed), with
#     TORTIE_VM_MODULES (default: ipip) loaded before it starts;
#   - the caller's working directory and exported environment, plus TORTIE_IN_VM=1;
#   - stdin from /dev/null. Its stdout and stderr are printed here when it ends.
#
# Exit status: the command's own; 124 if TORTIE_VM_TIMEOUT (seconds, default 900) ran
# out; 125 if the VM itself failed (the guest console is printed to stderr then).
#
# Other knobs: TORTIE_VM_MEMORY (MiB, default 2048), TORTIE_VM_CPUS (default: host cores,
# at most 4), TORTIE_VM_ACCEL (auto|kvm|tcg; auto uses KVM only when the CPU advertises
# vmx or svm, since on some hosts /dev/kvm exists but cannot boot a stock kernel),
# TORTIE_VM_CACHE (where the boot files are kept, default /var/tmp/tortie-vm).
#
# Needs root and the Debian packages qemu-system-x86, linux-image-amd64, busybox-static,
# kmod and cpio (scripts/install-test-deps.sh installs them).
set -u

infra_fail() { echo "run-in-vm: $*" >&2; exit 125; }

timeout_s=${TORTIE_VM_TIMEOUT:-900}
memory=${TORTIE_VM_MEMORY:-2048}
cpus=${TORTIE_VM_CPUS:-$(nproc 2>/dev/null || echo 1)}
[ "$cpus" -gt 4 ] && cpus=4
modules=${TORTIE_VM_MODULES-ipip}
cache=${TORTIE_VM_CACHE:-/var/tmp/tortie-vm}
busybox=/bin/busybox

# ------------------------------------------------------------------ can a VM run here?
# Prints nothing and returns 0 when it can; else prints the reason and returns 1.
find_kernel() {
  local image version
  for image in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V -r); do
    version=${image#/boot/vmlinuz-}
    if [ -f "/lib/modules/$version/modules.dep" ]; then
      kernel_image=$image kernel_version=$version
      return 0
    fi
  done
  return 1
}

why_not() {
  [ "$(id -u)" = 0 ] || { echo "not root (the host's / is shared with the VM)"; return 1; }
  command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 is missing (Debian package qemu-system-x86)"; return 1; }
  find_kernel || { echo "no /boot/vmlinuz-* with its modules installed (Debian package linux-image-amd64)"; return 1; }
  [ -x "$busybox" ] && LC_ALL=C ldd "$busybox" 2>&1 | grep -qE 'not a dynamic|statically' \
    || { echo "$busybox is missing or not static (Debian package busybox-static)"; return 1; }
  command -v modprobe >/dev/null || { echo "modprobe is missing (Debian package kmod)"; return 1; }
  command -v cpio >/dev/null || { echo "cpio is missing (Debian package cpio)"; return 1; }
  return 0
}

if [ "${1:-}" = "--check" ]; then
  reason=$(why_not) && find_kernel && { echo "a VM can run here (kernel $kernel_version)"; exit 0; }
  echo "no VM can run here: $reason"
  exit 1
fi
[ "${1:-}" = "--" ] && shift
[ $# -ge 1 ] || infra_fail "usage: $0 [--] COMMAND [ARG...] | --check"
reason=$(why_not) || infra_fail "no VM can run here: $reason"
find_kernel

# ------------------------------------------------------------------ boot files (cached)
# The kernel decompressed to an ELF boots through PVH about twice as fast under emulation
# as the bzImage does. Both files are keyed by the kernel, and the initramfs also by this
# script, so editing the guest's init rebuilds it.
mkdir -p "$cache" || infra_fail "cannot create $cache"
script_hash=$(sha256sum "$0" | cut -c1-16)
kernel_key="$kernel_version-$(stat -c %Y "$kernel_image")"
elf_kernel="$cache/vmlinux-$kernel_key"
initramfs="$cache/initramfs-$kernel_key-$script_hash.cpio"

decompress_kernel() {
  # The bzImage carries the kernel as one compressed stream after its setup code; find the
  # stream by its magic number and keep the first that decompresses to an ELF file.
  local magic tool offset
  grep -q '^CONFIG_PVH=y' "/boot/config-$kernel_version" 2>/dev/null || return 1
  for pair in 'fd377a585a00:xz -dc' '28b52ffd:zstd -dc' '1f8b08:gzip -dc'; do
    magic=${pair%%:*} tool=${pair#*:}
    command -v "${tool%% *}" >/dev/null || continue
    local pattern
    pattern=$(echo "$magic" | sed 's/../\\x&/g')
    for offset in $(LC_ALL=C grep -obUaP "$pattern" "$kernel_image" 2>/dev/null | head -n 4 | cut -d: -f1); do
      tail -c +$((offset + 1)) "$kernel_image" | $tool > "$elf_kernel.part" 2>/dev/null
      if [ "$(head -c 4 "$elf_kernel.part" | od -An -tx1 | tr -d ' \n')" = "7f454c46" ]; then
        mv -f "$elf_kernel.part" "$elf_kernel"
        return 0
      fi
    done
  done
  rm -f "$elf_kernel.part"
  return 1
}

make_initramfs() {
  local root module path name
  root=$(mktemp -d "$cache/initramfs.XXXXXX") || return 1
  mkdir -p "$root"/{bin,modules,proc,sys,dev,host,layer,merged}
  cp "$busybox" "$root/bin/busybox"
  # Just enough to reach the host's filesystem: virtio PCI, 9p over virtio, overlayfs.
  for module in virtio_pci 9pnet_virtio 9p overlay; do
    modprobe -S "$kernel_version" --show-depends "$module" 2>/dev/null \
      || { echo "run-in-vm: cannot resolve module $module of $kernel_version" >&2; rm -rf "$root"; return 1; }
  done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' | while read -r path; do
    name=$(basename "$path"); name=${name%.xz}; name=${name%.zst}; name=${name%.gz}
    case $path in
      *.xz) xz -dc "$path" ;;
      *.zst) zstd -qdc "$path" ;;
      *.gz) gzip -dc "$path" ;;
      *) cat "$path" ;;
    esac > "$root/modules/$name"
    echo "$name" >> "$root/modules/order"
  done
  [ -s "$root/modules/order" ] || { rm -rf "$root"; return 1; }
  cat > "$root/init" <<'GUEST_INIT'
#!/bin/busybox sh
# Stage 1, PID 1 in the initramfs: reach the host's filesystem and switch to it.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
die() { echo "run-in-vm guest: $*"; echo o > /proc/sysrq-trigger; sleep 60; }
while read -r module; do insmod "/modules/$module" || die "insmod $module"; done < /modules/order
share=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$share,ro,cache=loose" host /host || die "mounting the host's root"
mount -t tmpfs -o mode=0755 layer /layer
mkdir -p /layer/upper /layer/work
mount -t overlay merged -o lowerdir=/host,upperdir=/layer/upper,workdir=/layer/work /merged \
  || die "mounting the writable layer"
for fs in proc sys dev; do mount --move "/$fs" "/merged/$fs" || die "moving /$fs"; done
new=/merged
mount -t tmpfs -o mode=0755,nosuid,nodev run "$new/run"
mkdir -p "$new/run/vm" "$new/run/netns" "$new/run/lock" "$new/dev/pts" "$new/dev/shm"
mount -t 9p -o "$share,cache=none" exchange "$new/run/vm" || die "mounting the exchange directory"
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts "$new/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$new/dev/shm"
mount -t cgroup2 cgroup2 "$new/sys/fs/cgroup" 2>/dev/null
mount -t bpf bpf "$new/sys/fs/bpf" 2>/dev/null
ln -sf /proc/self/fd "$new/dev/fd"
exec switch_root "$new" /bin/bash /run/vm/stage2
die "switch_root"
GUEST_INIT
  chmod 0755 "$root/init"
  (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) > "$root.cpio" \
    || { rm -rf "$root" "$root.cpio"; return 1; }
  mv -f "$root.cpio" "$initramfs"
  rm -rf "$root"
}

exec 9> "$cache/lock"
flock 9 || infra_fail "cannot lock $cache"
if [ ! -s "$elf_kernel" ] && [ ! -e "$elf_kernel.unusable" ]; then
  decompress_kernel || : > "$elf_kernel.unusable"
fi
if [ ! -s "$initramfs" ]; then
  make_initramfs || infra_fail "cannot build the initramfs"
  for old in "$cache"/initramfs-*.cpio; do [ "$old" = "$initramfs" ] || rm -f "$old"; done
fi
flock -u 9
exec 9>&-
boot_image=$kernel_image
[ -s "$elf_kernel" ] && boot_image=$elf_kernel

# ------------------------------------------------------------------ this run
run_dir=$(mktemp -d /tmp/tortie-vm-run.XXXXXX) || infra_fail "cannot create a run directory"
qemu_pid=""
finish() {
  if [ -n "$qemu_pid" ]; then
    # qemu_pid is `timeout`, which passes TERM on to qemu.
    kill -TERM "$qemu_pid" 2>/dev/null
    wait "$qemu_pid" 2>/dev/null
  fi
  rm -rf "$run_dir"
}
trap finish EXIT
trap 'echo "run-in-vm: interrupted" >&2; exit 130' INT TERM HUP

# The caller's exported environment, quoted for bash, without what belongs to this shell.
{
  while IFS= read -r -d '' assignment; do
    name=${assignment%%=*}
    case $name in PWD | OLDPWD | SHLVL | _ | TORTIE_VM_* | BASH_FUNC_*) continue ;; esac
    [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    printf 'export %s=%q\n' "$name" "${assignment#*=}"
  done < <(env -0)
  echo 'export TORTIE_IN_VM=1'
} > "$run_dir/environment"
{
  printf 'cd %q || { echo "run-in-vm: %q does not exist in the VM" >&2; exit 125; }\n' "$PWD" "$PWD"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} > "$run_dir/command"
cat > "$run_dir/stage2" <<STAGE2
# Stage 2, PID 1 on the host's filesystem: load the modules asked for, run the command
# with its output in the exchange directory, record its status, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
hostname tortie-vm 2>/dev/null
ip link set lo up
for module in $modules; do
  modprobe "\$module" || echo "run-in-vm: modprobe \$module failed" >> /run/vm/stderr
done
(
  . /run/vm/environment
  . /run/vm/command
) < /dev/null >> /run/vm/stdout 2>> /run/vm/stderr
echo \$? > /run/vm/status
sync
echo o > /proc/sysrq-trigger
sleep 60
STAGE2
: > "$run_dir/stdout"
: > "$run_dir/stderr"

accel=${TORTIE_VM_ACCEL:-auto}
if [ "$accel" = auto ]; then
  if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then accel=kvm; else accel=tcg; fi
fi
case $accel in
  kvm) accel_args=(-accel kvm -cpu host) ;;
  # -cpu max offers RDRAND, so the guest's random pool is ready at once.
  tcg) accel_args=(-accel tcg,thread=multi -cpu max) ;;
  *) infra_fail "TORTIE_VM_ACCEL must be auto, kvm or tcg (not $accel)" ;;
esac

# A quiet, quick boot: no keyboard or mouse probing, no audit, no mitigations or KASLR.
cmdline="console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init random.trust_cpu=on"
cmdline+=" i8042.nokbd i8042.noaux i8042.nopnp audit=0 apparmor=0 mitigations=off nokaslr"

timeout -k 5 "$timeout_s" qemu-system-x86_64 \
  -nodefaults -no-user-config -display none -no-reboot \
  -machine pc "${accel_args[@]}" -smp "$cpus" -m "$memory" \
  -kernel "$boot_image" -initrd "$initramfs" -append "$cmdline" \
  -serial "file:$run_dir/console" \
  -fsdev local,id=host,path=/,security_model=none,readonly=on,multidevs=remap \
  -device virtio-9p-pci,fsdev=host,mount_tag=host \
  -fsdev "local,id=exchange,path=$run_dir,security_model=none" \
  -device virtio-9p-pci,fsdev=exchange,mount_tag=exchange \
  < /dev/null > "$run_dir/qemu" 2>&1 &
qemu_pid=$!
wait "$qemu_pid"
qemu_status=$?
qemu_pid=""

cat "$run_dir/stdout"
cat "$run_dir/stderr" >&2
show_console() {
  {
    echo "----- run-in-vm: qemu said -----"
    cat "$run_dir/qemu"
    echo "----- run-in-vm: guest console (last 40 lines) -----"
    tail -n 40 "$run_dir/console" 2>/dev/null
  } >&2
}
if [ "$qemu_status" = 124 ] || [ "$qemu_status" = 137 ]; then
  echo "run-in-vm: the VM did not finish within ${timeout_s}s" >&2
  show_console
  exit 124
fi
status=$(cat "$run_dir/status" 2>/dev/null)
if [[ $status =~ ^[0-9]+$ ]]; then
  exit "$status"
fi
echo "run-in-vm: the VM stopped (qemu status $qemu_status) without the command's status" >&2
show_console
exit 125
