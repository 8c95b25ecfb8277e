import Foundation
import OvlFixtures
import OvlStack
import OvlSystem
import Testing

/// Test support: temp dirs, fixtures, the in-process view and the kernel's view of a stack.
enum Harness {
  /// The repository root (tests find the oracle walker there, never in ../shared).
  static let repository: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<4 { url.deleteLastPathComponent() }
    return url.path
  }()

  static let walker = repository + "/Tests/oracle/ovlwalk.py"
  /// The debug binaries `swift build --build-tests` made (tests run them as processes).
  static let ovltool = repository + "/.build/debug/ovltool"
  static let fixtureTool = repository + "/.build/debug/ovl-fixture"

  /// Whether the kernel can mount an overlay here (root, overlayfs, unshare). With
  /// OVLTOOL_REQUIRE_KERNEL=1 (CI) a missing kernel fails the tests instead of skipping them.
  static let kernelAvailable: Bool = {
    let r = run(["/bin/sh", "-c", "grep -qw overlay /proc/filesystems && command -v unshare && command -v python3"])
    return getuid() == 0 && r.status == 0
  }()

  static var requireKernel: Bool { ProcessInfo.processInfo.environment["OVLTOOL_REQUIRE_KERNEL"] == "1" }

  /// For `.enabled(if:)`: run when the kernel can mount, or when CI requires it (then a
  /// missing kernel fails loudly inside the test).
  static var kernelTestsEnabled: Bool { kernelAvailable || requireKernel }

  /// Whether the executables `tools` are here and the tests run as root; otherwise the
  /// suite says it skips — or, where CI requires everything (OVLTOOL_REQUIRE_KERNEL=1),
  /// records a failure. `cannot` says what cannot be done without them, `install` how to
  /// get them.
  static func toolsAvailable(_ tools: [String], suite: String, cannot: String, install: String, root: String = "root") -> Bool {
    let missing = tools.filter { !FileManager.default.isExecutableFile(atPath: $0) } + (getuid() == 0 ? [] : [root])
    guard !missing.isEmpty else { return true }
    if requireKernel {
      Issue.record("OVLTOOL_REQUIRE_KERNEL=1 but \(cannot) here: missing \(missing.joined(separator: ", "))\(install.isEmpty ? "" : " (\(install))")")
    } else {
      print("\(suite) skipped: missing \(missing.joined(separator: ", ")) (\(install))")
    }
    return false
  }

  static func requireKernelOrFail() {
    if !kernelAvailable {
      Issue.record("OVLTOOL_REQUIRE_KERNEL=1 but overlayfs cannot be mounted here (need root, overlay in /proc/filesystems, unshare, python3)")
    }
  }

  struct Result {
    var status: Int32
    var stdout: Data
    var stderr: String
    var out: String { String(decoding: stdout, as: UTF8.self) }
  }

  @discardableResult
  static func run(_ argv: [String], environment: [String: String]? = nil, stdin: Data? = nil) -> Result {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: argv[0])
    p.arguments = Array(argv.dropFirst())
    if let environment { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let out = Pipe()
    let err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let input = Pipe()
    p.standardInput = input
    // The child starts with no signal blocked. Process inherits the calling thread's mask,
    // and Dispatch's worker threads block nearly every signal — SIGCHLD among them, with
    // which a shell's `wait` for a job still running sleeps forever.
    var none = sigset_t()
    var saved = sigset_t()
    sigemptyset(&none)
    pthread_sigmask(SIG_SETMASK, &none, &saved)
    do {
      try p.run()
      pthread_sigmask(SIG_SETMASK, &saved, nil)
    } catch {
      pthread_sigmask(SIG_SETMASK, &saved, nil)
      return Result(status: 127, stdout: Data(), stderr: "\(error)")
    }
    if let stdin { input.fileHandleForWriting.write(stdin) }
    try? input.fileHandleForWriting.close()
    // Read both pipes concurrently so a chatty child cannot block.
    nonisolated(unsafe) var errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
      errData = err.fileHandleForReading.readDataToEndOfFile()
      group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    return Result(status: p.terminationStatus, stdout: outData, stderr: String(decoding: errData, as: UTF8.self))
  }

  /// A fresh directory under the system temp dir, removed (with anything mounted in it
  /// lazily unmounted first) when the test ends.
  final class TempDir {
    let path: String
    init(_ label: String = "t") {
      let template = NSTemporaryDirectory() + "ovltool-\(label)-XXXXXX"
      var bytes = Array(template.utf8CString)
      let made = bytes.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
      path = made.map { String(cString: $0) } ?? (NSTemporaryDirectory() + "ovltool-\(label)-\(UUID().uuidString)")
      try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit {
      Harness.run(["/bin/sh", "-c", "grep -F \" $1/\" /proc/self/mountinfo >/dev/null && umount -R -l \"$1\"/* 2>/dev/null; rm -rf \"$1\"", "sh", path])
    }
  }

  /// Materializes a fixture in a new directory of `dir` and returns the mount options.
  static func build(_ spec: String, in dir: TempDir, name: String = "stack") throws -> String {
    let parsed = try FixtureSpec(parsing: Array(spec.utf8))
    let target = dir.path + "/" + name
    try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
    return try Fixture.materialize(parsed, at: target)
  }

  /// ovltool's view of the stack (in-process): `tree --json` lines without the `layer`
  /// field, or the stack error.
  static func ovltoolView(_ options: String, hash: Bool = true, keepLayer: Bool = false, ino: Bool = false) -> Swift.Result<[String], OvlError> {
    do throws(OvlError) {
      var parser = StackOptionParser()
      try parser.add(options: options)
      let stack = try Stack(options: parser.resolve(defaults: .current()))
      let root = try stack.root()
      guard let entry = stack.rootEntry(root) else { return .success([]) }
      var lines: [String] = []
      stack.walk(entry, dir: root, hash: hash, inodes: ino) { result, path in
        switch result {
        case .success(let record):
          let line = String(decoding: JSONLine.encode(record), as: UTF8.self)
          lines.append(keepLayer ? line : stripLayer(line))
        case .failure(let error):
          lines.append(String(decoding: JSONLine.encodeError(path: path, error), as: UTF8.self))
        }
      }
      return .success(lines)
    } catch {
      return .failure(error)
    }
  }

  static func stripLayer(_ line: String) -> String {
    guard let range = line.range(of: #","layer":"#, options: .backwards) else { return line }
    return String(line[..<range.lowerBound]) + "}"
  }

  struct KernelView {
    /// The walker's lines, or nil when the mount failed.
    var lines: [String]?
    var mountError: String
  }

  /// The kernel's view: mounts the stack read-only in a private mount namespace (so nothing
  /// can leak to the host, and the namespace's end unmounts it whatever happens), walks it
  /// with the oracle walker and unmounts.
  /// With `ino`, lines carry st_ino (the walker's `--ino`).
  static func kernelView(_ options: String, in dir: TempDir, hash: Bool = true, ino: Bool = false) -> KernelView {
    let mnt = dir.path + "/mnt-\(UUID().uuidString.prefix(8))"
    try? FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
    let script = """
      mount -t overlay overlay -o "ro,$1" "$2" 2>/dev/null || { echo MOUNTFAIL; dmesg 2>/dev/null | grep overlayfs | tail -1; exit 0; }
      python3 "$3" "$2" \(hash ? "--hash" : "") \(ino ? "--ino" : "") 2>/dev/null
      umount "$2"
      """
    let r = run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh", options, mnt, walker])
    let text = r.out
    if text.hasPrefix("MOUNTFAIL") {
      return KernelView(lines: nil, mountError: String(text.dropFirst("MOUNTFAIL\n".count)).trimmingCharacters(in: .whitespacesAndNewlines))
    }
    return KernelView(lines: text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init), mountError: "")
  }

  /// Builds `spec`, computes ovltool's view, then the kernel's (the kernel's mount writes
  /// to the layers, so it goes second), and expects them to be identical line by line.
  static func expectSameView(_ spec: String, options extra: String = "", hash: Bool = true, ino: Bool = true, sourceLocation: SourceLocation = #_sourceLocation) throws {
    if requireKernel { requireKernelOrFail() }
    let dir = TempDir("view")
    var options = try build(spec, in: dir)
    if !extra.isEmpty { options += "," + extra }
    let ours = ovltoolView(options, hash: hash, ino: ino)
    let kernel = kernelView(options, in: dir, hash: hash, ino: ino)
    compare(ours, kernel, spec: spec, sourceLocation: sourceLocation)
  }

  static func compare(_ ours: Swift.Result<[String], OvlError>, _ kernel: KernelView, spec: String, sourceLocation: SourceLocation = #_sourceLocation) {
    switch (ours, kernel.lines) {
    case (.failure(let error), nil):
      _ = error  // both refuse the stack
    case (.failure(let error), .some):
      Issue.record("ovltool refused a stack the kernel mounts: \(error)\n\(spec)", sourceLocation: sourceLocation)
    case (.success, nil):
      Issue.record("ovltool accepted a stack the kernel refuses (\(kernel.mountError))\n\(spec)", sourceLocation: sourceLocation)
    case (.success(let mine), .some(var theirs)):
      // Where ovltool says the kernel makes the number up per mount, any number matches.
      for i in mine.indices where i < theirs.count && mine[i].contains(#""ino":null"#) {
        theirs[i] = theirs[i].replacingOccurrences(of: #""ino":[0-9]+"#, with: #""ino":null"#, options: .regularExpression)
      }
      if mine != theirs {
        Issue.record("views differ:\n\(diff(mine, theirs))\n--- fixture ---\n\(spec)", sourceLocation: sourceLocation)
      }
    }
  }

  /// A short line diff for failure messages.
  static func diff(_ a: [String], _ b: [String]) -> String {
    let sa = Set(a), sb = Set(b)
    var out: [String] = []
    for l in a where !sb.contains(l) { out.append("- ovltool: \(l)") }
    for l in b where !sa.contains(l) { out.append("+ kernel:  \(l)") }
    if out.isEmpty { out.append("(same lines, different order)") }
    return out.prefix(40).joined(separator: "\n")
  }
}
