#!/bin/sh
# mkstack.sh DIR [N]
#
# Build a deterministic 3-layer overlayfs stack with about N (default 100000)
# raw entries in total under DIR/{l1,l2,l3,upper,work} (l1 = top-most lower,
# l3 = bottom-most lower).  Mount it with
#
#   mount -t overlay overlay \
#     -o ro,lowerdir=DIR/l1:DIR/l2:DIR/l3,upperdir=DIR/upper,workdir=DIR/work MNT
#
# Contents: a directory tree with fan-out ~20-50 shared (partially) across the
# layers; regular files of 0-64 KiB (mostly small) plus a few ~1 MiB ones
# (total data ~4 KiB * N, i.e. ~400 MiB for N=100000); symlinks (relative,
# absolute, dangling); a few fifos, sockets, char/block devices; user.* (and a
# few trusted.*) xattrs; varied modes/owners/mtimes; files overridden in higher
# layers; char 0:0 whiteouts in upper and l1 (for files and whole subtrees,
# plus a few stale ones); trusted.overlay.opaque=y dirs in upper/l1/l2; and
# renamed dirs in upper carrying trusted.overlay.redirect="/abs/path" to a dir
# that lives in l2 (and l3), whose original name is whited out in upper; a
# /weird dir with non-UTF-8 / quote / backslash / control-char names.
#
# Environment: MKSTACK_SEED (default 1); MKSTACK_QUIRKS=1 keeps whiteouts in
# single-layer dirs (kernel lists them but lstat gives ENOENT).  Needs root (mknod, chown, trusted.*
# xattrs) and a filesystem with xattr support.  DIR must not contain l1, l2,
# l3, upper or work already.
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 DIR [N]" >&2
    exit 2
fi
exec python3 - "$1" "${2:-100000}" "${MKSTACK_SEED:-1}" <<'PYEOF'
import os, random, stat, socket, sys, time

top = os.fsencode(sys.argv[1])
N = int(sys.argv[2])
R = random.Random(int(sys.argv[3]))
# MKSTACK_QUIRKS=1: also leave whiteouts in single-layer (non-merged) dirs,
# which the kernel lists in readdir but fails to lstat (ENOENT).
QUIRKS = os.environ.get('MKSTACK_QUIRKS') == '1'

LAYERS = [b'l3', b'l2', b'l1', b'upper']       # index 0 = bottom
L3, L2, L1, UP = 0, 1, 2, 3
NL = 4
for l in LAYERS + [b'work']:
    p = os.path.join(top, l)
    if os.path.lexists(p):
        sys.exit('mkstack: %s already exists' % os.fsdecode(p))
os.makedirs(top, exist_ok=True)
for l in LAYERS + [b'work']:
    os.mkdir(os.path.join(top, l))

BASE_NS = 1_600_000_000 * 10**9
SPAN_NS = 3 * 365 * 86400 * 10**9
POOL = R.randbytes(16 << 20)

WORDS = ('lib bin etc share src include doc man cache data conf log tmp run '
         'python3 site-packages node_modules locale zoneinfo fonts icons '
         'systemd modules firmware keys certs java perl go rust app assets '
         'static templates tests vendor build dist pkg internal cmd api util '
         'core net io os sys db web ui img css js proto test fixtures').split()
EXTS = ('', '.so', '.py', '.pyc', '.txt', '.conf', '.h', '.c', '.json', '.js',
        '.png', '.gz', '.md', '.xml', '.1', '.mo', '.a', '.html')

stats = {'entries': 0, 'files': 0, 'bytes': 0, 'dirs': 0, 'symlinks': 0,
         'special': 0, 'whiteouts': 0, 'opaque': 0, 'redirects': 0,
         'xattrs': 0, 'overrides': 0}
meta = []          # (fs path, is_symlink, mode, uid, gid, mtime_ns)
made_dirs = [set() for _ in range(NL)]   # logical dir paths present per layer


def lp(layer, rel):
    return top + b'/' + LAYERS[layer] + rel


def rand_mtime():
    return BASE_NS + R.randrange(SPAN_NS)


def rand_owner():
    r = R.random()
    if r < 0.85:
        return 0, 0
    if r < 0.95:
        return 1000, 1000
    return R.choice(((65534, 65534), (33, 33), (1000, 100), (999, 4)))


def ensure_dir(layer, rel):
    """Create logical dir `rel` (and ancestors) in `layer`."""
    if rel == b'' or rel in made_dirs[layer]:
        return
    parent = rel.rsplit(b'/', 1)[0]
    ensure_dir(layer, parent)
    p = lp(layer, rel)
    os.mkdir(p)
    made_dirs[layer].add(rel)
    stats['entries'] += 1
    stats['dirs'] += 1
    r = R.random()
    mode = 0o755 if r < 0.85 else R.choice((0o700, 0o750, 0o775, 0o1777, 0o2755, 0o555))
    uid, gid = rand_owner()
    meta.append((p, False, mode, uid, gid, rand_mtime()))
    if R.random() < 0.05:
        add_xattrs(p)


