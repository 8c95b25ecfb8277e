import Foundation
import Testing

/// The real binary: exit statuses, messages that name the path and the reason, hostile
/// layers that must not make ovltool touch anything outside them.
@Suite struct CLITests {
  static let binary = Harness.repository + "/.build/debug/ovltool"

  func ovltool(_ args: [String]) -> Harness.Result {
    Harness.run([Self.binary] + args)
  }

  func stack(_ spec: String, _ dir: Harness.TempDir) throws -> String {
    try Harness.build(spec, in: dir)
  }

  @Test func versionAndHelp() {
    #expect(ovltool(["--version"]).status == 0)
    #expect(ovltool(["--help"]).status == 0)
    #expect(ovltool(["tree", "--help"]).out.contains("--json"))
  }

  @Test func usageErrorsExit2() {
    let r = ovltool(["frobnicate"])
    #expect(r.status == 2)
    let missing = ovltool(["ls"])
    #expect(missing.status == 2)
    #expect(missing.stderr.contains("missing 'lowerdir'"))
  }

  @Test(arguments: [
    ("lowerdir=a:::b", "only single ':' or double '::'"),
    ("lowerdir=:a", "leading ':'"),
    ("lowerdir=a:", "trailing colons"),
    ("lowerdir=a::d:b", "regular lower layers cannot follow data lower layers"),
    ("lowerdir=a:b,index=maybe", "bad value 'maybe' for option 'index'"),
    ("lowerdir=a:b,userxattr,metacopy=on", "conflicting options: userxattr,metacopy=on"),
    ("lowerdir=a,upperdir=u", "missing 'workdir'"),
    ("lowerdir=a", "at least 2 lowerdir are needed while upperdir nonexistent"),
  ])
  func malformedOptions(_ options: String, _ message: String) {
    let r = ovltool(["ls", "-o", options])
    #expect(r.status == 2)
    #expect(r.stderr.contains(message), "stderr: \(r.stderr)")
  }

  @Test func missingLayerNamesThePath() {
    let r = ovltool(["ls", "-o", "lowerdir=/nonexistent/ovltool-a:/nonexistent/ovltool-b"])
    #expect(r.status == 2)
    #expect(r.stderr.contains("/nonexistent/ovltool-a"))
    #expect(r.stderr.contains("No such file or directory"))
  }

  @Test func layerThatIsNotADirectory() throws {
    let dir = Harness.TempDir("cli")
    FileManager.default.createFile(atPath: dir.path + "/file", contents: Data("x".utf8))
    try FileManager.default.createDirectory(atPath: dir.path + "/l2", withIntermediateDirectories: true)
    let r = ovltool(["ls", "-o", "lowerdir=\(dir.path)/file:\(dir.path)/l2"])
    #expect(r.status == 2)
    #expect(r.stderr.contains(dir.path + "/file"))
    #expect(r.stderr.contains("Not a directory"))
  }

  @Test func unknownOptionIsAWarning() throws {
    let dir = Harness.TempDir("cli")
    let opts = try stack("[lower a]\nfile /f \"x\"\n[lower b]\n", dir)
    let r = ovltool(["ls", "-o", opts + ",frobs=3,noatime"])
    #expect(r.status == 0)
    #expect(r.stderr.contains("warning: ignoring unknown option 'frobs'"))
    #expect(r.out == "f\n")
  }

  @Test func layerChecksByIdentity() throws {
    let dir = Harness.TempDir("cli")
    let opts = try stack("[upper]\n[lower a]\nfile /f \"x\"\n", dir)
    let base = dir.path + "/stack"
    // The same lower twice, a lower inside another, work inside upper, work == upper.
    let cases: [(String, String)] = [
      ("lowerdir=\(base)/a:\(base)/a", "conflicting lowerdir path"),
      ("lowerdir=\(base)/a:\(base)", "overlapping lowerdir path"),
      ("lowerdir=\(base)/a,upperdir=\(base)/upper,workdir=\(base)/upper/w", "separate subtrees"),
      ("lowerdir=\(base)/a,upperdir=\(base)/upper,workdir=\(base)/upper", "separate subtrees"),
      ("lowerdir=\(base)/upper/x:\(base)/a,upperdir=\(base)/upper,workdir=\(base)/work", "overlapping lowerdir path"),
    ]
    try FileManager.default.createDirectory(atPath: base + "/upper/w", withIntermediateDirectories: true)
    try FileManager.default.createDirectory(atPath: base + "/upper/x", withIntermediateDirectories: true)
    for (o, message) in cases {
      let r = ovltool(["ls", "-o", o])
      #expect(r.status == 2, "\(o)")
      #expect(r.stderr.contains(message), "\(o): \(r.stderr)")
    }
    _ = opts
  }

