import OvlSystem

/// A layer file as `apply` reads it: twice, a check pass and an apply pass (`Applier`).
///
/// A plain (uncompressed) tar in a regular file — a layer file, or standard input spooled to
/// one — is the common case and the fast one: its DiffID is the SHA-256 of the file itself,
/// computed on another thread while the check pass parses the headers (seeking over the
/// data), so neither pass hashes. The file is stamped before the first pass and compared
/// after each: a layer changed while it is applied is refused (before any change, when the
/// check pass ends) or reported (after the apply pass), never taken for the one checked.
/// A compressed layer is hashed while it is decompressed, by the pass that needs it.
public final class LayerInput {
  private let fd: FD
  /// The file's name in errors (nil: standard input).
  let file: String?
  /// A regular file holding a plain tar.
  let plain: Bool
  private let digest: FileDigest?
  private let stamp: ContentStamp?

  public init(_ fd: consuming FD, file: String?) throws(OvlError) {
    let raw = fd.rawValue
    self.fd = fd
    self.file = file
    plain = LayerReader.isPlainFile(rawDescriptor: raw)
    stamp = plain ? ContentStamp(rawDescriptor: raw) : nil
    digest = plain ? try step("dup", file ?? "standard input") { () throws(Errno) in try FileDigest(rawDescriptor: raw) } : nil
  }

  private var name: String { file.map { "layer " + $0 } ?? "layer" }

  /// A reader from the start of the layer; it hashes the stream when `hashing` and the
  /// layer is not a plain file (whose DiffID is `fileDiffID`).
  func reader(hashing: Bool) throws(OvlError) -> LayerReader {
    try step("lseek", file ?? "standard input") { () throws(Errno) in try fd.seekToStart() }
    return try LayerReader(fd: fd.rawValue, file: file, computingDiffID: hashing && !plain)
  }

  /// The DiffID of a plain file (waits for its hash); nil for a compressed layer.
  func fileDiffID() throws(OvlError) -> String? {
    guard let digest else { return nil }
    switch digest.value() {
    case .success(let bytes): return "sha256:" + hex(bytes)
    case .failure(let errno): throw .system(call: "pread", path: file ?? "standard input", errno: errno)
    }
  }

  /// The layer file is still the one the passes read so far.
  func verifyUnchanged(_ when: String) throws(OvlError) {
    guard let stamp else { return }
    if ContentStamp(rawDescriptor: fd.rawValue) != stamp {
      throw .refused(path: name, reason: "the file changed while it was applied (\(when))", errno: .ioError)
    }
  }
}
