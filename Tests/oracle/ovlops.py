#!/usr/bin/env python3
"""Runs an ovltool apply-script through a kernel overlay mount: the oracle of the
namespace tests and the baseline of `make bench`.

usage: ovlops.py MOUNTPOINT SCRIPT [--stop]

Each line is one command with the syntax of `ovltool apply-script` (shlex: quotes,
backslashes, '#' comments); it is done with the system calls the command names, on
MOUNTPOINT/PATH. A failing line prints "LINE ERRNO-NAME" on stdout; the run goes on (or
stops with --stop). Exit 0 unless the script itself is bad.
"""
import errno
import os
import shlex
import stat
import sys


def enc(text):
    return text.encode("utf-8", "surrogateescape")


def mode_of(text):
    return int(text, 8)


def time_ns(text):
    text = text[1:] if text.startswith("@") else text
    if "." in text:
        s, f = text.split(".")
        return int(s) * 1_000_000_000 + int(f.ljust(9, "0"))
    return int(text) * 1_000_000_000


def options(args, flags, valued):
    got, values, operands = set(), {}, []
    i, done = 0, False
    while i < len(args):
        a = args[i]
        if not done and a == "--":
            done = True
        elif not done and len(a) > 1 and a.startswith("-"):
            if a in valued:
                i += 1
                values[a] = args[i]
            elif a in flags:
                got.add(a)
            else:
                for c in a[1:]:
                    got.add("-" + c)
        else:
            operands.append(a)
        i += 1
    return got, values, operands


