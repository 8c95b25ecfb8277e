#!/bin/sh
# Runs a command in a guest (qemu) that boots Debian's kernel (which has device-mapper and
# dm-log-writes as modules) with this machine's / as its read-only root (9p), for the
# tests a kernel without device-mapper cannot run here (PowerLossTests).
#
#   scripts/powerloss-vm.sh                 # the power-loss tests of the built test binary
#   scripts/powerloss-vm.sh 'dmsetup targets'   # any shell command, run as root in the guest
#
# Build the tests first (`swift build --build-tests`). In the guest /tmp, /run, /var/tmp
# and /root are tmpfs (what is written there is gone with the guest), the rest of the
# file system is the host's, read-only; the command runs in the repository with
# OVLTOOL_REQUIRE_KERNEL=1. Its output goes to standard output, and this script exits
# with the command's status (3 when the guest never said).
# Needs root and the Debian packages below (installed when missing, as root).
# VM_MEMORY (MiB, default 4096), VM_CPUS (default 2), VM_TIMEOUT (seconds, default 1800),
# VM_KERNEL (a version in /lib/modules, default the newest 6.5 or later in /boot),
# VM_SHARE (a host directory the guest mounts read-write at /mnt, e.g. for
# OVLTOOL_POWERLOSS_KEEP=/mnt/keep), VM_ACCEL (default TCG: `-accel tcg,thread=multi`;
# `-enable-kvm` where KVM boots this kernel: nested under this machine's kernel the guest
# hangs in the kernel's decompressor), VM_CPU (default max; with KVM here
# `host,-arch-capabilities`, as qemu cannot set that MSR).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
need=""
command -v qemu-system-x86_64 >/dev/null || need="$need qemu-system-x86"
command -v dmsetup >/dev/null || need="$need dmsetup"
# A static busybox (the dynamic one's libraries are not in the initramfs).
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need="$need busybox-static"
command -v modprobe >/dev/null || need="$need kmod"
# A kernel of 6.5 or later (ovltool reads filesystem uuids with FS_IOC_GETFSUUID):
# Debian 12's is 6.1, its linux-image-6.12-amd64 has 6.12.
recent() { ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | awk -F. '$1 > 6 || ($1 == 6 && $2 + 0 >= 5)' | sort -V | tail -1; }
[ -n "$(recent)" ] || need="$need ${VM_KERNEL_PACKAGE:-linux-image-6.12-amd64}"
if [ -n "$need" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing:$need" >&2
    apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends $need >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends $need >/dev/null; }
  else
    echo "missing packages:$need — run: sudo apt-get install$need" >&2; exit 2
  fi
fi

kernel=${VM_KERNEL:-$(recent)}
[ -f "/boot/vmlinuz-$kernel" ] && [ -d "/lib/modules/$kernel" ] || { echo "powerloss-vm: no kernel $kernel" >&2; exit 2; }

if [ $# -gt 0 ]; then
  cmd="$*"
else
  cmd='bin=$(ls -d .build/debug/*PackageTests.xctest | head -1)
"$bin" --testing-library swift-testing --filter PowerLossTests'
fi

work=$(mktemp -d /tmp/powerloss-vm-XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$work/initramfs/bin" "$work/initramfs/proc" "$work/initramfs/sys" "$work/initramfs/dev" "$work/initramfs/root" "$work/initramfs/modules"
cp /bin/busybox "$work/initramfs/bin/busybox"

# The modules the guest needs to mount its 9p root, in load order; everything else it
# loads with modprobe from the host's /lib/modules once the root is mounted.
: > "$work/initramfs/modules.order"
for m in virtio_pci 9pnet_virtio 9p; do
  modprobe -S "$kernel" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r ko; do
  name=$(basename "$ko")
  case "$ko" in
    *.xz) xz -dc "$ko" > "$work/initramfs/modules/${name%.xz}"; name=${name%.xz} ;;
    *.zst) zstd -qdc "$ko" > "$work/initramfs/modules/${name%.zst}"; name=${name%.zst} ;;
    *) cp "$ko" "$work/initramfs/modules/$name" ;;
  esac
  echo "/modules/$name" >> "$work/initramfs/modules.order"
done

{
  echo "cd '$repo'"
  echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp OVLTOOL_REQUIRE_KERNEL=1"
  echo "for m in loop dm-mod dm-log-writes ext4 xfs overlay; do modprobe \$m || echo \"powerloss-vm: modprobe \$m failed\"; done"
  printf '%s\n' "$cmd"
} > "$work/initramfs/cmd"

cat > "$work/initramfs/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Foundation's CFSocket wakes its run loop through a UDP socket pair on 127.0.0.1: without
# lo up, Process never sees its child exit.
ip link set lo up
while read -r m; do insmod "$m" || echo "powerloss-vm: insmod $m failed"; done < /modules.order
if mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose root /root; then
  for d in tmp run var/tmp root; do mount -t tmpfs -o mode=1777 tmpfs "/root/$d"; done
  mount -t proc proc /root/proc
  mount -t sysfs sys /root/sys
  mount -t devtmpfs dev /root/dev
  mkdir -p /root/dev/pts /root/dev/shm
  mount -t devpts devpts /root/dev/pts
  mount -t tmpfs tmpfs /root/dev/shm
  [ ! -e /share.on ] || mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 share /root/mnt || echo "powerloss-vm: cannot mount the share"
  cp /cmd /root/tmp/powerloss-vm-cmd
  chroot /root /bin/sh /tmp/powerloss-vm-cmd
  echo "POWERLOSS-VM-EXIT=$?"
else
  echo "powerloss-vm: cannot mount the 9p root"
fi
sync
poweroff -f
EOF
chmod +x "$work/initramfs/init"
share=""
if [ -n "${VM_SHARE:-}" ]; then
  mkdir -p "$VM_SHARE"
  touch "$work/initramfs/share.on"
  share="-virtfs local,path=$(cd "$VM_SHARE" && pwd),mount_tag=share,security_model=passthrough"
fi
(cd "$work/initramfs" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd"

timeout "${VM_TIMEOUT:-1800}" qemu-system-x86_64 ${VM_ACCEL:--accel tcg,thread=multi} -cpu ${VM_CPU:-max} -smp "${VM_CPUS:-2}" -m "${VM_MEMORY:-4096}" \
  -nographic -no-reboot -monitor none -serial stdio -nodefaults \
  -kernel "/boot/vmlinuz-$kernel" -initrd "$work/initrd" \
  -append "console=ttyS0 panic=-1 ${VM_APPEND:-quiet loglevel=4}" \
  -virtfs local,path=/,mount_tag=root,security_model=passthrough,readonly=on,multidevs=remap $share \
  | tee "$work/console" | tr -d '\r'
status=$(sed -n 's/^POWERLOSS-VM-EXIT=\([0-9]*\).*/\1/p' "$work/console" | tail -1)
exit "${status:-3}"
