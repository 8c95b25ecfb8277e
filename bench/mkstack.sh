#!/bin/sh
# mkstack.sh DIR [N]
#
# Build a deterministic 3-layer overlayfs stack with about N (default 100000)
# planned entries under DIR/{l1,l2,l3,upper,work} (l1 = top-most lower,
# l3 = bottom-most lower), every layer above l3 written by the kernel: l2 is
# the upper of a mount over l3, l1 the upper of a mount over l2:l3, and upper
# the upper of a mount over l1:l2:l3, each mounted with index=on and
# redirect_dir=on and changed through the mount only. So the layers hold what
# a kernel writes (copy-ups with origin, whiteouts only where something below
# is hidden, opaque dirs where a merged dir was removed and made again,
# redirects from directory renames, index entries from hard links to lower
# files) and fsck finds nothing. Check it with
#
#   ovltool fsck -n -o lowerdir=DIR/l1:DIR/l2:DIR/l3,upperdir=DIR/upper,\
#     workdir=DIR/work,index=on,redirect_dir=on
#
# Contents: a directory tree with fan-out ~20-50 shared (partially) across the
# layers; regular files of 0-64 KiB (mostly small) plus a few ~1 MiB ones;
# symlinks (relative, absolute, dangling); a few fifos, sockets, char/block
# devices; user.* (and a few trusted.*) xattrs; varied modes/owners/mtimes;
# files replaced in higher layers (copy-ups); files and whole subtrees
# removed in l1 and upper; directories removed and made again (opaque) in
# l2, l1 and upper; directories of l2/l3 renamed in upper (redirects); hard
# links to lower files (index entries); a /weird dir with non-UTF-8, quote,
# backslash and control-char names.
#
# Environment: MKSTACK_SEED (default 1); MKSTACK_MAX_SIZE caps each file's size in bytes
# (the scale benchmark's stacks: metadata, not data; the random choices stay the same).
# Needs root (mount, mknod, chown,
# trusted.* xattrs) and a filesystem with xattr and file handle support.
# DIR must not contain l1, l2, l3, upper or work already.
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 DIR [N]" >&2
    exit 2
fi
exec python3 - "$1" "${2:-100000}" "${MKSTACK_SEED:-1}" "${MKSTACK_MAX_SIZE:-}" <<'PYEOF'
import os, random, shutil, stat, socket, subprocess, sys

top = os.path.abspath(os.fsencode(sys.argv[1]))
N = int(sys.argv[2])
R = random.Random(int(sys.argv[3]))
MAX_SIZE = int(sys.argv[4]) if sys.argv[4] else None

LAYERS = [b'l3', b'l2', b'l1', b'upper']       # index 0 = bottom
L3, L2, L1, UP = 0, 1, 2, 3
NL = 4
MNT = top + b'/.mnt'
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

stats = {'files': 0, 'bytes': 0, 'dirs': 0, 'symlinks': 0, 'special': 0,
         'removed': 0, 'opaque': 0, 'redirects': 0, 'xattrs': 0,
         'overrides': 0, 'links': 0}

# ---------------------------------------------------------------- plan
# The plan is made first (the random choices in the same order whatever the
# kernel does), then each stage's operations run through that stage's mount.
ops = [[] for _ in range(NL)]       # per stage: (op, rel, args...)
planned_dirs = [set() for _ in range(NL)]


def rand_mtime():
    return BASE_NS + R.randrange(SPAN_NS)


def rand_owner():
    r = R.random()
    if r < 0.85:
        return 0, 0
    if r < 0.95:
        return 1000, 1000
    return R.choice(((65534, 65534), (33, 33), (1000, 100), (999, 4)))


def rand_xattrs():
    out = []
    for i in range(R.choice((1, 1, 1, 2, 3))):
        r = R.random()
        if r < 0.5:
            out.append(('user.comment', b'note %d' % R.randrange(10**6)))
        elif r < 0.8:
            out.append(('user.checksum', R.randbytes(16)))
        elif r < 0.95:
            out.append(('user.mime_type', R.choice((b'text/plain', b'image/png', b''))))
        else:
            out.append(('trusted.bench', R.randbytes(4)))
    return out


