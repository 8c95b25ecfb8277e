import Foundation
import Testing

/// fsck.overlay's command line (argv[0] dispatch) and `ovltool fsck`: exit statuses as
/// fsck(8), unknown -o keys ignored, the mounted-layer refusal, the JSON report.
@Suite struct FsckCLITests {
  func layers(_ dir: Harness.TempDir) throws {
    for d in ["l", "l2", "u", "w"] { try FileManager.default.createDirectory(atPath: dir.path + "/" + d, withIntermediateDirectories: true) }
  }

  static let usageCases: [([String], Int32)] = [
    (["-V"], 0),
    (["-h"], 16),
    (["--help"], 16),
    (["-a"], 16),
    (["-o", "upperdir=U,workdir=W"], 16),  // no lowerdir
    (["-o", "lowerdir=L,upperdir=U"], 16),  // upper without workdir
    (["-o", "lowerdir=L"], 16),  // one lower, no upper
    (["-o", "lowerdir=L:L2,upperdir=U,workdir=W", "-p", "-n"], 16),
    (["-o", "lowerdir=L,upperdir=U,workdir=W", "-o"], 16),
  ]

  @Test(arguments: usageCases)
  func fsckOverlayUsage(_ args: [String], _ status: Int32) throws {
    let dir = Harness.TempDir("fsckcli")
    try layers(dir)
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let expanded = args.map {
      $0.replacingOccurrences(of: "L2", with: dir.path + "/l2").replacingOccurrences(of: "L", with: dir.path + "/l")
        .replacingOccurrences(of: "U", with: dir.path + "/u").replacingOccurrences(of: "W", with: dir.path + "/w")
    }
    let r = Harness.run([fsck] + expanded)
    #expect(r.status == status, "\(expanded): \(r.out)\(r.stderr)")
  }

  @Test func unknownKeysAreIgnoredAndMissingPathsAreOperational() throws {
    let dir = Harness.TempDir("fsckcli")
    try layers(dir)
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let base = ["-o", "lowerdir=\(dir.path)/l", "-o", "upperdir=\(dir.path)/u", "-o", "workdir=\(dir.path)/w"]
    // xfstests passes its mount options through.
    let r = Harness.run([fsck] + base + ["-o", "index=on,nfs_export=on,redirect_dir=on,xino=on,frobnicate=7,noatime", "-n"])
    #expect(r.status == 0, "\(r.out)\(r.stderr)")
    // A combination the kernel refuses is dropped, not refused: fsck.overlay ignored it.
    let conflicting = Harness.run([fsck] + base + ["-o", "metacopy=on,nfs_export=on", "-n"])
    #expect(conflicting.status == 0, "\(conflicting.stderr)")
    let missing = Harness.run([fsck, "-o", "lowerdir=\(dir.path)/nonexistent", "-o", "upperdir=\(dir.path)/u", "-o", "workdir=\(dir.path)/w", "-n"])
    #expect(missing.status == 8)
    #expect(missing.stderr.contains("nonexistent"))
    // Sibling upper and "upperwork" dirs are fine (fsck.overlay's substring test refused them).
    try FileManager.default.createDirectory(atPath: dir.path + "/uwork", withIntermediateDirectories: true)
    let siblings = Harness.run([fsck, "-o", "lowerdir=\(dir.path)/l,upperdir=\(dir.path)/u,workdir=\(dir.path)/uwork", "-n"])
    #expect(siblings.status == 0, "\(siblings.stderr)")
    let nested = Harness.run([fsck, "-o", "lowerdir=\(dir.path)/l,upperdir=\(dir.path)/u,workdir=\(dir.path)/u/w2", "-n"])
    #expect(nested.status == 8 || nested.status == 16, "\(nested.stderr)")
  }

  @Test func ovltoolFsckUsageAndJSON() throws {
    let dir = Harness.TempDir("fsckcli")
    try layers(dir)
    let opts = "lowerdir=\(dir.path)/l,upperdir=\(dir.path)/u,workdir=\(dir.path)/w"
    #expect(Harness.run([FsckSupport.binary, "fsck", "-o", opts, "-n", "-y"]).status == 16)
    #expect(Harness.run([FsckSupport.binary, "fsck", "-o", "lowerdir=\(dir.path)/l"]).status == 16)
    let clean = Harness.run([FsckSupport.binary, "fsck", "-o", opts, "-n", "--json"])
    #expect(clean.status == 0)
    #expect(clean.out.contains(#""findings":[]"#) && clean.out.contains(#""exit":0"#), "\(clean.out)")
  }

  @Test(.enabled(if: getuid() == 0, "needs root (mknod)"))
  func jsonReportNamesLayerPathAndOutcome() throws {
    let dir = Harness.TempDir("fsckcli")
    try layers(dir)
    #expect(Harness.run(["/bin/sh", "-c", "mknod \"$1/u/orphan\" c 0 0", "sh", dir.path]).status == 0)
    let opts = "lowerdir=\(dir.path)/l,upperdir=\(dir.path)/u,workdir=\(dir.path)/w"
    let checked = Harness.run([FsckSupport.binary, "fsck", "-o", opts, "-n", "--json"])
    #expect(checked.status == 4)
    let object = try JSONSerialization.jsonObject(with: checked.stdout) as? [String: Any]
    let findings = object?["findings"] as? [[String: Any]] ?? []
    #expect(findings.count == 1)
    #expect(findings.first?["check"] as? String == "orphan-whiteout")
    #expect(findings.first?["path"] as? String == "/orphan")
    #expect((findings.first?["layer"] as? String)?.hasPrefix("upperdir") == true)
    let repaired = Harness.run([FsckSupport.binary, "fsck", "-o", opts, "--repair"])
    #expect(repaired.status == 1, "\(repaired.out)")
    #expect(repaired.out.contains("/orphan") && repaired.out.contains("repaired"))
    #expect(Harness.run([FsckSupport.binary, "fsck", "-o", opts, "-n"]).status == 0)
  }

  /// A mounted overlay using the upper dir: repairs are refused (8); -n still checks. Found
  /// by device and inode, so a relative-path mount counts too.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"))
  func mountedUpperRefusesRepair() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("fsckcli")
    try layers(dir)
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let script = """
      cd "$1"; mkdir m; mount -t overlay overlay -o lowerdir=l,upperdir=u,workdir=w m
      "$2" -o lowerdir="$1/l" -o upperdir="$1/u" -o workdir="$1/w" -p; echo "p=$?"
      "$2" -o lowerdir="$1/l" -o upperdir="$1/u" -o workdir="$1/w" -n; echo "n=$?"
      mknod l/orphan c 0 0
      "$2" -o lowerdir="$1/l" -o upperdir="$1/l2" -o workdir="$1/w2" -p; echo "lowerused=$?"
      [ -c l/orphan ] && echo kept
      umount m
      """
    try FileManager.default.createDirectory(atPath: dir.path + "/w2", withIntermediateDirectories: true)
    let r = Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh", dir.path, fsck])
    #expect(r.out.contains("p=8"), "\(r.out)\(r.stderr)")
    #expect(r.out.contains("n=0"), "\(r.out)\(r.stderr)")
    // A lower shared with a mounted overlay is checked, never changed: left uncorrected.
    #expect(r.out.contains("lowerused=4") && r.out.contains("kept"), "\(r.out)\(r.stderr)")
  }
}
