#!/bin/sh
# A rootless podman store (native overlay, userxattr) of a user made up for the test, inside
# a private mount namespace whose /etc/passwd, group, subuid and subgid name that user:
# podman imports a busybox image, runs a container that changes files (one chowned to
# 1000), and ovltool works on the store as that user. Prints one line per step.
# $1 = temp dir (made by the test), $2 = ovltool, $3 = busybox, $4 = uid
D="$1"; O="$2"; BB="$3"; U="$4"
mkdir -p "$D/home" "$D/run" "$D/rootfs/bin" "$D/rootfs/data" || exit 3
cp "$BB" "$D/rootfs/bin/busybox" && for t in sh cat echo sleep chown stat; do ln -s busybox "$D/rootfs/bin/$t"; done
echo old > "$D/rootfs/data/old" && tar -C "$D/rootfs" -cf "$D/rootfs.tar" . || exit 3
cp "$O" "$D/ovltool" && chmod 755 "$D/ovltool" "$D" && chmod 644 "$D/rootfs.tar"
chown "$U:$U" "$D/home" "$D/run" && chmod 700 "$D/run"
cp /etc/passwd "$D/passwd" && cp /etc/group "$D/group" || exit 3
echo "ovlpod:x:$U:$U::$D/home:/bin/sh" >> "$D/passwd"; echo "ovlpod:x:$U:" >> "$D/group"
echo "ovlpod:300000:65536" > "$D/subuid"; cp "$D/subuid" "$D/subgid"
cat > "$D/user.sh" <<USER
cd "\$HOME" || exit 3
mkdir -p .config/containers && printf '[storage]\ndriver = "overlay"\n' > .config/containers/storage.conf
P="podman --cgroup-manager cgroupfs --events-backend file"
\$P import "$D/rootfs.tar" localhost/bb:latest > /dev/null 2>&1 || echo "import failed"
\$P create --name rl --network none localhost/bb:latest sleep 1000 > /dev/null || echo "create failed"
\$P start rl > /dev/null || echo "start failed"
\$P exec rl sh -c "echo new > /data/new; echo changed > /data/old; chown 1000:1000 /data/new" || echo "exec failed"
echo hi > "$D/run/hi"
"$D/ovltool" put --store --container rl "$D/run/hi" /data/hi 2>&1; echo "put while running: \$?"
\$P stop -t 0 rl > /dev/null
"$D/ovltool" stack --store --container rl > /dev/null; echo "stack: \$?"
"$D/ovltool" fsck -n --store; echo "fsck: \$?"
"$D/ovltool" export --store --container rl --output "$D/run/host.tar" 2>&1; echo "export outside the namespace: \$?"
podman unshare "$D/ovltool" export --store --container rl --output "$D/run/ns.tar" > /dev/null; echo "export in podman unshare: \$?"
podman unshare tar -tvf "$D/run/ns.tar" | awk '/data\/(new|old)/ { print "entry", \$2, \$6 }' | sort
"$D/ovltool" put --store --container rl "$D/run/hi" /data/hi; echo "put: \$?"
\$P start rl > /dev/null && \$P exec rl cat /data/hi && \$P exec rl stat -c "owner %u %n" /data/new
\$P stop -t 0 rl > /dev/null
USER
chmod 644 "$D/user.sh"
unshare --mount --propagation private sh -c '
  for f in passwd group subuid subgid; do mount --bind "$1/$f" /etc/$f || exit 3; done
  setpriv --reuid "$2" --regid "$2" --init-groups env -i HOME="$1/home" XDG_RUNTIME_DIR="$1/run" PATH=/usr/sbin:/usr/bin:/sbin:/bin sh "$1/user.sh"
' sh "$D" "$U"
status=$?
# podman's pause process keeps the rootless user namespace (and its mounts) alive.
pkill -KILL -U "$U" 2>/dev/null; sleep 0.2
exit $status