  @Test func pathErrorsExit1AndNameThePath() throws {
    let dir = Harness.TempDir("cli")
    let opts = try stack("""
      [upper]
      dir /bad redirect=a/b
      whiteout /gone
      [lower a]
      file /gone "g"
      file /f "f"
      """, dir)
    let missing = ovltool(["stat", "-o", opts, "/gone"])
    #expect(missing.status == 1)
    #expect(missing.stderr.contains("/gone"))
    let invalid = ovltool(["stat", "-o", opts, "/bad"])
    #expect(invalid.status == 1)
    #expect(invalid.stderr.contains("invalid redirect (a/b)"))
    #expect(invalid.stderr.contains("Invalid argument"))
    let notDir = ovltool(["ls", "-o", opts, "/f/x"])
    #expect(notDir.status == 1)
    #expect(notDir.stderr.contains("not a directory"))
    let catDir = ovltool(["cat", "-o", opts, "/"])
    #expect(catDir.status == 1)
    // One good path and one bad: the good one is printed, the status is 1.
    let mixed = ovltool(["cat", "-o", opts, "/f", "/gone"])
    #expect(mixed.status == 1)
    #expect(mixed.out == "f")
  }

  @Test func symlinksInLayersAreNeverFollowed() throws {
    let dir = Harness.TempDir("cli")
    let opts = try stack("""
      [upper]
      symlink /passwd /etc/passwd
      symlink /etc /etc
      dir /r redirect=/../../../../etc
      [lower a]
      dir /etc
      """, dir)
    let cat = ovltool(["cat", "-o", opts, "/passwd"])
    #expect(cat.status == 1)
    #expect(!cat.out.contains("root:"))
    // /etc is the upper symlink, not the host's /etc (nor the lower dir).
    let ls = ovltool(["ls", "-l", "-o", opts, "/etc"])
    #expect(ls.out.contains("-> /etc"))
    #expect(ovltool(["ls", "-o", opts, "/etc/passwd"]).status == 1)
    // A redirect climbing out of the layer fails as the kernel's lookup does (EACCES).
    let escape = ovltool(["ls", "-o", opts, "/r"])
    #expect(escape.status == 1)
    #expect(escape.stderr.contains("Permission denied"))
  }

  @Test func nonUTF8PathArguments() throws {
    let dir = Harness.TempDir("cli")
    let opts = try stack("[upper]\nfile \"/bad\\xffname\" \"ok\"\n[lower a]\n", dir)
    let tree = ovltool(["tree", "--json", "-o", opts])
    #expect(tree.out.contains(#""path":"/bad\u00ffname""#))
    // Pass the raw byte through argv (Process takes Strings, so go through the shell).
    let r = Harness.run(["/bin/sh", "-c", "\"$0\" cat -o \"$1\" \"$(printf '/bad\\377name')\"", Self.binary, opts])
    #expect(r.status == 0)
    #expect(r.out == "ok")
  }

  @Test func treeJSONFieldsAndLayer() throws {
    let dir = Harness.TempDir("cli")
    let opts = try stack("""
      [upper]
      file /u "u" mode=4750 uid=3 gid=4 mtime=1.5
      [lower a]
      char /c 1 3
      symlink /l t
      [lower b]
      file /b "b" xattr.user.k=0x00ff
      """, dir)
    let lines = ovltool(["tree", "--json", "--hash", "-o", opts]).out.split(separator: "\n").map(String.init)
    #expect(lines == [
      #"{"path":"/","type":"dir","mode":493,"uid":0,"gid":0,"mtime":1700000000000000000,"xattrs":{},"layer":0}"#,
      #"{"path":"/b","type":"file","mode":420,"uid":0,"gid":0,"size":1,"mtime":1700000000000000000,"xattrs":{"user.k":"00ff"},"sha256":"3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d","layer":2}"#,
      #"{"path":"/c","type":"char","mode":420,"uid":0,"gid":0,"rdev":[1,3],"mtime":1700000000000000000,"xattrs":{},"layer":1}"#,
      #"{"path":"/l","type":"symlink","mode":511,"uid":0,"gid":0,"size":1,"target":"t","mtime":1700000000000000000,"xattrs":{},"layer":1}"#,
      #"{"path":"/u","type":"file","mode":2536,"uid":3,"gid":4,"size":1,"mtime":1500000000,"xattrs":{},"sha256":"0bfe935e70c321c7ca3afc75ce0d0ca2f98b5422e008bb31c00c6d7f1f1c0ad6","layer":0}"#,
    ])
  }

  @Test func deepTreesNeedMoreDescriptorsThanTheSoftLimit() throws {
    // 1100 merged levels hold 2200 directory descriptors; ovltool raises its soft limit.
    let dir = Harness.TempDir("cli")
    let deep = (0..<1100).map { "d\($0)" }.joined(separator: "/")
    let opts = try stack("[upper]\nfile /\(deep)/up \"u\"\n[lower a]\nfile /\(deep)/low \"l\"\n", dir)
    let r = Harness.run(["/bin/sh", "-c", "ulimit -Sn 1024 && \"$0\" tree --json -o \"$1\" | wc -l", Self.binary, opts])
    #expect(r.status == 0)
    #expect(r.out.trimmingCharacters(in: .whitespacesAndNewlines) == "1103")
  }
}