class Runner:
    def __init__(self, root):
        self.root = root.encode() if isinstance(root, str) else root

    def p(self, path):
        return self.root + b"/" + enc(path).lstrip(b"/")

    def rm_tree(self, path):
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(path)):
                self.rm_tree(path + b"/" + name)
            os.rmdir(path)
        else:
            os.unlink(path)

    def check_parents(self, path):
        """ovltool resolves merged paths without following symlinks: a symlink (or a
        non-directory) on the way is ELOOP (ENOTDIR); a missing parent ENOENT."""
        parts = [c for c in path.split("/") if c and c != "."]
        for i in range(1, len(parts)):
            st = os.lstat(self.p("/".join(parts[:i])))
            if stat.S_ISLNK(st.st_mode):
                raise OSError(errno.ELOOP, "symlink on the way")
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, "not a directory")

    def copy_tree(self, src, dst):
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(dst, 0o700)
            for name in sorted(os.listdir(src)):
                self.copy_tree(src + b"/" + name, dst + b"/" + name)
        elif stat.S_ISREG(st.st_mode):
            with open(src, "rb") as f, open(dst, "xb") as g:
                g.write(f.read())
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        else:
            os.mknod(dst, st.st_mode, st.st_rdev)
        os.lchown(dst, st.st_uid, st.st_gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(dst, stat.S_IMODE(st.st_mode))
            for name in os.listxattr(src, follow_symlinks=False):
                os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        os.utime(dst, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)

    def run(self, words):
        cmd, args = words[0], words[1:]
        paths = {"rm": None, "mkdir": None, "symlink": [1], "mv": [0, 1], "ln": [0, 1], "chmod": [1], "chown": [1],
                 "setxattr": [2], "rmxattr": [1]}
        _, _, operands = options(args, {"-r", "-R", "-f", "-d", "-p"}, {"-m", "--owner", "--mtime"})
        if cmd in ("rm", "mkdir"):
            checked = [] if cmd == "mkdir" and "-p" in args else operands
        elif cmd in ("put", "touch"):
            checked = operands[-1:]
        elif cmd == "mknod":
            checked = operands[:1]
        else:
            checked = [args[i] for i in paths.get(cmd) or [] if i < len(args)]
        for path in checked:
            if not (cmd == "rm" and "-f" in args and not os.path.lexists(self.p(path))):
                self.check_parents(path)
            if cmd == "ln" and path == checked[0]:
                os.lstat(self.p(path))  # linkat looks the source up before the new name's parent
        if cmd == "rm":
            flags, _, paths = options(args, {"-r", "-R", "-f", "-d"}, set())
            for path in paths:
                full = self.p(path)
                try:
                    st = os.lstat(full)
                except FileNotFoundError:
                    if "-f" in flags:
                        continue
                    raise
                if stat.S_ISDIR(st.st_mode):
                    if "-r" in flags or "-R" in flags:
                        self.rm_tree(full)
                    elif "-d" in flags:
                        os.rmdir(full)
                    else:
                        raise OSError(errno.EISDIR, "is a directory")
                else:
                    os.unlink(full)
        elif cmd == "mkdir":
            flags, values, paths = options(args, {"-p"}, {"-m"})
            mode = mode_of(values["-m"]) if "-m" in values else None
            for path in paths:
                if "-p" in flags:
                    parts = [c for c in path.split("/") if c and c != "."]
                    for i in range(1, len(parts) + 1):
                        sub = self.p("/".join(parts[:i]))
                        try:
                            st = os.lstat(sub)
                            if not stat.S_ISDIR(st.st_mode):
                                raise OSError(errno.EEXIST, "exists")
                            continue
                        except FileNotFoundError:
                            pass
                        os.mkdir(sub, 0o777)
                        if mode is not None and i == len(parts):
                            os.chmod(sub, mode)
                else:
                    os.mkdir(self.p(path), 0o777)
                    if mode is not None:
                        os.chmod(self.p(path), mode)
        elif cmd == "put":
            _, values, (src, path) = options(args, set(), {"-m", "--owner", "--mtime"})
            full = self.p(path)
            try:
                st = os.lstat(full)
                if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                    raise OSError(errno.EINVAL, "not a regular file")
            except FileNotFoundError:
                pass
            with open(enc(src), "rb") as f:
                data = f.read()
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
            try:
                os.write(fd, data)
                if "--owner" in values:
                    u, g = values["--owner"].split(":")
                    os.fchown(fd, int(u), int(g))
                if "-m" in values:
                    os.fchmod(fd, mode_of(values["-m"]))
                if "--mtime" in values:
                    t = time_ns(values["--mtime"])
                    os.utime(fd, ns=(t, t))
            finally:
                os.close(fd)
        elif cmd == "symlink":
            os.symlink(enc(args[0]), self.p(args[1]))
        elif cmd == "mknod":
            _, values, operands = options(args, set(), {"-m"})
            path, kind = operands[0], operands[1]
            kinds = {"p": stat.S_IFIFO, "c": stat.S_IFCHR, "b": stat.S_IFBLK}
            dev = os.makedev(int(operands[2]), int(operands[3])) if kind != "p" else 0
            os.mknod(self.p(path), kinds[kind] | 0o666, dev)
            if "-m" in values:
                os.chmod(self.p(path), mode_of(values["-m"]))
        elif cmd == "mv":
            copy = "--copy" in args
            src, dst = [a for a in args if a != "--copy"]
            try:
                os.rename(self.p(src), self.p(dst))
            except OSError as e:
                if not copy or e.errno != errno.EXDEV:
                    raise
                # What mv(1) does after EXDEV: replace an (empty) destination, copy with
                # modes, owners, xattrs and times, remove the source.
                if os.path.lexists(self.p(dst)):
                    os.rmdir(self.p(dst))
                self.copy_tree(self.p(src), self.p(dst))
                self.rm_tree(self.p(src))
        elif cmd == "ln":
            os.link(self.p(args[0]), self.p(args[1]), follow_symlinks=False)
        elif cmd == "chmod":
            full = self.p(args[1])
            if stat.S_ISLNK(os.lstat(full).st_mode):
                raise OSError(errno.EOPNOTSUPP, "symlink")
            os.chmod(full, mode_of(args[0]))
        elif cmd == "chown":
            parts = args[0].split(":")
            uid = int(parts[0]) if parts[0] else -1
            gid = int(parts[1]) if len(parts) > 1 and parts[1] else -1
            os.lchown(self.p(args[1]), uid, gid)
        elif cmd == "touch":
            _, values, (path,) = options(args, set(), {"-d"})
            if "-d" in values:
                t = time_ns(values["-d"])
                os.utime(self.p(path), ns=(t, t), follow_symlinks=False)
            else:
                os.utime(self.p(path), follow_symlinks=False)
        elif cmd == "setxattr":
            name, value, path = args
            value = bytes.fromhex(value[2:]) if value.startswith("0x") else enc(value)
            os.setxattr(self.p(path), enc(name), value, follow_symlinks=False)
        elif cmd == "rmxattr":
            os.removexattr(self.p(args[1]), enc(args[0]), follow_symlinks=False)
        else:
            raise SystemExit("unknown command " + cmd)


def main():
    root, script = sys.argv[1], sys.argv[2]
    stop = "--stop" in sys.argv[3:]
    runner = Runner(root)
    with open(script, "rb") as f:
        lines = f.read().split(b"\n")
    for number, line in enumerate(lines, 1):
        words = shlex.split(line.decode("utf-8", "surrogateescape"), comments=True, posix=True)
        if not words:
            continue
        try:
            runner.run(words)
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e.errno))
            print(number, "EOPNOTSUPP" if name == "ENOTSUP" else name)
            if stop:
                break
    sys.stdout.flush()


if __name__ == "__main__":
    main()
