import Testing
import OvlFormat
import OvlSystem
import OvlStack

// Every row below was also mounted for real on Linux 6.18.44 while writing these tests:
// mount(2) of "overlay" with the row's options joined by ',' as the data string (the
// monolithic -o parser, ovl_parse_monolithic), relative layer paths l1 l2 l3 d1 d2 u w,
// "a:b", "a,b", "a\b", "u,x", "w,x", L/1…L/501 on a tmpfs, module defaults
// redirect_dir=N redirect_always_follow=Y index=N metacopy=N nfs_export=N xino_auto=N.
// `kernel` records the result: accepted with the options /proc/mounts showed afterwards, or
// refused (EINVAL) with the dmesg line. Nothing here mounts at test time.

enum KernelResult: Sendable {
  /// mount succeeded; the options line from /proc/mounts (plus any dmesg notice).
  case accepted(String)
  /// mount failed EINVAL; the dmesg line.
  case refused(String)
}

struct Resolved: Sendable {
  var lower: [String]
  var data: [String] = []
  var upper: String? = "u"
  var work: String? = "w"
  var index = false
  var redirect: RedirectMode = .follow
  var metacopy = false
  var nfsExport = false
  var userxattr = false
  var uuid: UUIDMode? = nil  // nil: not checked
  var verity: VerityMode = .off
}

enum ParserExpectation: Sendable {
  case resolves(Resolved)
  /// Refused with a `.usage` message containing this text.
  case refuses(String)
}

struct OptionRow: Sendable, CustomTestStringConvertible {
  /// `-o` strings, added in order with `add(options:)`; the kernel got them joined by ','.
  var options: [String]
  var kernel: KernelResult
  var parser: ParserExpectation
  /// Why the parser's result is meant to differ from the kernel's (a tool decision).
  var intentional: String? = nil
  /// A known bug: the parser does not do what the kernel does.
  var knownIssue: String? = nil
  /// Expected warnings (exact).
  var warnings: [String] = []
  var testDescription: String { options.joined(separator: " | ") }
}

let uw = "upperdir=u,workdir=w"

func ok(_ o: String, _ r: Resolved, _ k: String, known: String? = nil, warnings: [String] = []) -> OptionRow {
  OptionRow(options: [o], kernel: .accepted(k), parser: .resolves(r), knownIssue: known, warnings: warnings)
}
func no(_ o: String, _ kernelReason: String, _ parserMessage: String? = nil, known: String? = nil) -> OptionRow {
  OptionRow(options: [o], kernel: .refused(kernelReason), parser: .refuses(parserMessage ?? kernelReason), knownIssue: known)
}

let ro = Resolved(lower: [], upper: nil, work: nil)

