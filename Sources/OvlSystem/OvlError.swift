/// An error with what the user needs to act on it: the path (a layer path or a merged-view
/// path), the system call or rule that failed, and the errno the kernel would give.
public enum OvlError: Error, CustomStringConvertible, Equatable {
  /// A system call failed on `path`.
  case system(call: String, path: String, errno: Errno)
  /// The on-disk format at `path` is not what the kernel accepts (`errno` is the one the
  /// kernel returns for it, e.g. EINVAL for an invalid redirect).
  case format(path: String, reason: String, errno: Errno)
  /// Input that is refused as damaged or hostile (a layer's stream or one of its entries):
  /// its own case, so that a command's exit status says "refused" without reading messages.
  case refused(path: String, reason: String, errno: Errno)
  /// The stack description or a command's arguments are wrong.
  case usage(String)
  /// After locking its parent, an entry is not the one looked up before: someone moved it.
  /// The operation stops and cleans nothing (it could remove the wrong object).
  case staleChild(path: String)

  public var errno: Errno {
    switch self {
    case .system(_, _, let errno), .format(_, _, let errno), .refused(_, _, let errno): errno
    case .usage: .invalidArgument
    case .staleChild: .staleNFSFileHandle
    }
  }

  public var description: String {
    switch self {
    case .system(let call, let path, let errno):
      "\(path): \(call): \(errno.description) (errno \(errno.rawValue))"
    case .format(let path, let reason, let errno), .refused(let path, let reason, let errno):
      "\(path): \(reason) (\(errno.description))"
    case .usage(let message):
      message
    case .staleChild(let path):
      "\(path): changed by another process while locked; stopped without cleanup"
    }
  }
}

/// Runs `body`, turning an `Errno` into an `OvlError.system` that names the call and path.
@inline(__always)
public func step<R: ~Copyable>(
  _ call: String, _ path: @autoclosure () -> String, _ body: () throws(Errno) -> R
) throws(OvlError) -> R {
  do { return try body() } catch { throw .system(call: call, path: path(), errno: error) }
}

import COvlSys

extension Errno {
  /// The symbolic name, e.g. `ENOENT`.
  public var name: String {
    guard let c = covl_errno_name(rawValue) else { return "E\(rawValue)" }
    return String(cString: c)
  }
}
