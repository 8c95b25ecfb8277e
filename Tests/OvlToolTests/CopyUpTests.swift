import Foundation
import Testing

/// copy-up: crash safety at every step, hostile and failing layers. Each case that mounts or
/// needs a small filesystem runs in a private mount namespace.
@Suite(.serialized) struct CopyUpTests {
  static let binary = Harness.repository + "/.build/debug/ovltool"

  static let spec = """
    [upper]
    dir /keep
    [lower l1]
    dir /a/b mode=0750
    file /a/b/f "hello" mode=4755 xattr.user.k=v
    file /a/b/big size=300000
    symlink /a/link target
    file /hl "linked"
    link /hl2 /hl
    """

  func inNamespace(_ script: String, _ args: [String] = []) -> Harness.Result {
    Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh"] + args)
  }

  /// The view without directory mtimes (a crash after publishing can leave a parent's mtime
  /// not yet restored, as the kernel's own copy-up can).
  func viewWithoutDirectoryTimes(_ options: String) -> [String] {
    guard case .success(let lines) = Harness.ovltoolView(options) else { return ["refused"] }
    return lines.map { line in
      guard line.contains(#""type":"dir""#), let r = line.range(of: #","mtime":[0-9]+"#, options: .regularExpression) else { return line }
      return line.replacingCharacters(in: r, with: "")
    }
  }

  /// A copy-up killed before each of its writes (`OVLTOOL_FAULT=N`, N = 1, 2, … until it
  /// completes): ovltool's view is unchanged, at most one temp is left in the work dir, the
  /// kernel mounts the stack and shows the same view, and the copy-up run again completes.
  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"), arguments: ["", "index=on"])
  func everyCrashPointMountsWithTheSameView(_ extra: String) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    for path in ["/a/b/f", "/a/link", "/hl"] {
      var crashes = 0
      for n in 1...200 {
        let dir = Harness.TempDir("crash")
        var options = try Harness.build(Self.spec, in: dir)
        if !extra.isEmpty { options += "," + extra }
        let before = viewWithoutDirectoryTimes(options)
        let r = Harness.run([Self.binary, "copy-up", "-o", options, path], environment: ["OVLTOOL_FAULT": String(n)])
        if r.status == 0 { break }
        crashes += 1
        let at = "\(path) [\(extra)] killed before write \(n)"
        #expect(r.status == SIGKILL, "\(at): \(r.stderr)")
        #expect(viewWithoutDirectoryTimes(options) == before, "\(at): ovltool's view changed")
        let leftovers = Harness.run(["/bin/sh", "-c", "find \"$0\"/work/work \"$0\"/work/index -mindepth 1 -maxdepth 1 -name '#*' 2>/dev/null | wc -l", dir.path + "/stack"])
        #expect(Int(leftovers.out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 9 <= 1, "\(at): temps left")
        let kernel = Harness.kernelView(options, in: dir)
        #expect(kernel.lines != nil, "\(at): the kernel refuses the stack: \(kernel.mountError)")
        Harness.compare(Harness.ovltoolView(options), kernel, spec: at)
        let again = Harness.run([Self.binary, "copy-up", "-o", options, path])
        #expect(again.status == 0, "\(at): rerun: \(again.stderr)")
      }
      #expect(crashes >= 2, "\(path): \(crashes) writes to crash at")
      print("crash sweep: copy-up \(path) [\(extra)]: \(crashes) writes, each crashed and checked")
    }
  }

  @Test func symlinksInLayersAreNeverFollowed() throws {
    let dir = Harness.TempDir("hostile")
    let options = try Harness.build("""
      [upper]
      symlink /d /tmp
      [lower l1]
      symlink /etc /etc
      dir /d
      file /d/f "f"
      """, in: dir)
    for path in ["/etc/passwd", "/d/f"] {
      let r = Harness.run([Self.binary, "copy-up", "-o", options, path])
      #expect(r.status == 1, "\(path)")
      #expect(r.stderr.contains("not a directory"), "\(path): \(r.stderr)")
    }
    let upper = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/stack/upper")
    #expect(upper == ["d"])
  }

  @Test func missingWorkDirAndPathsAreErrors() throws {
    let dir = Harness.TempDir("bad")
    let options = try Harness.build("[upper]\n[lower l1]\nfile /f \"f\"\n", in: dir)
    let noWork = Harness.run([Self.binary, "copy-up", "-o", options.replacingOccurrences(of: "workdir=", with: "workdir=/nonexistent"), "/f"])
    #expect(noWork.status == 2)
    #expect(noWork.stderr.contains("No such file or directory"))
    let missing = Harness.run([Self.binary, "copy-up", "-o", options, "/nothere", "/f"])
    #expect(missing.status == 1)
    #expect(missing.stderr.contains("/nothere"))
    #expect(missing.out.contains("/f: copied"))
    let again = Harness.run([Self.binary, "copy-up", "--json", "-o", options, "/f"])
    #expect(again.status == 0)
    #expect(again.out == #"{"path":"/f","result":"already-upper"}"# + "\n")
    let metacopy = Harness.run([Self.binary, "copy-up", "--metacopy", "-o", options, "/f"])
    #expect(metacopy.status == 2)
    #expect(metacopy.stderr.contains("metacopy=on"))
  }

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and mount namespaces"))
  func readOnlyUpperAndFullFilesystem() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("nospace")
    let lower = dir.path + "/lower"
    try FileManager.default.createDirectory(atPath: lower + "/d", withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: lower + "/d/big", contents: Data(repeating: 7, count: 2 << 20))
    FileManager.default.createFile(atPath: lower + "/small", contents: Data("s".utf8))
    FileManager.default.createFile(atPath: lower + "/other", contents: Data("o".utf8))
    let r = inNamespace("""
      set -e
      cd "$1"; mkdir small-fs; mount -t tmpfs -o size=1m tmpfs small-fs; mkdir small-fs/u small-fs/w
      o="lowerdir=$1/lower,upperdir=$1/small-fs/u,workdir=$1/small-fs/w"
      "$2" copy-up -o "$o" /small >/dev/null
      set +e
      "$2" copy-up -o "$o" /d/big 2>&1; echo "status=$?"
      ls -a small-fs/u small-fs/u/d small-fs/w/work
      mount -o remount,ro small-fs
      "$2" copy-up -o "$o" /other 2>&1; echo "status=$?"
      umount small-fs
      """, [dir.path, Self.binary])
    // ENOSPC names the path; the parent dir may be up, the file is not, no temp is left.
    #expect(r.out.contains("No space left on device"), "\(r.out)\(r.stderr)")
    #expect(r.out.contains("status=1"))
    #expect(!r.out.contains("big\n"))
    #expect(!r.out.contains("#"))
    #expect(r.out.contains("Read-only file system"))
  }

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"))
  func layersOfAMountedOverlayAreRefused() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("mounted")
    let options = try Harness.build(Self.spec, in: dir)
    let r = inNamespace("""
      mkdir "$1/m"; mount -t overlay overlay -o "$2" "$1/m" || exit 3
      "$3" copy-up -o "$2" /a/b/f; echo "status=$?"
      umount "$1/m"
      """, [dir.path, options, Self.binary])
    #expect(r.out.contains("status=2"), "\(r.out) \(r.stderr)")
    #expect(r.stderr.contains("in use by the overlay mounted at"), "\(r.stderr)")
  }
}
