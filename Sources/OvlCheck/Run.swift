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
}
