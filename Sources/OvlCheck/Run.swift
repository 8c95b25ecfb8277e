import OvlFormat
import OvlStack
import OvlSystem

extension Checker {
  /// Opens the stack for checking. The kernel's own index verification is left out here:
  /// a broken index dir is what fsck reports and repairs, not a reason to stop.
  public static func openStack(_ options: StackOptions) throws(OvlError) -> Stack {
    var layersOnly = options
    layersOnly.index = false
    return try Stack(options: layersOnly)
  }

  /// A stack given without `userxattr` whose upper layer holds only `user.overlay.*`
  /// xattrs was made by a userxattr mount: checking it under `trusted.overlay.*` would
  /// see no xattr at all and "repair" it with trusted ones (fsck.overlay's bug). Looks at
  /// the upper root and its entries; returns the namespace to check with, and whether it
  /// was detected.
  public static func detectNamespace(_ stack: Stack, _ options: StackOptions) -> (options: StackOptions, detected: Bool) {
    guard !options.userxattr, let upper = stack.upperRoot else { return (options, false) }
    var names: [[UInt8]] = (try? upper.fd.xattrNames([0x2E])) ?? []
    for entry in ((try? upper.fd.entries()) ?? []).prefix(256) {
      names += (try? upper.fd.xattrNames(entry.name)) ?? []
    }
    let user = names.contains { XattrNamespace.user.isPrivate($0) }
    let trusted = names.contains { XattrNamespace.trusted.isPrivate($0) }
    guard user && !trusted else { return (options, false) }
    var detected = options
    detected.userxattr = true
    return (detected, true)
  }
}
