import Foundation
import OvlCheck
import OvlStack
import OvlSystem
import Testing

/// The scenarios of xfstests overlay/045 (whiteouts), overlay/046 (redirect dirs) and
/// overlay/056 (impure), run through `fsck.overlay` (argv[0] dispatch) with the same
/// command line the xfstests helper uses, with the exit codes and trees those tests expect.
@Suite struct FsckOverlayParityTests {
  struct Case: Sendable, CustomTestStringConvertible {
    var label: String
    /// Shell run in the case's dir; `l`, `l2`, `u`, `w` exist and are empty.
    var setup: String
    var lower: String = "l"
    /// fsck.overlay arguments after the -o options; run in order, each with its expected status.
    var runs: [(args: [String], status: Int32)]
    /// Shell that must exit 0 afterwards.
    var expect: String
    var testDescription: String { label }
  }

  /// Shell helpers the cases use (the xfstests ones, in a few lines).
  static let prelude = """
    set -e
    wh() { for a in "$@"; do mknod "$a" c 0 0; done; }
    opq() { mkdir -p "$1"; setfattr -n trusted.overlay.opaque -v y "$1"; }
    rd() { mkdir -p "$1"; setfattr -n trusted.overlay.redirect -v "$2" "$1"; }
    isw() { for a in "$@"; do [ "$(stat -c %F:%t,%T "$a")" = "character special file:0,0" ] || { echo "not a whiteout: $a"; exit 1; }; done; }
    empty() { [ -z "$(ls -A "$1")" ] || { echo "not empty: $1: $(ls -A "$1")"; exit 1; }; }
    xval() { getfattr --absolute-names --only-values -n "trusted.overlay.$2" "$1" 2>/dev/null; }
    nox() { [ -z "$(getfattr --absolute-names -d -m "trusted.overlay.$2" "$1" 2>/dev/null)" ] || { echo "$1 still has $2"; exit 1; }; }

    """

  static let cases: [Case] = [
    // overlay/045
    Case(label: "045 orphan whiteouts in lower and upper", setup: "wh l/foo u/foo u/bar",
      runs: [(["-p"], 1)], expect: "empty l; empty u"),
    Case(label: "045 valid whiteouts", setup: "touch l2/foo l2/bar; wh u/foo l/bar", lower: "l:l2",
      runs: [(["-p"], 0)], expect: "isw u/foo l/bar"),
    Case(label: "045 whiteout in an opaque dir", setup: "mkdir l/testdir; touch l/testdir/foo; opq u/testdir; wh u/testdir/foo",
      runs: [(["-p"], 1)], expect: "empty u/testdir"),
    Case(label: "045 whiteouts whose parent does not merge",
      setup: """
        mkdir l2/testdir1 l2/testdir2 l2/testdir3; touch l2/testdir1/foo l2/testdir2/foo l2/testdir3/foo
        mkdir u/testdir1 u/testdir2 u/testdir3 u/testdir4; touch l/testdir1; wh l/testdir2; opq l/testdir3
        wh u/testdir1/foo u/testdir2/foo u/testdir3/foo u/testdir4/foo
        """, lower: "l:l2",
      runs: [(["-p"], 1)], expect: "empty u/testdir1; empty u/testdir2; empty u/testdir3; empty u/testdir4"),
    Case(label: "045 whiteout in a redirect dir", setup: "mkdir l/testdir l/origin; touch l/testdir/foo; rd u/testdir origin; wh u/testdir/foo",
      runs: [(["-p"], 1)], expect: "empty u/testdir"),
    Case(label: "045 valid whiteout in a redirect dir", setup: "mkdir l/origin; touch l/origin/foo; rd u/testdir origin; wh u/testdir/foo",
      runs: [(["-p"], 1)], expect: "isw u/testdir/foo"),
    Case(label: "045 valid whiteout under a middle-layer redirect",
      setup: "mkdir -p l2/origin/subdir; touch l2/origin/subdir/foo; rd l/testdir origin; mkdir -p u/testdir/subdir; wh u/testdir/subdir/foo",
      lower: "l:l2", runs: [(["-p"], 1)], expect: "isw u/testdir/subdir/foo"),
    Case(label: "045 whiteout in an opaque subdir of a redirect dir",
      setup: "mkdir -p l/origin/subdir; touch l/origin/subdir/foo; rd u/testdir origin; opq u/testdir/subdir; wh u/testdir/subdir/foo",
      runs: [(["-p"], 1)], expect: "empty u/testdir/subdir"),
    Case(label: "045 valid whiteout in a redirect subdir of an opaque dir",
      setup: "mkdir l/origin; touch l/origin/foo; opq u/testdir; rd u/testdir/subdir /origin; wh u/testdir/subdir/foo",
      runs: [(["-p"], 1)], expect: "isw u/testdir/subdir/foo"),
    // overlay/046
    Case(label: "046 redirect to nothing", setup: "rd u/testdir invalid",
      runs: [(["-p"], 1)], expect: "nox u/testdir redirect"),
    Case(label: "046 redirect to a file", setup: "touch l/origin; rd u/testdir origin",
      runs: [(["-p"], 1)], expect: "nox u/testdir redirect"),
    Case(label: "046 valid redirect", setup: "mkdir l/origin; wh u/origin; rd u/testdir origin",
      runs: [(["-p"], 1)], expect: "[ \"$(xval u/testdir redirect)\" = origin ]"),
    Case(label: "046 valid absolute redirect", setup: "mkdir l/origin; wh u/origin; rd u/testdir1/testdir2 /origin",
      runs: [(["-p"], 1)], expect: "[ \"$(xval u/testdir1/testdir2 redirect)\" = /origin ]"),
    Case(label: "046 missing whiteout (counted under -n too)", setup: "mkdir l/origin; rd u/testdir origin",
      runs: [(["-n"], 4), (["-p"], 1), (["-n"], 0)], expect: "[ \"$(xval u/testdir redirect)\" = origin ]; isw u/origin"),
    Case(label: "046 redirects exchanged by rename", setup: "mkdir l/testdir1 l/testdir2; rd u/testdir1 testdir2; rd u/testdir2 testdir1",
      runs: [(["-p"], 1)], expect: "[ \"$(xval u/testdir1 redirect)\" = testdir2 ]; [ \"$(xval u/testdir2 redirect)\" = testdir1 ]"),
    Case(label: "046 invalid redirect over a lower dir: -y makes it opaque", setup: "mkdir l/testdir; rd u/testdir invalid",
      runs: [(["-y"], 1)], expect: "nox u/testdir redirect; [ \"$(xval u/testdir opaque)\" = y ]"),
    Case(label: "046 duplicate redirects", setup: "mkdir l2/origin; rd l/testdir1 origin; rd l/testdir2 origin; rd u/testdir3 origin",
      lower: "l:l2", runs: [(["-p"], 4), (["-y"], 1)],
      expect: "[ \"$(xval l/testdir1 redirect)\" != \"$(xval l/testdir2 redirect)\" ]; nox u/testdir3 redirect"),
    Case(label: "046 redirect duplicating a merge dir", setup: "mkdir l/origin u/origin; rd u/testdir origin",
      runs: [(["-p"], 4), (["-y"], 1)], expect: "nox u/testdir redirect"),
    Case(label: "046 duplicate and invalid with a lower dir of the same name", setup: "mkdir l/origin l/testdir u/origin; rd u/testdir invalid",
      runs: [(["-y"], 1)], expect: "nox u/testdir redirect; [ \"$(xval u/testdir opaque)\" = y ]"),
    // overlay/056 (the kernel-made case is in FsckKernelTests)
    Case(label: "056 missing impure over a redirect dir", setup: "mkdir l/origin; rd u/testdir/subdir /origin",
      runs: [(["-p"], 1)], expect: "[ \"$(xval u/testdir impure)\" = y ]"),
    Case(label: "056 missing impure over a merge dir (forgiven by -n)", setup: "mkdir l/testdir u/testdir",
      runs: [(["-n"], 0), (["-p"], 1)], expect: "[ \"$(xval u impure)\" = y ]"),
  ]

