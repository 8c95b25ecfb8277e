import Foundation
import Testing

/// One case per check that the kernel-facing tests do not reach: the check's name in the
/// JSON report, and the exit statuses of -n, then -p, then -y run one after the other; a
/// last -n must then be clean (0) or show only what nothing offline repairs.
@Suite struct FsckChecksTests {
  struct Case: Sendable, CustomTestStringConvertible {
    var check: String
    /// Shell run in the case dir; `l`, `l2`, `u`, `w` exist.
    var setup: String
    var options: String = ""
    var lower: String = "l"
    var statuses: (check: Int32, preen: Int32, yes: Int32)
    var finalStatus: Int32 = 0
    var testDescription: String { check }
  }

  static let handle = "00fb1d0001000000000000000000000000000000000bc0fb00d6a7243f"

  static let cases: [Case] = [
    Case(check: "invalid-opaque", setup: "mkdir l/d u/d; setfattr -n trusted.overlay.opaque -v yes u/d", statuses: (4, 1, 0)),
    Case(check: "invalid-impure", setup: "mkdir l/d; touch l/d/f; mkdir u/d; touch u/d/f; setfattr -n trusted.overlay.origin -v 0x u/d/f; setfattr -n trusted.overlay.impure -v 1 u/d",
      statuses: (4, 1, 0)),
    Case(check: "invalid-nlink", setup: "touch u/f; setfattr -n trusted.overlay.nlink -v X+1 u/f", statuses: (4, 1, 0)),
    Case(check: "invalid-protattr", setup: "touch u/f; setfattr -n trusted.overlay.protattr -v z u/f", statuses: (4, 1, 0)),
    Case(check: "invalid-metacopy", setup: "echo data > l/f; truncate -s 5 u/f; setfattr -n trusted.overlay.metacopy -v 0x0105 u/f",
      statuses: (4, 4, 1)),
    Case(check: "aufs-whiteout", setup: "touch u/.wh.gone", statuses: (0, 0, 0)),
    Case(check: "unmarked-xattr-whiteout", setup: "touch l2/f; : > l/f; setfattr -n trusted.overlay.whiteout -v '' l/f", lower: "l:l2",
      statuses: (0, 0, 0)),
    Case(check: "upper-xattr-whiteout", setup: "touch l/f; : > u/f; setfattr -n trusted.overlay.whiteout -v '' u/f", statuses: (4, 1, 0)),
    // An origin of another lower inode, which no longer exists: the kernel deletes the entry.
    Case(check: "index-entry", setup: "mkdir w/index; touch w/index/\(handle); setfattr -n trusted.overlay.origin -v 0x\(handle.dropLast(2))00 w/index/\(handle)",
      options: "index=on", statuses: (0, 1, 0)),
    // A truncated origin reads as none (`ovl_get_fh`): the mount fails with ENODATA.
    Case(check: "index-without-origin", setup: "mkdir w/index; touch w/index/\(handle); setfattr -n trusted.overlay.origin -v 0x00fb1d0001 w/index/\(handle)",
      options: "index=on", statuses: (4, 1, 0)),
    Case(check: "index-entry", setup: "mkdir -p w/index/\(handle)", options: "index=on,nfs_export=on", statuses: (4, 1, 0)),
    Case(check: "index-entry", setup: "mkdir w/index; touch w/index/\(handle); setfattr -n trusted.overlay.origin -v 0x\(handle) w/index/\(handle); setfattr -n trusted.overlay.nlink -v U-1 w/index/\(handle)",
      options: "index=on", statuses: (0, 1, 0)),
    Case(check: "index-without-origin", setup: "mkdir w/index; touch w/index/\(handle)", options: "index=on", statuses: (4, 1, 0)),
    Case(check: "layer-identity", setup: "mkdir w/index; setfattr -n trusted.overlay.upper -v 0x00fb1d04010000000000000000000000000000000001000000aaaaaaaa w/index",
      options: "index=on", statuses: (4, 1, 0)),
    Case(check: "invalid-uuid", setup: "setfattr -n trusted.overlay.uuid -v 0x0102 u", statuses: (0, 1, 0)),
    Case(check: "incompat-volatile", setup: "mkdir -p w/work/incompat/frob", statuses: (4, 4, 1)),
    Case(check: "work-leftover", setup: "mkdir -p 'w/work/#1/a/b'", statuses: (4, 1, 0)),
    Case(check: "missing-whiteout", setup: "mkdir -p l/a/b; mkdir u/x; setfattr -n trusted.overlay.redirect -v /a/b u/x", statuses: (4, 4, 4),
      finalStatus: 4),
  ]

  @Test(.enabled(if: getuid() == 0, "needs root (trusted xattrs)"), arguments: cases)
  func check(_ c: Case) throws {
    let dir = Harness.TempDir("fsckc")
    let made = Harness.run(["/bin/sh", "-c", "set -e; cd \"$1\"; mkdir l l2 u w\n" + c.setup, "sh", dir.path])
    try #require(made.status == 0, "setup: \(made.stderr)")
    let lowers = c.lower.split(separator: ":").map { dir.path + "/" + $0 }.joined(separator: ":")
    let options = "lowerdir=\(lowers),upperdir=\(dir.path)/u,workdir=\(dir.path)/w" + (c.options.isEmpty ? "" : "," + c.options)
    func fsck(_ args: [String]) -> Harness.Result { Harness.run([FsckSupport.binary, "fsck", "-o", options] + args) }
    let report = fsck(["-n", "--json"])
    let object = try JSONSerialization.jsonObject(with: report.stdout) as? [String: Any]
    let checks = (object?["findings"] as? [[String: Any]] ?? []).compactMap { $0["check"] as? String }
    #expect(checks.contains(c.check), "\(checks) \(report.out)\(report.stderr)")
    #expect(report.status == c.statuses.check, "-n: \(report.out)")
    let preen = fsck(["-p"])
    #expect(preen.status == c.statuses.preen, "-p: \(preen.out)\(preen.stderr)")
    let yes = fsck(["-y"])
    #expect(yes.status == c.statuses.yes, "-y: \(yes.out)\(yes.stderr)")
    let last = fsck(["-n"])
    #expect(last.status == c.finalStatus, "last -n: \(last.out)\(last.stderr)")
  }
}