def add_xattrs(p):
    n = R.choice((1, 1, 1, 2, 3))
    for i in range(n):
        r = R.random()
        if r < 0.5:
            os.setxattr(p, 'user.comment', b'note %d' % R.randrange(10**6))
        elif r < 0.8:
            os.setxattr(p, 'user.checksum', R.randbytes(16))
        elif r < 0.95:
            os.setxattr(p, 'user.mime_type', R.choice((b'text/plain', b'image/png', b'')))
        else:
            os.setxattr(p, 'trusted.bench', R.randbytes(4))
    stats['xattrs'] += 1


def file_size():
    r = R.random()
    if r < 0.04:
        return 0
    if r < 0.64:
        return R.randint(1, 2048)
    if r < 0.94:
        return R.randint(2049, 10240)
    if r < 0.9992:
        return R.randint(10241, 65536)
    return (1 << 20) + R.randrange(65536)


def write_file(p, rel, layer):
    size = file_size()
    hdr = b'%s@%d\n' % (rel, layer)
    if size <= len(hdr):
        data = hdr[:size]
    else:
        off = R.randrange(len(POOL) - size)
        data = hdr + POOL[off:off + size - len(hdr)]
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    stats['files'] += 1
    stats['bytes'] += size
    r = R.random()
    if r < 0.80:
        mode = 0o644
    elif r < 0.95:
        mode = 0o755
    else:
        mode = R.choice((0o600, 0o640, 0o444, 0o4755, 0o2755, 0o700, 0o666))
    uid, gid = rand_owner()
    meta.append((p, False, mode, uid, gid, rand_mtime()))
    if R.random() < 0.03:
        add_xattrs(p)


def make_entry(layer, rel, kind):
    """Create a non-directory entry of `kind` at logical path rel in layer."""
    ensure_dir(layer, rel.rsplit(b'/', 1)[0])
    p = lp(layer, rel)
    stats['entries'] += 1
    if kind == 'file':
        write_file(p, rel, layer)
        return
    if kind == 'symlink':
        r = R.random()
        if r < 0.5:
            tgt = b'../' * R.randint(0, 2) + R.choice(WORDS).encode() + R.choice(EXTS).encode()
        elif r < 0.8:
            tgt = b'/usr/' + R.choice(WORDS).encode() + b'/' + R.choice(WORDS).encode()
        elif r < 0.95:
            tgt = R.choice(WORDS).encode() + b'.%d' % R.randrange(100)
        else:
            tgt = b'/nonexistent/dangling-%d' % R.randrange(10**6)
        os.symlink(tgt, p)
        stats['symlinks'] += 1
        uid, gid = rand_owner()
        meta.append((p, True, 0, uid, gid, rand_mtime()))
        return
    stats['special'] += 1
    uid, gid = 0, 0
    if kind == 'fifo':
        os.mkfifo(p, 0o644)
        mode = R.choice((0o644, 0o600, 0o666))
    elif kind == 'char':
        dev = R.choice(((1, 3), (1, 5), (1, 8), (5, 0), (4, 1), (136, 0)))
        os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(*dev))
        mode = R.choice((0o666, 0o620, 0o600))
    elif kind == 'block':
        dev = R.choice(((7, 0), (8, 1), (259, 3)))
        os.mknod(p, stat.S_IFBLK | 0o660, os.makedev(*dev))
        mode = 0o660
        gid = 6
    else:  # socket
        # bind relative to the parent dir: sun_path is limited to 108 bytes
        d, b = p.rsplit(b'/', 1)
        cwd = os.open('.', os.O_RDONLY | os.O_DIRECTORY)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.chdir(d)
            s.bind(b)
        finally:
            s.close()
            os.fchdir(cwd)
            os.close(cwd)
        mode = 0o755
    meta.append((p, False, mode, uid, gid, rand_mtime()))