def plan_dir(layer, rel):
    if rel == b'' or rel in planned_dirs[layer]:
        return
    plan_dir(layer, rel.rsplit(b'/', 1)[0])
    planned_dirs[layer].add(rel)
    r = R.random()
    mode = 0o755 if r < 0.85 else R.choice((0o700, 0o750, 0o775, 0o1777, 0o2755, 0o555))
    uid, gid = rand_owner()
    xs = rand_xattrs() if R.random() < 0.05 else []
    ops[layer].append(('dir', rel, mode, uid, gid, rand_mtime(), xs))


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


def plan_entry(layer, rel, kind):
    plan_dir(layer, rel.rsplit(b'/', 1)[0])
    uid, gid = rand_owner()
    if kind == 'file':
        size = file_size()
        r = R.random()
        if r < 0.80:
            mode = 0o644
        elif r < 0.95:
            mode = 0o755
        else:
            mode = R.choice((0o600, 0o640, 0o444, 0o4755, 0o2755, 0o700, 0o666))
        xs = rand_xattrs() if R.random() < 0.03 else []
        off = R.randrange(len(POOL) - size)
        ops[layer].append(('file', rel, size if MAX_SIZE is None else min(size, MAX_SIZE), off, mode,
                           uid, gid, rand_mtime(), xs))
    elif kind == 'symlink':
        r = R.random()
        if r < 0.5:
            tgt = b'../' * R.randint(0, 2) + R.choice(WORDS).encode() + R.choice(EXTS).encode()
        elif r < 0.8:
            tgt = b'/usr/' + R.choice(WORDS).encode() + b'/' + R.choice(WORDS).encode()
        elif r < 0.95:
            tgt = R.choice(WORDS).encode() + b'.%d' % R.randrange(100)
        else:
            tgt = b'/nonexistent/dangling-%d' % R.randrange(10**6)
        ops[layer].append(('symlink', rel, tgt, uid, gid, rand_mtime()))
    elif kind == 'fifo':
        ops[layer].append(('fifo', rel, R.choice((0o644, 0o600, 0o666)), 0, 0, rand_mtime()))
    elif kind == 'char':
        dev = R.choice(((1, 3), (1, 5), (1, 8), (5, 0), (4, 1), (136, 0)))
        ops[layer].append(('char', rel, dev, R.choice((0o666, 0o620, 0o600)), 0, 0, rand_mtime()))
    elif kind == 'block':
        dev = R.choice(((7, 0), (8, 1), (259, 3)))
        ops[layer].append(('block', rel, dev, 0o660, 0, 6, rand_mtime()))
    else:
        ops[layer].append(('socket', rel, 0o755, 0, 0, rand_mtime()))


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

whiteout_dirs = []     # (rel, layer): subtree removed in layer
opaque_dirs = []       # (rel, layer): removed and made again in layer
redirects = []         # rel of a dir of l2/l3 renamed in upper
cands = [d for d in order if d.count(b'/') >= 2]
R.shuffle(cands)
taken = set()


def free(d):
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
            sub_max = L1
        for x in order:
            if x == d or x.startswith(d + b'/'):
                dirs[x] = min(dirs[x], sub_max)

# Opaque dirs first in their stage: what the stage adds below them stays.
for d, ol in opaque_dirs:
    ops[ol].append(('remake', d))

for d in order:
    maxl = dirs[d]
    nent = R.randint(16, 44)
    used = set()
    plan_dir(pick_layer(maxl), d)
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
        plan_entry(home, rel, kind)
        top_layer = home
        if home < maxl - 1 and R.random() < 0.10:
            # replaced in a higher layer (copy-up or a new object)
            hi = R.randint(home + 1, maxl - 1)
            plan_entry(hi, rel, kind if R.random() < 0.9 else pick_kind())
            top_layer = hi
        if kind == 'file' and R.random() < 0.03 and nm + b'.hl' not in used:
            # a hard link in the same layer; linked again in a higher one, the lower
            # inode (two links) is copied up into the index (index=on)
            used.add(nm + b'.hl')
            ops[top_layer].append(('link', rel, d + b'/' + nm + b'.hl'))
            if top_layer < maxl - 1 and R.random() < 0.7 and nm + b'.hl2' not in used:
                used.add(nm + b'.hl2')
                ops[R.randint(top_layer + 1, maxl - 1)].append(('link', rel, d + b'/' + nm + b'.hl2'))
        if top_layer < maxl - 1 and top_layer < UP and R.random() < 0.03:
            cand = [l for l in (L1, UP) if top_layer < l < maxl]
            if cand:
                ops[R.choice(cand)].append(('remove', rel))

