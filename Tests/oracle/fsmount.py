#!/usr/bin/env python3
"""Mounts an overlay through the new mount API (fsopen/fsconfig/fsmount/move_mount), for
option forms mount(8) cannot pass: `lowerdir+=`, `datadir+=`, layers given by descriptor.

usage: fsmount.py MOUNTPOINT KEY=VALUE...   (VALUE "@PATH" passes PATH as a descriptor;
                                            KEY alone sets a flag)
Relative paths are resolved by the kernel against this process's working directory."""
import ctypes, os, sys

libc = ctypes.CDLL(None, use_errno=True)
SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_move_mount = 430, 431, 432, 429
FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_SET_FD, FSCONFIG_CMD_CREATE = 0, 1, 5, 6
MOVE_MOUNT_F_EMPTY_PATH = 4


def check(result, what):
    if result < 0:
        e = ctypes.get_errno()
        sys.exit(f"fsmount.py: {what}: {os.strerror(e)}")
    return result


def main():
    target, settings = sys.argv[1], sys.argv[2:]
    fs = check(libc.syscall(SYS_fsopen, b"overlay", 1), "fsopen")
    for setting in settings:
        key, _, value = setting.partition("=")
        if not _:
            check(libc.syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, key.encode(), None, 0), setting)
        elif value.startswith("@"):
            fd = os.open(value[1:], os.O_PATH | os.O_DIRECTORY)
            check(libc.syscall(SYS_fsconfig, fs, FSCONFIG_SET_FD, key.encode(), None, fd), setting)
        else:
            check(libc.syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, key.encode(), value.encode(), 0), setting)
    check(libc.syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, None, None, 0), "create")
    mfd = check(libc.syscall(SYS_fsmount, fs, 1, 0), "fsmount")
    check(libc.syscall(SYS_move_mount, mfd, b"", -100, target.encode(), MOVE_MOUNT_F_EMPTY_PATH), "move_mount")


main()
