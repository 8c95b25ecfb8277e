#!/usr/bin/env python3
"""ovlwalk: reference walker for ovltool tests and benchmarks.

Usage: ovlwalk.py ROOT [--hash] [--drop-private] [--ino]

Walks the real directory tree at ROOT (in practice a kernel overlay mount)
without following symlinks and prints one compact JSON object per line, in
the same format as `ovltool tree --json` (minus the `layer` field):

  {"path":"/a","type":"file","mode":420,"uid":0,"gid":0,"size":3,
   "mtime":1600000000000000000,"xattrs":{"user.x":"6869"},"sha256":"..."}

Order: pre-order depth first, root ("/") first, children of each directory
sorted by raw name bytes.  Keys (in this order, omitted when not applicable):
path, type, mode, uid, gid, ino (--ino), size (files and symlinks), target (symlinks),
rdev ([major,minor], char/block), mtime (ns), xattrs (always), sha256
(--hash, regular files).

Strings are byte strings: valid UTF-8 is emitted as is; '"' and '\\' are
backslash-escaped; bytes < 0x20, 0x7f and every byte that is not part of a
valid UTF-8 sequence are written as \\u00xx (lower-case hex).

If an entry cannot be read (lstat, readlink, listxattr/getxattr, opendir or
hashing fails), a line {"path":...,"error":"ENOENT"} (errno name) is printed
instead of that entry, its subtree is skipped, the walk continues and the
exit status is 1.  Memory use is bounded by the sizes of the directories on
the current path (one sorted name list per level).
"""

import errno
import hashlib
import os
import re
import stat
import sys

CHUNK = 1 << 20

# ---------------------------------------------------------------- strings

_ESC = {c: '\\u%04x' % c for c in range(0x20)}
_ESC[0x7f] = '\\u007f'
_ESC[ord('"')] = '\\"'
_ESC[ord('\\')] = '\\\\'
# bytes that are not part of a valid UTF-8 sequence come back from
# decode('utf-8', 'surrogateescape') as U+DC80..U+DCFF (one per byte)
_ESC_BAD = dict(_ESC)
for _b in range(0x80, 0x100):
    _ESC_BAD[0xdc00 + _b] = '\\u%04x' % _b
_NEEDS_ESC = re.compile('[\x00-\x1f"\\\\\x7f]')


def jstr(b):
    """Encode a byte string as a JSON string literal (with quotes)."""
    try:
        s = b.decode('utf-8')
    except UnicodeDecodeError:
        return '"' + b.decode('utf-8', 'surrogateescape').translate(_ESC_BAD) + '"'
    if _NEEDS_ESC.search(s) is None:
        return '"' + s + '"'
    return '"' + s.translate(_ESC) + '"'


# ---------------------------------------------------------------- entries

_TYPES = {
    stat.S_IFREG: 'file',
    stat.S_IFDIR: 'dir',
    stat.S_IFLNK: 'symlink',
    stat.S_IFCHR: 'char',
    stat.S_IFBLK: 'block',
    stat.S_IFIFO: 'fifo',
    stat.S_IFSOCK: 'socket',
}

_PRIVATE = (b'trusted.overlay.', b'user.overlay.')


_BUF = bytearray(CHUNK)          # reused: allocating 1 MiB per file is slow
_VIEW = memoryview(_BUF)
_BUFS = [_BUF]


def sha256_file(p):
    fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        h = hashlib.sha256()
        buf, view, bufs, readv = _BUF, _VIEW, _BUFS, os.readv
        while True:
            n = readv(fd, bufs)
            if n == 0:
                break
            if n == CHUNK:
                h.update(buf)
            else:
                h.update(view[:n])
        return h.hexdigest()
    finally:
        os.close(fd)


def xattrs_json(p, drop_private):
    names = os.listxattr(p, follow_symlinks=False)
    if not names:
        return '{}'
    items = []
    for n in names:
        nb = os.fsencode(n)
        if drop_private and nb.startswith(_PRIVATE):
            continue
        items.append((nb, n))
    items.sort()
    parts = []
    for nb, n in items:
        v = os.getxattr(p, n, follow_symlinks=False)
        parts.append(jstr(nb) + ':"' + v.hex() + '"')
    return '{' + ','.join(parts) + '}'


