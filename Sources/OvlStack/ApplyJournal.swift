import OvlSystem

/// The record an `apply` keeps while it changes the upper: `ovltool-apply` in the work dir
/// (beside `work/` and `index/`, which a mount empties; this it leaves alone), written
/// before the layer's first change and removed when the layer is complete. Left behind by a
/// crash or a layer refused part-way, it says the upper holds part of a layer: `fsck`
/// reports it, and applying the same layer again completes it (every entry is applied as
/// if new) and removes it.
public enum ApplyJournal {
  public static let name = Array("ovltool-apply".utf8)

  /// What an interrupted apply left, if anything (the text names the layer).
  public static func pending(in stack: Stack) -> String? {
    guard let workRoot = stack.workRoot,
      let fd = try? FD.open(name, in: workRoot.fd, .readOnly),
      let bytes = try? fd.readAll()
    else { return nil }
    return String(decoding: bytes, as: UTF8.self).trimmingTrailingNewlines
  }
}

extension String {
  var trimmingTrailingNewlines: String {
    var s = self
    while s.last == "\n" { s.removeLast() }
    return s
  }
}