  @Test(.enabled(if: getuid() == 0, "needs root (mknod, trusted xattrs)"), arguments: cases)
  func scenario(_ c: Case) throws {
    let dir = Harness.TempDir("fsck")
    let fsck = try FsckSupport.fsckOverlay(in: dir)
    let made = Harness.run(["/bin/sh", "-c", Self.prelude + "cd \"$1\"; mkdir l l2 u w\n" + c.setup, "sh", dir.path])
    try #require(made.status == 0, "setup: \(made.stderr)\(made.out)")
    let lowers = c.lower.split(separator: ":").map { dir.path + "/" + $0 }.joined(separator: ":")
    for run in c.runs {
      let r = Harness.run([fsck, "-o", "lowerdir=\(lowers)", "-o", "upperdir=\(dir.path)/u", "-o", "workdir=\(dir.path)/w"] + run.args)
      #expect(r.status == run.status, "\(run.args): \(r.out)\(r.stderr)")
    }
    let check = Harness.run(["/bin/sh", "-c", Self.prelude + "cd \"$1\"\n" + c.expect, "sh", dir.path])
    #expect(check.status == 0, "\(check.out)\(check.stderr)")
  }
}

enum FsckSupport {
  static let binary = Harness.ovltool

  /// `fsck -n` in-process on a stack given as mount options: the problems that would make
  /// it exit non-zero (errors, operational errors) and the warnings `-p` would repair, as
  /// lines; empty when clean and when `-p` would change nothing.
  static func problems(_ options: String) -> [String] {
    do throws(OvlError) {
      var parser = StackOptionParser()
      try parser.add(options: options)
      let stackOptions = try parser.resolve(defaults: .current())
      let stack = try Checker.openStack(stackOptions)
      let report = Report(mode: .check)
      Checker(stack: stack, options: Checker.detectNamespace(stack, stackOptions).options, report: report).run()
      return report.findings.filter { $0.isUncorrected || ($0.policy == .safe && $0.action != nil) }.map { "\($0.layer): \($0.path): \($0.problem)" } + report.operationalErrors
    } catch {
      return ["\(error)"]
    }
  }

  /// A `fsck.overlay` symlink to the built ovltool, as `make install` makes it.
  static func fsckOverlay(in dir: Harness.TempDir) throws -> String {
    let link = dir.path + "/bin/fsck.overlay"
    try FileManager.default.createDirectory(atPath: dir.path + "/bin", withIntermediateDirectories: true)
    try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: binary)
    return link
  }
}