def errname(e):
    if isinstance(e, OSError) and e.errno is not None:
        return errno.errorcode.get(e.errno, 'E%d' % e.errno)
    return 'EIO'


# ---------------------------------------------------------------- walk

def main(argv):
    args = []
    do_hash = False
    drop_private = False
    do_ino = False
    for a in argv[1:]:
        if a == '--ino':
            do_ino = True
        elif a == '--hash':
            do_hash = True
        elif a == '--drop-private':
            drop_private = True
        elif a in ('-h', '--help'):
            sys.stdout.write(__doc__)
            return 0
        elif a.startswith('--'):
            sys.stderr.write('ovlwalk: unknown option %s\n' % a)
            return 2
        else:
            args.append(a)
    if len(args) != 1:
        sys.stderr.write('usage: ovlwalk.py ROOT [--hash] [--drop-private] [--ino]\n')
        return 2
    root = os.fsencode(args[0])
    if len(root) > 1:
        root = root.rstrip(b'/') or b'/'

    out = open(sys.stdout.fileno(), 'w', encoding='utf-8', newline='\n',
               buffering=1 << 20, closefd=False)
    write = out.write
    failed = 0
    lstat = os.lstat
    S_IFMT = stat.S_IFMT
    S_IFREG, S_IFDIR, S_IFLNK = stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK
    S_IFCHR, S_IFBLK = stat.S_IFCHR, stat.S_IFBLK

    def emit(fs, rel):
        """Print the line for fs path `fs` (relative path `rel`).

        Returns the sorted child names for a readable directory, else None.
        """
        nonlocal failed
        jp = jstr(rel)
        try:
            st = lstat(fs)
            fmt = S_IFMT(st.st_mode)
            line = ['{"path":', jp, ',"type":"', _TYPES.get(fmt, 'unknown'),
                    '","mode":', str(st.st_mode & 0o7777),
                    ',"uid":', str(st.st_uid), ',"gid":', str(st.st_gid)]
            if do_ino:
                line += (',"ino":', str(st.st_ino))
            children = None
            if fmt == S_IFREG:
                line += (',"size":', str(st.st_size))
            elif fmt == S_IFLNK:
                line += (',"size":', str(st.st_size),
                         ',"target":', jstr(os.readlink(fs)))
            elif fmt == S_IFCHR or fmt == S_IFBLK:
                line += (',"rdev":[', str(os.major(st.st_rdev)), ',',
                         str(os.minor(st.st_rdev)), ']')
            elif fmt == S_IFDIR:
                with os.scandir(fs) as it:
                    children = sorted([e.name for e in it])
            line += (',"mtime":', str(st.st_mtime_ns),
                     ',"xattrs":', xattrs_json(fs, drop_private))
            if do_hash and fmt == S_IFREG:
                line += (',"sha256":"', sha256_file(fs), '"')
            line.append('}\n')
            write(''.join(line))
            return children
        except OSError as e:
            failed += 1
            write('{"path":' + jp + ',"error":"' + errname(e) + '"}\n')
            sys.stderr.write('ovlwalk: %s: %s\n'
                             % (os.fsdecode(fs), e.strerror or e))
            return None

    children = emit(root, b'/')
    # explicit stack of (fs dir path, rel dir path, sorted names, next index)
    stack = []
    if children:
        base = root if root.endswith(b'/') else root + b'/'
        stack.append((base, b'/', children, [0]))
    while stack:
        fsdir, reldir, names, idx = stack[-1]
        i = idx[0]
        if i >= len(names):
            stack.pop()
            continue
        idx[0] = i + 1
        name = names[i]
        fs = fsdir + name
        rel = reldir + name
        sub = emit(fs, rel)
        if sub:
            stack.append((fs + b'/', rel + b'/', sub, [0]))
    try:
        out.flush()
    except BrokenPipeError:
        os._exit(1)
    if failed:
        sys.stderr.write('ovlwalk: %d error(s)\n' % failed)
        return 1
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:
        try:
            sys.stdout = None
        finally:
            os._exit(1)