let optionRows: [OptionRow] = [
  // Plain stacks.
  ok("lowerdir=l1:l2", { var r = ro; r.lower = ["l1", "l2"]; r.redirect = .on; return r }(),
     "ro,relatime,lowerdir=l1:l2,redirect_dir=on"),
  ok("lowerdir=l1:l2:l3", { var r = ro; r.lower = ["l1", "l2", "l3"]; r.redirect = .on; return r }(),
     "ro,relatime,lowerdir=l1:l2:l3,redirect_dir=on"),
  ok("lowerdir=l1,\(uw)", Resolved(lower: ["l1"]), "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,uuid=on"),
  // Escapes inside -o strings.
  ok(#"lowerdir=a\:b,\#(uw)"#, Resolved(lower: ["a:b"]), #"rw,relatime,lowerdir=a\134:b,upperdir=u,workdir=w,uuid=on"#),
  ok(#"lowerdir=a\,b,\#(uw)"#, Resolved(lower: ["a,b"]), #"rw,relatime,lowerdir=a\134\054b,upperdir=u,workdir=w,uuid=on"#),
  ok(#"lowerdir=a\\b,\#(uw)"#, Resolved(lower: [#"a\b"#]), #"rw,relatime,lowerdir=a\134\134b,upperdir=u,workdir=w,uuid=on"#),
  ok(#"lowerdir=l1,upperdir=u\,x,workdir=w\,x"#, Resolved(lower: ["l1"], upper: "u,x", work: "w,x"),
     #"rw,relatime,lowerdir=l1,upperdir=u\134\054x,workdir=w\134\054x,uuid=on"#),
  // Data-only layers.
  ok("lowerdir=l1::d1,\(uw)", Resolved(lower: ["l1"], data: ["d1"]), "rw,relatime,lowerdir=l1::d1,upperdir=u,workdir=w,uuid=on"),
  ok("lowerdir=l1::d1,\(uw),metacopy=on", Resolved(lower: ["l1"], data: ["d1"], redirect: .on, metacopy: true),
     "rw,relatime,lowerdir=l1::d1,upperdir=u,workdir=w,redirect_dir=on,uuid=on,metacopy=on"),
  ok("lowerdir=l1::d1::d2,\(uw),metacopy=on", Resolved(lower: ["l1"], data: ["d1", "d2"], redirect: .on, metacopy: true),
     "rw,relatime,lowerdir=l1::d1::d2,upperdir=u,workdir=w,redirect_dir=on,uuid=on,metacopy=on"),
  ok("lowerdir=l1::d1", { var r = ro; r.lower = ["l1"]; r.data = ["d1"]; r.redirect = .on; return r }(),
     "ro,relatime,lowerdir=l1::d1,redirect_dir=on"),
  ok("lowerdir=l1::d1,metacopy=on", { var r = ro; r.lower = ["l1"]; r.data = ["d1"]; r.redirect = .on; r.metacopy = true; return r }(),
     "ro,relatime,lowerdir=l1::d1,redirect_dir=on,metacopy=on"),
  no("lowerdir=l1::d1:l2,\(uw),metacopy=on", "regular lower layers cannot follow data lower layers"),
  no("lowerdir=l1:::d1,\(uw),metacopy=on",
     "only single ':' or double '::' sequences of unescaped colons in lowerdir mount option allowed.",
     "only single ':' or double '::' sequences of unescaped colons"),
  no("lowerdir=:l1,\(uw)", "cannot append lower layer"),
  no("lowerdir=::d1,\(uw),metacopy=on", "cannot append lower layer"),
  no("lowerdir=l1:,\(uw)", "unescaped trailing colons in lowerdir mount option.", "unescaped trailing colons in lowerdir mount option"),
  no("lowerdir=l1::,\(uw)", "unescaped trailing colons in lowerdir mount option.", "unescaped trailing colons in lowerdir mount option"),
  // userxattr.
  ok("lowerdir=l1,\(uw),userxattr", Resolved(lower: ["l1"], redirect: .nofollow, userxattr: true),
     "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,redirect_dir=nofollow,uuid=on,userxattr"),
  no("lowerdir=l1,\(uw),userxattr,metacopy=on", "conflicting options: userxattr,metacopy=on"),
  ok("lowerdir=l1,\(uw),userxattr,metacopy=off", Resolved(lower: ["l1"], redirect: .nofollow, userxattr: true),
     "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,redirect_dir=nofollow,uuid=on,userxattr"),
  no("lowerdir=l1,\(uw),userxattr,redirect_dir=on", "conflicting options: userxattr,redirect_dir=on"),
  no("lowerdir=l1,\(uw),userxattr,redirect_dir=follow", "conflicting options: userxattr,redirect_dir=follow"),
  // redirect_dir=off has already become follow when the conflict is checked.
  no("lowerdir=l1,\(uw),userxattr,redirect_dir=off", "conflicting options: userxattr,redirect_dir=follow"),
  ok("lowerdir=l1,\(uw),userxattr,redirect_dir=nofollow", Resolved(lower: ["l1"], redirect: .nofollow, userxattr: true),
     "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,redirect_dir=nofollow,uuid=on,userxattr"),
  ok("lowerdir=l1,\(uw),userxattr,nfs_export=on", Resolved(lower: ["l1"], index: true, redirect: .nofollow, nfsExport: true, userxattr: true),
     "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,redirect_dir=nofollow,index=on,uuid=on,nfs_export=on,userxattr"),
  ok("lowerdir=l1,\(uw),userxattr,index=on", Resolved(lower: ["l1"], index: true, redirect: .nofollow, userxattr: true),
     "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,redirect_dir=nofollow,index=on,uuid=on,userxattr"),
  // metacopy and redirect_dir.
  ok("lowerdir=l1,\(uw),metacopy=on", Resolved(lower: ["l1"], redirect: .on, metacopy: true),
     "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,redirect_dir=on,uuid=on,metacopy=on"),
  ok("lowerdir=l1,\(uw),metacopy=on,redirect_dir=on", Resolved(lower: ["l1"], redirect: .on, metacopy: true),
     "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,redirect_dir=on,uuid=on,metacopy=on"),
  no("lowerdir=l1,\(uw),metacopy=on,redirect_dir=follow", "conflicting options: metacopy=on,redirect_dir=follow"),
  no("lowerdir=l1,\(uw),redirect_dir=follow,metacopy=on", "conflicting options: metacopy=on,redirect_dir=follow"),
  no("lowerdir=l1,\(uw),metacopy=on,redirect_dir=nofollow", "conflicting options: metacopy=on,redirect_dir=nofollow"),
  no("lowerdir=l1,\(uw),redirect_dir=off,metacopy=on", "conflicting options: metacopy=on,redirect_dir=follow"),
  no("lowerdir=l1:l2,redirect_dir=nofollow,metacopy=on", "conflicting options: metacopy=on,redirect_dir=nofollow"),
  // Without an upper, follow becomes on before the metacopy check.
  ok("lowerdir=l1:l2,metacopy=on,redirect_dir=follow", { var r = ro; r.lower = ["l1", "l2"]; r.redirect = .on; r.metacopy = true; return r }(),
     "ro,relatime,lowerdir=l1:l2,redirect_dir=on,metacopy=on"),
  ok("lowerdir=l1:l2,metacopy=on", { var r = ro; r.lower = ["l1", "l2"]; r.redirect = .on; r.metacopy = true; return r }(),
     "ro,relatime,lowerdir=l1:l2,redirect_dir=on,metacopy=on"),
  // redirect_dir=off is follow with redirect_always_follow=Y (the default, not shown).
  ok("lowerdir=l1,\(uw),redirect_dir=off", Resolved(lower: ["l1"], redirect: .follow), "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,uuid=on"),
  ok("lowerdir=l1,\(uw),redirect_dir=nofollow", Resolved(lower: ["l1"], redirect: .nofollow),
     "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,redirect_dir=nofollow,uuid=on"),
  ok("lowerdir=l1,\(uw),redirect_dir=on", Resolved(lower: ["l1"], redirect: .on), "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,redirect_dir=on,uuid=on"),
  // index and nfs_export.
  ok("lowerdir=l1,\(uw),index=on", Resolved(lower: ["l1"], index: true), "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,index=on,uuid=on"),
  ok("lowerdir=l1,\(uw),nfs_export=on", Resolved(lower: ["l1"], index: true, nfsExport: true),
     "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,index=on,uuid=on,nfs_export=on"),
  ok("lowerdir=l1,\(uw),redirect_dir=nofollow,nfs_export=on", Resolved(lower: ["l1"], index: true, redirect: .nofollow, nfsExport: true),
     "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,redirect_dir=nofollow,index=on,uuid=on,nfs_export=on"),
  ok("lowerdir=l1,\(uw),index=on,nfs_export=on,metacopy=off", Resolved(lower: ["l1"], index: true, nfsExport: true),
     "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,index=on,uuid=on,nfs_export=on"),
  no("lowerdir=l1,\(uw),nfs_export=on,index=off", "conflicting options: nfs_export=on,index=off"),
  no("lowerdir=l1,\(uw),index=off,nfs_export=on", "conflicting options: nfs_export=on,index=off"),
  no("lowerdir=l1,\(uw),nfs_export=on,redirect_dir=nofollow,index=off", "conflicting options: nfs_export=on,index=off"),
  no("lowerdir=l1,\(uw),nfs_export=on,metacopy=on", "conflicting options: nfs_export=on,metacopy=on"),
  no("lowerdir=l1,\(uw),metacopy=on,nfs_export=on", "conflicting options: nfs_export=on,metacopy=on"),
  // Read-only stacks drop index and need nofollow for nfs_export.
  ok("lowerdir=l1:l2,index=on", { var r = ro; r.lower = ["l1", "l2"]; r.redirect = .on; return r }(),
     "ro,relatime,lowerdir=l1:l2,redirect_dir=on + dmesg: option \"index=on\" is useless in a non-upper mount, ignore"),
  ok("lowerdir=l1:l2,nfs_export=on", { var r = ro; r.lower = ["l1", "l2"]; r.redirect = .on; return r }(),
     "ro,relatime,lowerdir=l1:l2,redirect_dir=on + dmesg: NFS export requires \"redirect_dir=nofollow\" on non-upper mount, falling back to nfs_export=off."),
  ok("lowerdir=l1:l2,nfs_export=on,redirect_dir=nofollow",
     { var r = ro; r.lower = ["l1", "l2"]; r.redirect = .nofollow; r.nfsExport = true; return r }(),
     "ro,relatime,lowerdir=l1:l2,redirect_dir=nofollow,nfs_export=on (no index=on: a stack without upper has no index)"),
  ok("lowerdir=l1:l2,uuid=on", { var r = ro; r.lower = ["l1", "l2"]; r.redirect = .on; r.uuid = .null; return r }(),
     "ro,relatime,lowerdir=l1:l2,redirect_dir=on,uuid=null + dmesg: option \"uuid=on\" requires an upper fs, falling back to uuid=null."),
  ok("lowerdir=l1,\(uw),uuid=off", { var r = Resolved(lower: ["l1"]); r.uuid = .off; return r }(), "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,uuid=off"),
  ok("lowerdir=l1,\(uw),uuid=null", { var r = Resolved(lower: ["l1"]); r.uuid = .null; return r }(), "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,uuid=null"),
  ok("lowerdir=l1,\(uw),verity=on", { var r = Resolved(lower: ["l1"]); r.verity = .on; return r }(),
     "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,uuid=on,verity=on"),
  ok("lowerdir=l1,\(uw),verity=require", { var r = Resolved(lower: ["l1"]); r.verity = .require; return r }(),
     "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,uuid=on,verity=require"),
  // Missing layers.
  no("upperdir=u,workdir=w", "missing 'lowerdir'"),
  no("lowerdir=,\(uw)", "missing 'lowerdir'"),
  no("lowerdir=l1,upperdir=u", "missing 'workdir'"),
  no("lowerdir=l1", "at least 2 lowerdir are needed while upperdir nonexistent"),
  no("lowerdir=l1,workdir=w",
     "at least 2 lowerdir are needed while upperdir nonexistent (after: option \"workdir=w\" is useless in a non-upper mount, ignore)",
     "at least 2 lowerdir are needed while upperdir nonexistent"),
  ok("lowerdir=l1:l2,workdir=w", { var r = ro; r.lower = ["l1", "l2"]; r.redirect = .on; return r }(),
     "ro,relatime,lowerdir=l1:l2,redirect_dir=on + dmesg: option \"workdir=w\" is useless in a non-upper mount, ignore",
     warnings: ["option \"workdir=w\" is useless in a non-upper mount, ignored"]),
  // Bad values.
  no("lowerdir=l1,\(uw),index=maybe", "Bad value for 'index'", "bad value 'maybe' for option 'index'"),
  no("lowerdir=l1,\(uw),index", "Bad value for 'index'", "option 'index' needs a value"),
  no("lowerdir=l1,\(uw),redirect_dir=maybe", "Bad value for 'redirect_dir'", "bad value 'maybe' for option 'redirect_dir'"),
  no("lowerdir=l1,\(uw),uuid=maybe", "Bad value for 'uuid'", "bad value 'maybe' for option 'uuid'"),
  no("lowerdir=l1,\(uw),xino=maybe", "Bad value for 'xino'", "bad value 'maybe' for option 'xino'"),
  no("lowerdir=l1,\(uw),verity=maybe", "Bad value for 'verity'", "bad value 'maybe' for option 'verity'"),
  no("lowerdir=l1,\(uw),userxattr=1", "Unexpected value for 'userxattr'", "option 'userxattr' takes no value"),
  // Unknown keys: the kernel refuses them; the tool only warns (it describes stacks that
  // may carry mount(8) options such as `ro` or `noatime` meant for the VFS).
  OptionRow(options: ["lowerdir=l1,\(uw),foo=bar"], kernel: .refused("overlay: Unknown parameter 'foo'"),
            parser: .resolves(Resolved(lower: ["l1"])), intentional: "unknown keys are a warning in ovltool",
            warnings: ["ignoring unknown option 'foo'"]),
  OptionRow(options: ["lowerdir=l1,\(uw),foo"], kernel: .refused("overlay: Unknown parameter 'foo'"),
            parser: .resolves(Resolved(lower: ["l1"])), intentional: "unknown keys are a warning in ovltool",
            warnings: ["ignoring unknown option 'foo'"]),
  // Repeated -o and repeated keys: the kernel got the strings joined with ','; last wins.
  OptionRow(options: ["lowerdir=l1:l2", uw, "index=on"],
            kernel: .accepted("rw,relatime,lowerdir=l1:l2,upperdir=u,workdir=w,index=on,uuid=on (as \"lowerdir=l1:l2,upperdir=u,workdir=w,,index=on\")"),
            parser: .resolves(Resolved(lower: ["l1", "l2"], index: true))),
  OptionRow(options: ["lowerdir=l1,\(uw),index=on", "index=off"],
            kernel: .accepted("rw,relatime,lowerdir=l1,upperdir=u,workdir=w,uuid=on (index off)"),
            parser: .resolves(Resolved(lower: ["l1"], index: false))),
  ok("lowerdir=l1,\(uw),index=on,index=off", Resolved(lower: ["l1"], index: false), "rw,relatime,lowerdir=l1,upperdir=u,workdir=w,uuid=on"),
  OptionRow(options: ["lowerdir=l1,\(uw)", "lowerdir=l2"],
            kernel: .accepted("rw,relatime,lowerdir=l2,upperdir=u,workdir=w,uuid=on"),
            parser: .resolves(Resolved(lower: ["l2"]))),
  ok("lowerdir=l1:l2,lowerdir=l3,\(uw)", Resolved(lower: ["l3"]), "rw,relatime,lowerdir=l3,upperdir=u,workdir=w,uuid=on"),
  ok("lowerdir=l1:l2,\(uw),,index=on", Resolved(lower: ["l1", "l2"], index: true),
     "rw,relatime,lowerdir=l1:l2,upperdir=u,workdir=w,index=on,uuid=on"),
  // Layer limit (lower + data layers).
  ok("lowerdir=" + (1...500).map { "L/\($0)" }.joined(separator: ":"),
     { var r = ro; r.lower = (1...500).map { "L/\($0)" }; r.redirect = .on; return r }(),
     "ro,relatime,lowerdir=L/1:…:L/500,redirect_dir=on"),
  no("lowerdir=" + (1...501).map { "L/\($0)" }.joined(separator: ":"), "too many lower directories, limit is 500"),
  no("lowerdir=l1::" + (1...500).map { "L/\($0)" }.joined(separator: "::"), "too many lower directories, limit is 500"),
]

func thisKernel() -> KernelDefaults {
  var d = KernelDefaults()
  d.redirectDir = false
  d.redirectAlwaysFollow = true
  d.index = false
  d.metacopy = false
  d.nfsExport = false
  d.xinoAuto = false
  d.maximumLowerLayers = 500
  return d
}

enum ParseOutcome {
  case resolved(StackOptions, warnings: [String])
  case refused(String)
}

func parse(_ options: [String], defaults: KernelDefaults = thisKernel()) -> ParseOutcome {
  var p = StackOptionParser()
  do {
    for o in options { try p.add(options: o) }
    return .resolved(try p.resolve(defaults: defaults), warnings: p.warnings)
  } catch .usage(let message) {
    return .refused(message)
  } catch {
    return .refused("not a usage error: \(error)")
  }
}

func matches(_ o: StackOptions, _ r: Resolved) -> Bool {
  o.lowerDirs == r.lower && o.dataDirs == r.data && o.upperDir == r.upper && o.workDir == r.work
    && o.index == r.index && o.redirectMode == r.redirect && o.metacopy == r.metacopy
    && o.nfsExport == r.nfsExport && o.userxattr == r.userxattr && (r.uuid.map { o.uuid == $0 } ?? true)
    && o.verity == r.verity
}

@Suite struct StackOptionsTests {
  @Test(arguments: optionRows)
  func row(_ row: OptionRow) {
    let outcome = parse(row.options)
    let check = {
      switch (row.parser, outcome) {
      case (.resolves(let expected), .resolved(let o, let warnings)):
        #expect(matches(o, expected), "got \(o)")
        #expect(warnings == row.warnings)
        #expect(o.isReadOnly == (expected.upper == nil))
      case (.refuses(let fragment), .refused(let message)):
        #expect(message.contains(fragment), "message: \(message)")
      case (.resolves, .refused(let message)):
        Issue.record("refused: \(message)")
      case (.refuses(let fragment), .resolved(let o, _)):
        Issue.record("accepted \(o); expected a refusal containing \"\(fragment)\"")
      }
    }
    if let reason = row.knownIssue { withKnownIssue(Comment(rawValue: reason)) { check() } } else { check() }

    // The parser accepts exactly what this kernel accepts, apart from deliberate choices.
    let kernelAccepts: Bool = if case .accepted = row.kernel { true } else { false }
    let parserAccepts: Bool = if case .resolved = outcome { true } else { false }
    if row.intentional != nil {
      #expect(kernelAccepts != parserAccepts)
    } else if let reason = row.knownIssue, kernelAccepts != parserAccepts {
      withKnownIssue(Comment(rawValue: reason)) { #expect(parserAccepts == kernelAccepts) }
    } else {
      #expect(parserAccepts == kernelAccepts)
    }
  }

  @Test func derivedProperties() throws {
    guard case .resolved(let o, _) = parse(["lowerdir=l1,\(uw),userxattr"]) else { Issue.record("refused"); return }
    #expect(o.xattrNamespace == .user)
    #expect(!o.isReadOnly)
    guard case .resolved(let t, _) = parse(["lowerdir=l1:l2"]) else { Issue.record("refused"); return }
    #expect(t.xattrNamespace == .trusted)
    #expect(t.isReadOnly)
    #expect(t.xino == .off && t.uuid == .auto && t.verity == .off)
  }

  @Test func longOptionsAreNotSplitOnCommas() throws {
    var p = StackOptionParser()
    try p.add(key: "lowerdir", value: #"a,b:c\:d"#)
    try p.add(key: "upperdir", value: "u,1")
    try p.add(key: "workdir", value: "w")
    let o = try p.resolve(defaults: thisKernel())
    #expect(o.lowerDirs == ["a,b", "c:d"])
    #expect(o.upperDir == "u,1")
  }

  @Test func moduleDefaultsApply() throws {
    var d = thisKernel()
    d.redirectDir = true
    d.index = true
    d.metacopy = true
    guard case .resolved(let o, _) = parse(["lowerdir=l1,\(uw)"], defaults: d) else { Issue.record("refused"); return }
    #expect(o.redirectMode == .on && o.index && o.metacopy)
    d = thisKernel()
    d.redirectAlwaysFollow = false
    guard case .resolved(let n, _) = parse(["lowerdir=l1,\(uw),redirect_dir=off"], defaults: d) else { Issue.record("refused"); return }
    #expect(n.redirectMode == .nofollow)
    d = thisKernel()
    d.xinoAuto = true
    guard case .resolved(let x, _) = parse(["lowerdir=l1,\(uw)"], defaults: d) else { Issue.record("refused"); return }
    #expect(x.xino == .auto)
  }
}