for d, wl in whiteout_dirs:
    ops[wl].append(('remove', d))
    if wl == L1 and R.random() < 0.5:
        plan_entry(UP, d + b'/recreated.txt', 'file')

for d, ol in opaque_dirs:
    plan_dir(ol, d)
    for i in range(R.randint(1, 4)):
        plan_entry(ol, d + b'/opaque-only-%d' % i, pick_kind())

plain = [d for d in order if dirs[d] == NL and d.count(b'/') >= 1 and free(d)]
for i, old in enumerate(redirects):
    plan_dir(L2, old)
    plan_entry(L2, old + b'/in-l2-%d' % i, 'file')
    new = R.choice(plain) + b'/moved.%d' % i
    ops[UP].append(('rename', old, new))
    if R.random() < 0.7:
        plan_entry(UP, new + b'/added-after-rename', 'file')

plan_dir(L3, b'/a')
plan_entry(L3, b'/a/b', 'file')
plan_entry(L3, b'/a-b', 'file')
plan_entry(UP, b'/a.b', 'symlink')
weird = [b'f\xffo', b'q"uote', b'back\\slash', b'new\nline', b'tab\there',
         b'del\x7f', b'\xc3\xbcnic\xc3\xb6de', b'emoji\xf0\x9f\x98\x80',
         b'trunc\xe2\x82', b'sur\xed\xa0\x80', b'\x01ctl', b' space ',
         b'-dash', b'UPPER', b'~tilde']
for i, nm in enumerate(weird):
    plan_entry(L3 if i % 3 else L2, b'/weird/' + nm, 'file')
plan_entry(UP, b'/weird/link\xfe', 'symlink')
ops[L3].append(('xattr', b'/weird/q"uote', 'user.na\\me"x', b'\x00\xff"'))

# ---------------------------------------------------------------- run


def exists(p):
    try:
        os.lstat(p)
        return True
    except FileNotFoundError:
        return False


def remove(p):
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p)
    else:
        os.unlink(p)


