import CCrypto
import Glibc

/// SHA-256 through OpenSSL's libcrypto (the same implementation Python's hashlib uses).
public struct SHA256Digest: ~Copyable {
  private let context: OpaquePointer

  public init() {
    context = EVP_MD_CTX_new()
    EVP_DigestInit_ex(context, EVP_sha256(), nil)
  }
  deinit { EVP_MD_CTX_free(context) }

  public borrowing func update(_ buffer: UnsafeRawBufferPointer) {
    EVP_DigestUpdate(context, buffer.baseAddress, buffer.count)
  }

  /// The digest of what was hashed so far; the context may not be updated afterwards (for
  /// digests kept in a class, which cannot be consumed).
  public borrowing func final() -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 32)
    var length: UInt32 = 0
    out.withUnsafeMutableBufferPointer { _ = EVP_DigestFinal_ex(context, $0.baseAddress, &length) }
    return out
  }

  public consuming func finish() -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 32)
    var length: UInt32 = 0
    out.withUnsafeMutableBufferPointer { _ = EVP_DigestFinal_ex(context, $0.baseAddress, &length) }
    return out
  }
}

extension FD {
  /// SHA-256 of the file's contents from the current offset, read in 1 MiB chunks.
  public borrowing func sha256() throws(Errno) -> [UInt8] {
    let digest = SHA256Digest()
    let capacity = 1 << 20
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)
    defer { buffer.deallocate() }
    while true {
      let n = try read(into: buffer)
      if n == 0 { break }
      digest.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
    }
    return digest.finish()
  }

  /// Copies the rest of this file to a raw descriptor (for `cat`).
  public borrowing func copy(toRawDescriptor out: Int32) throws(Errno) {
    let capacity = 1 << 20
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)
    defer { buffer.deallocate() }
    while true {
      let n = try read(into: buffer)
      if n == 0 { break }
      var offset = 0
      while offset < n {
        offset += try retrying { Glibc.write(out, buffer.baseAddress! + offset, n - offset) }
      }
    }
  }
}
