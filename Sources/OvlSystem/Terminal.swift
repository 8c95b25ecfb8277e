import Glibc

/// Whether descriptor `fd` is a terminal (fsck asks questions and shows progress only
/// there). The corresponding C function is `isatty`.
public func isTerminal(_ fd: Int32) -> Bool { Glibc.isatty(fd) == 1 }