def run_stage(root, todo):
    """Run one stage's operations below root (a mount, or l3 itself)."""
    meta = []          # (path, is_symlink, mode, uid, gid, mtime_ns)

    def mkdirs(rel):
        if rel == b'' or os.path.isdir(root + rel):
            return
        mkdirs(rel.rsplit(b'/', 1)[0])
        if exists(root + rel):
            remove(root + rel)
        os.mkdir(root + rel)
        stats['dirs'] += 1
        meta.append((root + rel, False, 0o755, 0, 0, rand_mtime()))

    def fresh(rel):
        mkdirs(rel.rsplit(b'/', 1)[0])
        p = root + rel
        if exists(p):
            remove(p)
        return p

    for op in todo:
        kind, rel = op[0], op[1]
        p = root + rel
        if kind == 'dir':
            _, _, mode, uid, gid, mt, xs = op
            if os.path.isdir(p):
                continue
            mkdirs(rel)
            meta[-1] = (p, False, mode, uid, gid, mt)
            for n, v in xs:
                os.setxattr(p, n, v, follow_symlinks=False)
                stats['xattrs'] += 1
        elif kind == 'file':
            _, _, size, off, mode, uid, gid, mt, xs = op
            hdr = b'%s\n' % rel
            data = hdr[:size] if size <= len(hdr) else hdr + POOL[off:off + size - len(hdr)]
            mkdirs(rel.rsplit(b'/', 1)[0])
            if os.path.isfile(p) and not os.path.islink(p):
                stats['overrides'] += 1       # a copy-up, then new data
            elif exists(p):
                remove(p)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            stats['files'] += 1
            stats['bytes'] += size
            meta.append((p, False, mode, uid, gid, mt))
            for n, v in xs:
                os.setxattr(p, n, v, follow_symlinks=False)
                stats['xattrs'] += 1
        elif kind == 'symlink':
            _, _, tgt, uid, gid, mt = op
            os.symlink(tgt, fresh(rel))
            stats['symlinks'] += 1
            meta.append((p, True, 0, uid, gid, mt))
        elif kind in ('fifo', 'char', 'block', 'socket'):
            mode, uid, gid, mt = op[-4:]
            fresh(rel)
            if kind == 'fifo':
                os.mkfifo(p, 0o644)
            elif kind == 'char':
                os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(*op[2]))
            elif kind == 'block':
                os.mknod(p, stat.S_IFBLK | 0o660, os.makedev(*op[2]))
            else:
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
            stats['special'] += 1
            meta.append((p, False, mode, uid, gid, mt))
        elif kind == 'remove':
            if exists(p):
                remove(p)
                stats['removed'] += 1
        elif kind == 'remake':
            if os.path.isdir(p):
                shutil.rmtree(p)
                os.mkdir(p)
                stats['opaque'] += 1
        elif kind == 'link':
            dst = op[2]
            if os.path.isfile(p) and not os.path.islink(p) and not exists(root + dst):
                os.link(p, root + dst)
                stats['links'] += 1
        elif kind == 'rename':
            dst = op[2]
            if os.path.isdir(p) and not exists(root + dst):
                mkdirs(dst.rsplit(b'/', 1)[0])
                os.rename(p, root + dst)
                stats['redirects'] += 1
        elif kind == 'xattr':
            os.setxattr(p, op[2], op[3], follow_symlinks=False)
        else:
            raise ValueError(kind)

    # deepest first so parent mtimes are not disturbed afterwards
    meta.sort(key=lambda m: -m[0].count(b'/'))
    for p, is_link, mode, uid, gid, mt in meta:
        if not exists(p):
            continue
        os.chown(p, uid, gid, follow_symlinks=False)
        if not is_link:
            os.chmod(p, mode)
        os.utime(p, ns=(mt, mt), follow_symlinks=False)


run_stage(top + b'/l3', ops[L3])
os.mkdir(MNT)
for stage in (L2, L1, UP):
    lowers = b':'.join(top + b'/' + LAYERS[l] for l in range(stage - 1, -1, -1))
    work = top + b'/work' if stage == UP else top + b'/.work-' + LAYERS[stage]
    os.makedirs(work, exist_ok=True)
    opts = b'lowerdir=%s,upperdir=%s/%s,workdir=%s,index=on,redirect_dir=on,volatile' % (
        lowers, top, LAYERS[stage], work)
    subprocess.run([b'mount', b'-t', b'overlay', b'overlay', b'-o', opts, MNT], check=True)
    try:
        run_stage(MNT, ops[stage])
    finally:
        subprocess.run([b'umount', MNT], check=True)
    # volatile skips the copy-ups' fsyncs (minutes at 10^5 entries); the next mount
    # refuses a work dir still marked volatile, so sync and drop the mark
    os.sync()
    shutil.rmtree(work + b'/work/incompat')
    if stage != UP:
        # the work dir of a layer that becomes a lower is not part of the stack
        subprocess.run([b'rm', b'-rf', work], check=True)
os.rmdir(MNT)
for i, l in enumerate(LAYERS + [b'work']):
    p = os.path.join(top, l)
    os.chmod(p, 0o755)
    os.utime(p, ns=(BASE_NS + i, BASE_NS + i))

n = 0
for l in LAYERS + [b'work']:
    for _, ds, fs in os.walk(os.path.join(top, l)):
        n += len(ds) + len(fs)
s = stats
print('mkstack: %s: %d entries in the layers (%d dirs, %d files, %d symlinks, %d special '
      'made; %d removed, %d opaque, %d redirects, %d hard links, %d with xattrs, '
      '%d overrides), %.1f MiB file data'
      % (os.fsdecode(top), n, s['dirs'], s['files'], s['symlinks'], s['special'],
         s['removed'], s['opaque'], s['redirects'], s['links'], s['xattrs'],
         s['overrides'], s['bytes'] / 2**20))
PYEOF