def make_whiteout(layer, rel):
    ensure_dir(layer, rel.rsplit(b'/', 1)[0])
    p = lp(layer, rel)
    os.mknod(p, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    stats['entries'] += 1
    stats['whiteouts'] += 1
    meta.append((p, False, 0, 0, 0, rand_mtime()))


def pick_layer(maxl):
    """Home layer for an entry, restricted to layers < maxl."""
    w = (0.45, 0.25, 0.18, 0.12)[:maxl]
    return R.choices(range(maxl), weights=w)[0]


def pick_kind():
    r = R.random()
    if r < 0.86:
        return 'file'
    if r < 0.985:
        return 'symlink'
    return R.choice(('fifo', 'fifo', 'char', 'char', 'block', 'socket'))


# ---------------------------------------------------------------- skeleton
# Logical dirs: rel path -> maxl (entries of its subtree only in layers < maxl)
target_dirs = max(8, N // 37)
dirs = {b'': NL}
order = [b'']
queue = [b'']
qi = 0
while len(order) < target_dirs and qi < len(queue):
    parent = queue[qi]
    qi += 1
    depth = parent.count(b'/')
    nsub = R.randint(2, 6) if depth < 8 else 0
    used = set()
    for i in range(nsub):
        while True:
            nm = R.choice(WORDS).encode()
            if R.random() < 0.5:
                nm += b'-%d' % R.randrange(100)
            if nm not in used:
                break
        used.add(nm)
        rel = parent + b'/' + nm
        dirs[rel] = NL
        order.append(rel)
        queue.append(rel)

# Dir-level overlay features (chosen before populating).
whiteout_dirs = []     # (rel, layer): subtree hidden by a whiteout in layer
opaque_dirs = []       # (rel, layer)
redirects = []         # (old rel, new rel)
cands = [d for d in order if d.count(b'/') >= 2]
R.shuffle(cands)
taken = set()


def free(d):
    # d and its ancestors/descendants not already used by a feature
    for t in taken:
        if d == t or d.startswith(t + b'/') or t.startswith(d + b'/'):
            return False
    return True


n_feat = max(2, len(order) // 150)
ci = 0
for kind, count in (('redirect', max(3, N // 20000)), ('whiteout', n_feat),
                    ('opaque', n_feat)):
    k = 0
    while k < count and ci < len(cands):
        d = cands[ci]
        ci += 1
        if not free(d):
            continue
        taken.add(d)
        k += 1
        if kind == 'whiteout':
            wl = R.choice((L1, UP, UP))
            whiteout_dirs.append((d, wl))
            sub_max = wl
        elif kind == 'opaque':
            opaque_dirs.append((d, R.choice((L2, L1, UP, UP))))
            continue
        else:
            redirects.append(d)
            sub_max = L1          # lives in l3/l2 only
        for x in order:
            if x == d or x.startswith(d + b'/'):
                dirs[x] = min(dirs[x], sub_max)

# ---------------------------------------------------------------- populate
logical_files = []     # (rel, home layer, maxl) for whiteout/override picks
for d in order:
    maxl = dirs[d]
    nent = R.randint(16, 44)
    used = set()
    # make sure the dir exists in at least one layer
    ensure_dir(pick_layer(maxl), d)
    for i in range(nent):
        while True:
            r = R.random()
            if r < 0.6:
                nm = R.choice(WORDS).encode() + (b'%d' % R.randrange(1000)) + R.choice(EXTS).encode()
            elif r < 0.9:
                nm = b'%s_%s%s' % (R.choice(WORDS).encode(), R.choice(WORDS).encode(),
                                   R.choice(EXTS).encode())
            else:
                nm = b'F%06d' % R.randrange(10**6)
            if nm not in used:
                break
        used.add(nm)
        rel = d + b'/' + nm
        if rel in dirs:
            continue
        home = pick_layer(maxl)
        kind = pick_kind()
        make_entry(home, rel, kind)
        top_layer = home
        if home < maxl - 1 and R.random() < 0.10:
            # overridden in a higher layer (copy-up / package update)
            hi = R.randint(home + 1, maxl - 1)
            k2 = kind if R.random() < 0.9 else pick_kind()
            make_entry(hi, rel, k2)
            stats['overrides'] += 1
            top_layer = hi
        if top_layer < maxl - 1 and top_layer < UP and R.random() < 0.03:
            # deleted in a higher layer (whiteout in l1 or upper)
            cand = [l for l in (L1, UP) if top_layer < l < maxl]
            if cand:
                make_whiteout(R.choice(cand), rel)
    if maxl == NL and d not in taken and R.random() < 0.01 and (
            QUIRKS or any(d in made_dirs[l] for l in range(UP))):
        # stale whiteout: hides nothing (in a merged dir)
        make_whiteout(UP, d + b'/.stale-wh-%d' % R.randrange(1000))

# subtree whiteouts
for d, wl in whiteout_dirs:
    make_whiteout(wl, d)
    if wl == L1 and R.random() < 0.5:
        # re-created as a fresh dir in upper (upper dir + l1 whiteout)
        make_entry(UP, d + b'/recreated.txt', 'file')

# opaque dirs: the dir in that layer hides everything below
for d, ol in opaque_dirs:
    ensure_dir(ol, d)
    for i in range(R.randint(1, 4)):
        make_entry(ol, d + b'/opaque-only-%d' % i, pick_kind())
    os.setxattr(lp(ol, d), 'trusted.overlay.opaque', b'y')
    stats['opaque'] += 1

# redirects: upper dir /<somewhere>/moved.N -> "/old/path" (in l2, maybe l3)
plain = [d for d in order if dirs[d] == NL and d.count(b'/') >= 1 and free(d)]
for i, old in enumerate(redirects):
    ensure_dir(L2, old)
    make_entry(L2, old + b'/in-l2-%d' % i, 'file')
    parent = R.choice(plain)
    new = parent + b'/moved.%d' % i
    ensure_dir(UP, new)
    os.setxattr(lp(UP, new), 'trusted.overlay.redirect', old)
    if R.random() < 0.7:
        make_entry(UP, new + b'/added-after-rename', 'file')
    make_whiteout(UP, old)
    stats['redirects'] += 1

# names that exercise sorting and string escaping
for layer in (L3, UP):
    ensure_dir(layer, b'/a')
make_entry(L3, b'/a/b', 'file')
make_entry(L3, b'/a-b', 'file')
make_entry(UP, b'/a.b', 'symlink')
weird = [b'f\xffo', b'q"uote', b'back\\slash', b'new\nline', b'tab\there',
         b'del\x7f', b'\xc3\xbcnic\xc3\xb6de', b'emoji\xf0\x9f\x98\x80',
         b'trunc\xe2\x82', b'sur\xed\xa0\x80', b'\x01ctl', b' space ',
         b'-dash', b'UPPER', b'~tilde']
for i, nm in enumerate(weird):
    make_entry(L3 if i % 3 else L2, b'/weird/' + nm, 'file')
make_entry(UP, b'/weird/link\xfe', 'symlink')
os.setxattr(lp(L3, b'/weird/q"uote'), 'user.na\\me"x', b'\x00\xff"')

# ---------------------------------------------------------------- metadata
# deepest first so parent mtimes are not disturbed afterwards
meta.sort(key=lambda m: -m[0].count(b'/'))
for p, is_link, mode, uid, gid, mt in meta:
    os.chown(p, uid, gid, follow_symlinks=False)
    if not is_link:
        os.chmod(p, mode)
    os.utime(p, ns=(mt, mt), follow_symlinks=False)
for i, l in enumerate(LAYERS + [b'work']):
    p = os.path.join(top, l)
    os.chmod(p, 0o755)
    os.utime(p, ns=(BASE_NS + i, BASE_NS + i))



def getx(p, name):
    try:
        return os.getxattr(p, name, follow_symlinks=False)
    except OSError:
        return None


def drop_pure_whiteouts():
    """Remove whiteouts in merged dirs that consist of a single layer.

    The kernel reads such a (non-merged) dir directly: its whiteouts show up
    in readdir but lookup fails with ENOENT.  Kernel-made stacks never contain
    them (they hide nothing), so drop them.  Simulates overlay lookup (opaque,
    whiteout/non-dir stops, absolute redirects) over the dirs only.
    """
    todo = [(b'', [(l, b'') for l in (UP, L1, L2, L3)])]
    while todo:
        rel, parts = todo.pop()
        if len(parts) == 1:
            l, r = parts[0]
            dp = lp(l, r)
            st0 = os.lstat(dp)
            hit = False
            with os.scandir(dp) as it:
                for e in it:
                    st = e.stat(follow_symlinks=False)
                    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                        os.unlink(e.path)
                        hit = True
                        stats['whiteouts'] -= 1
                        stats['entries'] -= 1
            if hit:
                os.utime(dp, ns=(st0.st_atime_ns, st0.st_mtime_ns))
        names = set()
        for l, r in parts:
            with os.scandir(lp(l, r)) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        names.add(e.name)
        for n in sorted(names):
            sub = []
            redirect = None
            for l, r in parts:
                lr = redirect if redirect is not None else r + b'/' + n
                p = lp(l, lr)
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    break
                sub.append((l, lr))
                if getx(p, 'trusted.overlay.opaque') == b'y':
                    break
                rd = getx(p, 'trusted.overlay.redirect')
                if rd is not None and rd.startswith(b'/'):
                    redirect = rd
            if sub:
                todo.append((rel + b'/' + n, sub))


if not QUIRKS:
    drop_pure_whiteouts()

s = stats
print('mkstack: %s: %d entries (%d dirs, %d files, %d symlinks, %d special, '
      '%d whiteouts), %.1f MiB file data, %d opaque, %d redirects, '
      '%d with xattrs, %d overrides'
      % (os.fsdecode(top), s['entries'], s['dirs'], s['files'], s['symlinks'],
         s['special'], s['whiteouts'], s['bytes'] / 2**20, s['opaque'],
         s['redirects'], s['xattrs'], s['overrides']))
PYEOF
