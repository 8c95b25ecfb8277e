#!/bin/sh
# make demo: build the bundled fixture stack and show its merged view with ovltool; where the
# kernel can mount it, show that the kernel's view is the same.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${OVLTOOL:-$top/.build/release/ovltool}
fixture=${FIXTURE_TOOL:-$top/.build/release/ovl-fixture}
out=$(mktemp -d "${TMPDIR:-/tmp}/ovltool-demo.XXXXXX")
trap 'rm -rf "$out"' EXIT

say() { printf '\n$ %s\n' "$*"; }
# Show commands with the stack written as $opts, then run them.
run() { say "$(echo "$*" | sed "s#$opts#\$opts#; s#$bin#ovltool#")"; "$@"; }

echo "Building Fixtures/demo.stack in $out"
opts=$("$fixture" "$top/Fixtures/demo.stack" "$out")
echo "opts=$opts"

run "$bin" ls -l -o "$opts" /etc
run "$bin" tree -o "$opts" /srv
run "$bin" stat -o "$opts" /srv/www
run "$bin" stat -o "$opts" /usr/bin/app
run "$bin" cat -o "$opts" /etc/hostname /etc/app.d/only-this.conf
run "$bin" copy-up -o "$opts" /etc/passwd /usr/bin/app /srv/www/index.html
run "$bin" ls -l -o "$opts" /etc
printf 'motd of the demo\n' > "$out/motd"
run "$bin" put -m 0644 -o "$opts" "$out/motd" /etc/motd
run "$bin" rm -r -o "$opts" /srv/www
run "$bin" mkdir -p -o "$opts" /srv/www/new
printf '%s\n' 'mkdir -p /var/log/app' 'symlink ../log/app /var/app-logs' 'chmod 0600 /etc/passwd' > "$out/changes"
say "cat changes"; cat "$out/changes"
run "$bin" apply-script -o "$opts" "$out/changes"
run "$bin" tree -o "$opts" /srv
say 'ovltool tree --json --hash -o "$opts" | head -4'
"$bin" tree --json --hash -o "$opts" | head -4

if [ "$(id -u)" = 0 ] && grep -qw overlay /proc/filesystems && command -v unshare >/dev/null && command -v python3 >/dev/null; then
  say "compare with the kernel (after the copy-ups and changes): mount read-only in a private mount namespace and walk it"
  "$bin" tree --json --hash -o "$opts" | sed 's/,"layer":[0-9]*}$/}/' > "$out/ovltool.jsonl"
  mkdir "$out/mnt"
  unshare --mount --propagation private sh -c '
    mount -t overlay demo -o "ro,$1" "$2" && python3 "$3" "$2" --hash > "$4"; rc=$?; umount "$2"; exit $rc' \
    sh "$opts" "$out/mnt" "$top/Tests/oracle/ovlwalk.py" "$out/kernel.jsonl"
  if cmp -s "$out/ovltool.jsonl" "$out/kernel.jsonl"; then
    echo "identical: $(wc -l < "$out/kernel.jsonl") entries, every field (type, mode, owner, size, target, rdev, mtime, xattrs, sha256)"
  else
    echo "DIFFERENT:"; diff "$out/ovltool.jsonl" "$out/kernel.jsonl" || true; exit 1
  fi
else
  echo "(not root or no overlayfs here: skipped the comparison with a kernel mount)"
fi
