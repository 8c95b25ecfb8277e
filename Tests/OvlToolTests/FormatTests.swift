import Testing
import OvlFormat
@testable import OvlStack

// Byte tables in this file were produced on Linux 6.18.44 by real overlay mounts over
// loop-mounted ext4 (uuid fef2d7b0-62cd-4ea1-978d-f1011473b46c), xfs (0d01ebcb-d56f-40b4-
// b24b-bf94452df3e5), btrfs (bf3787e3-0ca6-4e47-846e-6691a39771fd) and a tmpfs (random
// uuid ea844a00-a661-4223-aa63-c3969f56adcc, read with FS_IOC_GETFSUUID). Each stack had
// lower/upper/work on the same fs; the operations were done through the mount, then the
// mount was taken down and the xattrs dumped with `getfattr -e hex`. Scenarios:
//   A: index=on,redirect_dir=on,metacopy=on   N: nfs_export=on   O: uuid=off,index=on
//   U: userxattr                               P/Q (ext4): metacopy rename, protattr
// `ino` is `stat -c %i` of the real inode the handle names (the lower file for origins,
// the upper dir for `upper` handles). Nothing here mounts anything at test time.

/// Hex to bytes, independent of `Hex.decode` (which is under test).
func hexBytes(_ text: String) -> [UInt8] {
  let digits = Array(text.utf8)
  precondition(digits.count % 2 == 0)
  func v(_ c: UInt8) -> UInt8 {
    switch c {
    case 48...57: c - 48
    case 97...102: c - 87
    default: preconditionFailure("bad hex")
    }
  }
  return stride(from: 0, to: digits.count, by: 2).map { v(digits[$0]) << 4 | v(digits[$0 + 1]) }
}

func le(_ bytes: ArraySlice<UInt8>) -> UInt64 {
  bytes.reversed().reduce(0) { $0 << 8 | UInt64($1) }
}

enum FS: String, Sendable {
  case ext4, xfs, btrfs, tmpfs
  var uuid: [UInt8] {
    switch self {
    case .ext4: hexBytes("fef2d7b062cd4ea1978df1011473b46c")
    case .xfs: hexBytes("0d01ebcbd56f40b4b24bbf94452df3e5")
    case .btrfs: hexBytes("bf3787e30ca64e47846e6691a39771fd")
    case .tmpfs: hexBytes("ea844a00a6614223aa63c3969f56adcc")
    }
  }
  /// The fid type encode_fh returned on this fs.
  var fidType: UInt8 {
    switch self {
    case .ext4, .tmpfs: 0x01  // FILEID_INO32_GEN
    case .xfs: 0x81  // FILEID_INO32_GEN | XFS_FILEID_TYPE_64FLAG
    case .btrfs: 0x4D  // FILEID_BTRFS_WITHOUT_PARENT
    }
  }
  var fidLength: Int {
    switch self {
    case .ext4: 8
    case .xfs, .tmpfs: 12
    case .btrfs: 20
    }
  }
  /// The inode number encoded in the fid.
  func inode(_ fid: [UInt8]) -> UInt64 {
    switch self {
    case .ext4: le(fid[0..<4])  // le32 ino, le32 gen
    case .xfs: le(fid[0..<8])  // u64 ino, u32 gen
    case .tmpfs: le(fid[4..<12])  // u32 gen, u32 ino low, u32 ino high
    case .btrfs: le(fid[0..<8])  // u64 objectid, u64 root, u32 gen
    }
  }
}

struct RealHandle: Sendable, CustomTestStringConvertible {
  let source: String
  let hex: String
  let ino: UInt64
  /// Whether the kernel created `workdir/index/<hex>` for it.
  let index: Bool
  init(_ source: String, _ hex: String, ino: UInt64, index: Bool) {
    self.source = source; self.hex = hex; self.ino = ino; self.index = index
  }
  var fs: FS { FS(rawValue: String(source.prefix { $0 != " " }))! }
  var isUpper: Bool { source.contains("/w/index") && !source.contains("<h1>") }
  var uuidOff: Bool { source.contains(" O/") }
  var testDescription: String { source }
}

let realHandles: [RealHandle] = [
    RealHandle("ext4 A/u/.: index=on,redirect_dir=on,metacopy=on: upper root origin (first index=on mount)", "00fb1d0001fef2d7b062cd4ea1978df1011473b46c0d000000b45b191d", ino: 13, index: false),
    RealHandle("ext4 A/u/f: write to lower file f (data copy-up)", "00fb1d0001fef2d7b062cd4ea1978df1011473b46c16000000ce1d57c7", ino: 22, index: false),
    RealHandle("ext4 A/u/meta: chmod of lower file (metacopy=on copy-up)", "00fb1d0001fef2d7b062cd4ea1978df1011473b46c170000008d1f6b0b", ino: 23, index: false),
    RealHandle("ext4 A/u/d2: mv d d2 (relative redirect)", "00fb1d0001fef2d7b062cd4ea1978df1011473b46c1100000006fdf13b", ino: 17, index: false),
    RealHandle("ext4 A/u/b/x: mv a/x b/x (absolute redirect)", "00fb1d0001fef2d7b062cd4ea1978df1011473b46c14000000ae5dd589", ino: 20, index: false),
    RealHandle("ext4 A/u/h1: append to h1, lower hardlinked with h2 (index=on)", "00fb1d0001fef2d7b062cd4ea1978df1011473b46c1800000030a23b3f", ino: 24, index: true),
    RealHandle("ext4 N/u/dir: nfs_export=on: copy-up of dir (directory index entry)", "00fb1d0001fef2d7b062cd4ea1978df1011473b46c2c0000008cf368b9", ino: 44, index: true),
    RealHandle("ext4 N/u/dir/g: nfs_export=on: write to dir/g", "00fb1d0001fef2d7b062cd4ea1978df1011473b46c2d0000008bbf157f", ino: 45, index: true),
    RealHandle("ext4 O/u/f: uuid=off,index=on: write to f", "00fb1d0001000000000000000000000000000000003a000000ff82631d", ino: 58, index: false),
    RealHandle("ext4 O/u/.: uuid=off,index=on: upper root origin", "00fb1d00010000000000000000000000000000000036000000346cd503", ino: 54, index: false),
    RealHandle("ext4 U/u/f: userxattr: write to f (user.overlay.origin)", "00fb1d0001fef2d7b062cd4ea1978df1011473b46c420000005f9d92d7", ino: 66, index: false),
    RealHandle("ext4 A/w/index: index=on: workdir/index upper xattr = upper root", "00fb1d0401fef2d7b062cd4ea1978df1011473b46c0e000000d70901a4", ino: 14, index: false),
    RealHandle("ext4 N/w/index: nfs_export=on: index upper xattr = upper root", "00fb1d0401fef2d7b062cd4ea1978df1011473b46c29000000d7779a85", ino: 41, index: false),
    RealHandle("ext4 O/w/index: uuid=off: index upper = upper root", "00fb1d04010000000000000000000000000000000037000000328c8c74", ino: 55, index: false),
    RealHandle("ext4 N/w/index/<dir>: nfs_export=on directory index entry upper = upper dir", "00fb1d0401fef2d7b062cd4ea1978df1011473b46c3000000049112541", ino: 48, index: false),
    RealHandle("ext4 N/w/index/<h1>: rm h1 (lower h1/h2 hardlinked, nfs_export=on); index entry origin, nlink U+0", "00fb1d0001fef2d7b062cd4ea1978df1011473b46c2e0000005f9fcdf6", ino: 46, index: true),
    RealHandle("xfs A/u/.: index=on,redirect_dir=on,metacopy=on: upper root origin (first index=on mount)", "00fb2100810d01ebcbd56f40b4b24bbf94452df3e580000400000000002ffb6680", ino: 262272, index: false),
    RealHandle("xfs A/u/f: write to lower file f (data copy-up)", "00fb2100810d01ebcbd56f40b4b24bbf94452df3e583000400000000003687aa6a", ino: 262275, index: false),
    RealHandle("xfs A/u/meta: chmod of lower file (metacopy=on copy-up)", "00fb2100810d01ebcbd56f40b4b24bbf94452df3e5840004000000000014e80be7", ino: 262276, index: false),
    RealHandle("xfs A/u/d2: mv d d2 (relative redirect)", "00fb2100810d01ebcbd56f40b4b24bbf94452df3e581000400000000003526935f", ino: 262273, index: false),
    RealHandle("xfs A/u/b/x: mv a/x b/x (absolute redirect)", "00fb2100810d01ebcbd56f40b4b24bbf94452df3e585000000000000002f57db91", ino: 133, index: false),
    RealHandle("xfs A/u/h1: append to h1, lower hardlinked with h2 (index=on)", "00fb2100810d01ebcbd56f40b4b24bbf94452df3e58500040000000000fe4fbb1f", ino: 262277, index: true),
    RealHandle("xfs N/u/dir: nfs_export=on: copy-up of dir (directory index entry)", "00fb2100810d01ebcbd56f40b4b24bbf94452df3e58a00040000000000eacf2806", ino: 262282, index: true),
    RealHandle("xfs N/u/dir/g: nfs_export=on: write to dir/g", "00fb2100810d01ebcbd56f40b4b24bbf94452df3e58b0004000000000044851bc9", ino: 262283, index: true),
    RealHandle("xfs O/u/f: uuid=off,index=on: write to f", "00fb210081000000000000000000000000000000008f000c00000000004c270b18", ino: 786575, index: false),
    RealHandle("xfs O/u/.: uuid=off,index=on: upper root origin", "00fb210081000000000000000000000000000000008e000c0000000000bd98fbc3", ino: 786574, index: false),
    RealHandle("xfs U/u/f: userxattr: write to f (user.overlay.origin)", "00fb2100810d01ebcbd56f40b4b24bbf94452df3e58a000a0000000000716561b0", ino: 655498, index: false),
    RealHandle("xfs A/w/index: index=on: workdir/index upper xattr = upper root", "00fb2104810d01ebcbd56f40b4b24bbf94452df3e580000a00000000009a763051", ino: 655488, index: false),
    RealHandle("xfs N/w/index: nfs_export=on: index upper xattr = upper root", "00fb2104810d01ebcbd56f40b4b24bbf94452df3e585000a0000000000b75896b2", ino: 655493, index: false),
    RealHandle("xfs O/w/index: uuid=off: index upper = upper root", "00fb210481000000000000000000000000000000008b000000000000001debae31", ino: 139, index: false),
    RealHandle("xfs N/w/index/<dir>: nfs_export=on directory index entry upper = upper dir", "00fb2104810d01ebcbd56f40b4b24bbf94452df3e58a0000000000000068cee0a3", ino: 138, index: false),
    RealHandle("xfs N/w/index/<h1>: rm h1 (lower h1/h2 hardlinked, nfs_export=on); index entry origin, nlink U+0", "00fb2100810d01ebcbd56f40b4b24bbf94452df3e58c00040000000000fc4f0d1b", ino: 262284, index: true),
    RealHandle("btrfs A/u/.: index=on,redirect_dir=on,metacopy=on: upper root origin (first index=on mount)", "00fb29004dbf3787e30ca64e47846e6691a39771fd0201000000000000050000000000000007000000", ino: 258, index: false),
    RealHandle("btrfs A/u/f: write to lower file f (data copy-up)", "00fb29004dbf3787e30ca64e47846e6691a39771fd0b01000000000000050000000000000007000000", ino: 267, index: false),
    RealHandle("btrfs A/u/meta: chmod of lower file (metacopy=on copy-up)", "00fb29004dbf3787e30ca64e47846e6691a39771fd0c01000000000000050000000000000007000000", ino: 268, index: false),
    RealHandle("btrfs A/u/d2: mv d d2 (relative redirect)", "00fb29004dbf3787e30ca64e47846e6691a39771fd0601000000000000050000000000000007000000", ino: 262, index: false),
    RealHandle("btrfs A/u/b/x: mv a/x b/x (absolute redirect)", "00fb29004dbf3787e30ca64e47846e6691a39771fd0901000000000000050000000000000007000000", ino: 265, index: false),
    RealHandle("btrfs A/u/h1: append to h1, lower hardlinked with h2 (index=on)", "00fb29004dbf3787e30ca64e47846e6691a39771fd0d01000000000000050000000000000007000000", ino: 269, index: true),
    RealHandle("btrfs N/u/dir: nfs_export=on: copy-up of dir (directory index entry)", "00fb29004dbf3787e30ca64e47846e6691a39771fd2501000000000000050000000000000008000000", ino: 293, index: true),
    RealHandle("btrfs N/u/dir/g: nfs_export=on: write to dir/g", "00fb29004dbf3787e30ca64e47846e6691a39771fd2601000000000000050000000000000008000000", ino: 294, index: true),
    RealHandle("btrfs O/u/f: uuid=off,index=on: write to f", "00fb29004d000000000000000000000000000000003701000000000000050000000000000009000000", ino: 311, index: false),
    RealHandle("btrfs O/u/.: uuid=off,index=on: upper root origin", "00fb29004d000000000000000000000000000000003301000000000000050000000000000009000000", ino: 307, index: false),
    RealHandle("btrfs U/u/f: userxattr: write to f (user.overlay.origin)", "00fb29004dbf3787e30ca64e47846e6691a39771fd430100000000000005000000000000000a000000", ino: 323, index: false),
    RealHandle("btrfs A/w/index: index=on: workdir/index upper xattr = upper root", "00fb29044dbf3787e30ca64e47846e6691a39771fd0301000000000000050000000000000007000000", ino: 259, index: false),
    RealHandle("btrfs N/w/index: nfs_export=on: index upper xattr = upper root", "00fb29044dbf3787e30ca64e47846e6691a39771fd2201000000000000050000000000000008000000", ino: 290, index: false),
    RealHandle("btrfs O/w/index: uuid=off: index upper = upper root", "00fb29044d000000000000000000000000000000003401000000000000050000000000000009000000", ino: 308, index: false),
    RealHandle("btrfs N/w/index/<dir>: nfs_export=on directory index entry upper = upper dir", "00fb29044dbf3787e30ca64e47846e6691a39771fd2d01000000000000050000000000000008000000", ino: 301, index: false),
    RealHandle("btrfs N/w/index/<h1>: rm h1 (lower h1/h2 hardlinked, nfs_export=on); index entry origin, nlink U+0", "00fb29004dbf3787e30ca64e47846e6691a39771fd2701000000000000050000000000000008000000", ino: 295, index: true),
    RealHandle("tmpfs A/u/.: index=on,redirect_dir=on,metacopy=on: upper root origin (first index=on mount)", "00fb210001ea844a00a6614223aa63c3969f56adccf7426d820300000000000000", ino: 3, index: false),
    RealHandle("tmpfs A/u/f: write to lower file f (data copy-up)", "00fb210001ea844a00a6614223aa63c3969f56adcc693287b10c00000000000000", ino: 12, index: false),
    RealHandle("tmpfs A/u/meta: chmod of lower file (metacopy=on copy-up)", "00fb210001ea844a00a6614223aa63c3969f56adcc7ae4e09a0d00000000000000", ino: 13, index: false),
    RealHandle("tmpfs A/u/d2: mv d d2 (relative redirect)", "00fb210001ea844a00a6614223aa63c3969f56adcc8c1fc4400700000000000000", ino: 7, index: false),
    RealHandle("tmpfs A/u/b/x: mv a/x b/x (absolute redirect)", "00fb210001ea844a00a6614223aa63c3969f56adcc2ebed8b80a00000000000000", ino: 10, index: false),
    RealHandle("tmpfs A/u/h1: append to h1, lower hardlinked with h2 (index=on)", "00fb210001ea844a00a6614223aa63c3969f56adcc22b3c67f0e00000000000000", ino: 14, index: true),
    RealHandle("tmpfs N/u/dir: nfs_export=on: copy-up of dir (directory index entry)", "00fb210001ea844a00a6614223aa63c3969f56adccb00092c42600000000000000", ino: 38, index: true),
    RealHandle("tmpfs N/u/dir/g: nfs_export=on: write to dir/g", "00fb210001ea844a00a6614223aa63c3969f56adcc38c982882700000000000000", ino: 39, index: true),
    RealHandle("tmpfs O/u/f: uuid=off,index=on: write to f", "00fb2100010000000000000000000000000000000031e0bf3d3800000000000000", ino: 56, index: false),
    RealHandle("tmpfs O/u/.: uuid=off,index=on: upper root origin", "00fb21000100000000000000000000000000000000517f841f3400000000000000", ino: 52, index: false),
    RealHandle("tmpfs U/u/f: userxattr: write to f (user.overlay.origin)", "00fb210001ea844a00a6614223aa63c3969f56adccbb8ce2764400000000000000", ino: 68, index: false),
    RealHandle("tmpfs A/w/index: index=on: workdir/index upper xattr = upper root", "00fb210401ea844a00a6614223aa63c3969f56adcc3897aa150400000000000000", ino: 4, index: false),
    RealHandle("tmpfs N/w/index: nfs_export=on: index upper xattr = upper root", "00fb210401ea844a00a6614223aa63c3969f56adcc633a00a02300000000000000", ino: 35, index: false),
    RealHandle("tmpfs O/w/index: uuid=off: index upper = upper root", "00fb21040100000000000000000000000000000000e0999b7f3500000000000000", ino: 53, index: false),
    RealHandle("tmpfs N/w/index/<dir>: nfs_export=on directory index entry upper = upper dir", "00fb210401ea844a00a6614223aa63c3969f56adcc4f5ea1b92e00000000000000", ino: 46, index: false),
    RealHandle("tmpfs N/w/index/<h1>: rm h1 (lower h1/h2 hardlinked, nfs_export=on); index entry origin, nlink U+0", "00fb210001ea844a00a6614223aa63c3969f56adcca56e13592800000000000000", ino: 40, index: true)
]

// MARK: - File handles

@Suite struct FileHandleTests {
  @Test(arguments: realHandles)
  func decodesKernelWrittenHandle(_ row: RealHandle) throws {
    let value = hexBytes(row.hex)
    guard case .handle(let fh) = try FileHandle.decode(value) else {
      Issue.record("not decoded as a handle"); return
    }
    #expect(fh.flags == (row.isUpper ? FileHandle.flagUpper : 0))
    #expect(fh.isUpper == row.isUpper)
    #expect(fh.type == row.fs.fidType)
    #expect(fh.uuid == (row.uuidOff ? [UInt8](repeating: 0, count: 16) : row.fs.uuid))
    #expect(fh.fid.count == row.fs.fidLength)
    #expect(Int(value[2]) == FileHandle.headerLength + row.fs.fidLength)
    #expect(row.fs.inode(fh.fid) == row.ino)
    // Re-encoding gives the kernel's bytes, and the index name is their lower-case hex.
    #expect(fh.bytes == value)
    #expect(fh.indexName == Array(row.hex.utf8))
    #expect(Hex.encode(value) == row.hex)
    #expect(try FileHandle.decode(indexName: Array(row.hex.utf8)) == .handle(fh))
    // hex2bin accepts either case.
    #expect(try FileHandle.decode(indexName: Array(row.hex.uppercased().utf8)) == .handle(fh))
  }

  /// Index entry names exactly as `ls workdir/index` showed them.
  @Test(arguments: realHandles.filter(\.index))
  func realIndexNameMatchesOrigin(_ row: RealHandle) throws {
    guard case .handle(let fh) = try FileHandle.decode(indexName: Array(row.hex.utf8)) else {
      Issue.record("index name not decoded"); return
    }
    #expect(fh.indexName == Array(row.hex.utf8))
    #expect(fh.indexName.count == 2 * (FileHandle.headerLength + row.fs.fidLength))  // 58/66/82/66
    #expect(!fh.isUpper)
  }

  @Test func constructedHandleEncodesLikeKernel() {
    // ext4 A/u/f: ino 22 (0x16), generation 0xc7571dce.
    let fh = FileHandle(type: 0x01, uuid: FS.ext4.uuid, fid: hexBytes("16000000ce1d57c7"))
    #expect(Hex.encode(fh.bytes) == "00fb1d0001fef2d7b062cd4ea1978df1011473b46c16000000ce1d57c7")
  }

  @Test func trailingBytesAreIgnored() throws {
    // ext4: origin "…ce1d57c7dead" was still followed (st_ino stayed the lower's 22).
    let real = hexBytes("00fb1d0001fef2d7b062cd4ea1978df1011473b46c16000000ce1d57c7")
    guard case .handle(let fh) = try FileHandle.decode(real + [0xDE, 0xAD]) else {
      Issue.record("not a handle"); return
    }
    #expect(fh.bytes == real)
    #expect(fh.fid == hexBytes("16000000ce1d57c7"))
  }

  enum Outcome: Sendable, Equatable { case handle, empty, unsupported, badLength, badMagic }

  static func outcome(_ value: [UInt8], littleEndianHost: Bool = true) -> Outcome {
    do {
      switch try FileHandle.decode(value, littleEndianHost: littleEndianHost) {
      case .handle: return .handle
      case .empty: return .empty
      case .unsupported: return .unsupported
      }
    } catch .badLength { return .badLength } catch { return .badMagic }
  }

  static let ext4F = "00fb1d0001fef2d7b062cd4ea1978df1011473b46c16000000ce1d57c7"
  static let body = String(ext4F.dropFirst(6))  // flags onward
  static let tail = String(ext4F.dropFirst(8))  // type onward

  /// Kernel results observed by setting ext4 A/u/f's origin to the value, mounting with
  /// index=on,redirect_dir=on,metacopy=on and stat'ing f: "followed" = st_ino 22 (the
  /// lower), "unknown" = st_ino 29 (the upper); "invalid origin" = dmesg warning
  /// (ovl_check_fb_len returned EINVAL).
  static let unusual: [(String, Outcome)] = [
    ("", .empty),  // unknown, no warning
    (String(ext4F.prefix(40)), .badLength),  // 20 bytes: "invalid origin"
    ("00fb1d0001fef2d7b062cd4ea1978df1011473b46c", .badLength),  // 21 bytes, len 29: "invalid origin"
    ("00fb1e" + body, .badLength),  // len 30 > size 29: "invalid origin"
    ("00fa1d" + body, .badMagic),  // "invalid origin"
    ("01fb1d" + body, .unsupported),  // version 1: unknown, no warning
    ("00fb1d08" + tail, .unsupported),  // unknown flag: unknown, no warning
    ("00fb1d01" + tail, .unsupported),  // big-endian on x86: unknown, no warning
    ("00fb1d02" + tail, .handle),  // any-endian: followed
    ("00fb1d03" + tail, .handle),  // any-endian wins over big-endian
    ("00fb1d04" + tail, .handle),  // upper flag on an origin: followed
    (ext4F + "dead", .handle),  // trailing bytes: followed
  ]

  @Test(arguments: unusual)
  func invalidAndUnusualValues(_ hex: String, _ expected: Outcome) {
    #expect(Self.outcome(hexBytes(hex)) == expected)
  }

  @Test func lengthBelowHeader() {
    // ovl_check_fb_len only checks size >= 21 and size >= len, so len 20 is not EINVAL:
    // observed, no "invalid origin" warning and the origin is just not followed (st_ino 29).
    let value = hexBytes("00fb14" + Self.body)
    #expect(Self.outcome(value) == .unsupported)
  }

  @Test func endiannessOnBigEndianHost() {
    #expect(Self.outcome(hexBytes("00fb1d01" + Self.tail), littleEndianHost: false) == .handle)
    #expect(Self.outcome(hexBytes(Self.ext4F), littleEndianHost: false) == .unsupported)
    #expect(Self.outcome(hexBytes("00fb1d02" + Self.tail), littleEndianHost: false) == .handle)
  }

  @Test(arguments: [
    "",  // empty
    "00fb1d0001",  // shorter than 42 chars
    String(repeating: "0", count: 41),  // odd
    "zz" + String(ext4F.dropFirst(2)),  // not hex
    "foo",
  ])
  func badIndexNames(_ name: String) {
    #expect(throws: FileHandle.DecodeError.badLength) { try FileHandle.decode(indexName: Array(name.utf8)) }
  }

  @Test func hexRoundTrip() {
    let all = (0...255).map(UInt8.init)
    let text = Hex.encode(all)
    #expect(text == text.lowercased())
    #expect(text.hasPrefix("000102") && text.hasSuffix("fdfeff"))
    #expect(Hex.decode(Array(text.utf8)) == all)
    #expect(Hex.decode(Array(text.uppercased().utf8)) == all)
    #expect(Hex.decode(Array("abc".utf8)) == nil)
    #expect(Hex.decode(Array("0g".utf8)) == nil)
    #expect(Hex.decode([]) == [])
  }
}

// MARK: - Redirect

@Suite struct RedirectTests {
  /// Values the kernel wrote (identical on ext4, xfs, btrfs and tmpfs).
  @Test(arguments: [
    ("64", Redirect.relative(Array("d".utf8))),  // A: mv d d2
    ("2f612f78", .absolute([Array("a".utf8), Array("x".utf8)])),  // A: mv a/x b/x
    ("2f6d63", .absolute([Array("mc".utf8)])),  // ext4 P: mv of a metacopy file mc → sub/mc2
  ])
  func kernelWritten(_ hex: String, _ expected: Redirect) throws {
    let value = hexBytes(hex)
    let r = try Redirect(value: value)
    #expect(r == expected)
    #expect(r.value == value)
    #expect(r.fitsKernelLimit)
  }

  /// Setting d2's redirect to these and listing it failed EINVAL with "invalid redirect".
  @Test(arguments: [
    ("", Redirect.DecodeError.empty),
    ("/", .emptyComponent),
    ("//x", .emptyComponent),
    ("//d", .emptyComponent),
    ("/x//y", .emptyComponent),
    ("/x/", .emptyComponent),
    ("/d/", .emptyComponent),
    ("a/b", .slashInRelative),
  ])
  func invalid(_ text: String, _ error: Redirect.DecodeError) {
    #expect(throws: error) { try Redirect(value: Array(text.utf8)) }
  }

  @Test func validForms() throws {
    #expect(try Redirect(value: Array("/d".utf8)) == .absolute([Array("d".utf8)]))  // followed
    #expect(try Redirect(value: Array("/a/b/c".utf8)).value == Array("/a/b/c".utf8))
    #expect(try Redirect(value: Array("name with space".utf8)) == .relative(Array("name with space".utf8)))
    #expect(try Redirect(value: [0xFF, 0xFE]) == .relative([0xFF, 0xFE]))
  }

  @Test func nulByte() throws {
    // Observed: d2's redirect "d\0x" (64 00 78) was followed as "d" (ls listed d's entries,
    // no warning): the kernel reads the value as a C string.
    #expect(try Redirect(value: [0x64, 0x00, 0x78]) == .relative([0x64]))
  }

  @Test func kernelLimit() {
    #expect(Redirect.relative(Array(repeating: 0x61, count: 256)).fitsKernelLimit)
    #expect(!Redirect.relative(Array(repeating: 0x61, count: 257)).fitsKernelLimit)
    #expect(Redirect.absolute([Array(repeating: 0x61, count: 255)]).fitsKernelLimit)
    #expect(!Redirect.absolute([Array(repeating: 0x61, count: 256)]).fitsKernelLimit)
  }
}

// MARK: - Small xattrs

@Suite struct SmallXattrTests {
  @Test(arguments: [
    ("y", Opaque?.some(.opaque)),  // ext4/xfs/btrfs U: mkdir over a whiteout → 79
    ("x", .xwhiteouts),
    ("yes", nil), ("0", nil), ("", nil), ("Y", nil), ("n", nil),
  ])
  func opaque(_ text: String, _ expected: Opaque?) {
    #expect(Opaque(value: Array(text.utf8)) == expected)
    if let expected { #expect(expected.value == Array(text.utf8)) }
  }

  @Test func opaqueAbsent() { #expect(Opaque(value: nil) == nil) }

  @Test func impure() {
    #expect(Impure.isSet(hexBytes("79")))  // every copied-up parent and upper root above
    #expect(!Impure.isSet(nil))
    #expect(!Impure.isSet([]))
    #expect(!Impure.isSet(Array("yes".utf8)))
    #expect(!Impure.isSet(Array("x".utf8)))
  }

  /// nlink values the kernel wrote: "U+0" on every indexed hardlink (A/h1 and index entry
  /// on all four fs; N's index entry of the removed h1), "U-1" on N's dir/g (nfs_export
  /// copy-up: the upper inode has 2 links, the index entry and g, the overlay shows 1).
  @Test(arguments: [
    ("552b30", NlinkXattr.Base.upper, 0, 2, 2),  // A/h1: upper inode nlink 2 (h1 + index entry)
    ("552d31", .upper, -1, 2, 1),
  ])
  func nlinkKernelWritten(_ hex: String, _ base: NlinkXattr.Base, _ delta: Int, _ baseLinks: Int, _ links: Int) throws {
    let n = try #require(NlinkXattr(value: hexBytes(hex)))
    #expect(n.base == base && n.delta == delta)
    #expect(n.value == hexBytes(hex))
    #expect(n.overlayLinks(baseLinks: baseLinks) == links)
  }

  @Test(arguments: [
    ("U+0", NlinkXattr?.some(NlinkXattr(base: .upper, delta: 0))),
    ("L-2", NlinkXattr(base: .lower, delta: -2)),
    ("L+12", NlinkXattr(base: .lower, delta: 12)),
    ("U-1234567890", NlinkXattr(base: .upper, delta: -1_234_567_890)),  // 12 bytes
    ("X+1", nil), ("U1", nil), ("U+", nil), ("U+1a", nil), ("u+1", nil), ("", nil),
    ("U-12345678901", nil),  // 13 bytes
  ])
  func nlink(_ text: String, _ expected: NlinkXattr?) {
    let n = NlinkXattr(value: Array(text.utf8))
    #expect(n == expected)
    if let n { #expect(n.value == Array(text.utf8)); #expect(n.description == text) }
  }

  @Test func nlinkFallback() {
    #expect(NlinkXattr(base: .upper, delta: -1).overlayLinks(baseLinks: 1) == nil)
    #expect(NlinkXattr(base: .lower, delta: -3).overlayLinks(baseLinks: 2) == nil)
  }

  @Test func metacopyKernelWritten() throws {
    // chmod of a lower file with metacopy=on wrote an empty value (all four fs).
    let m = try Metacopy(value: [])
    #expect(m == Metacopy())
    #expect(m.algorithm == .none && m.digest.isEmpty)
    #expect(m.value == [])
  }

  @Test func metacopySha256() throws {
    let digest = (0..<32).map { UInt8($0 * 7 & 0xFF) }
    let value: [UInt8] = [0, 36, 0, 1] + digest
    let m = try Metacopy(value: value)
    #expect(m.algorithm == .sha256)
    #expect(m.digest == digest)
    #expect(m.value == value)
    #expect(Metacopy(algorithm: .sha256, digest: digest).value == value)
    #expect(try Metacopy(value: [0, 4, 0, 0]) == Metacopy())
  }

  @Test(arguments: [
    ([UInt8(0)], Metacopy.DecodeError.tooShort),
    ([0, 2], .tooShort),
    ([0, 3, 0], .tooShort),
    ([1, 4, 0, 0], .badVersion),
    ([0, 5, 0, 0], .badLength),
    ([0, 36, 0, 1] + [UInt8](repeating: 0xAB, count: 31), .badLength),
    ([0, 4, 0, 0, 9], .badLength),
  ])
  func metacopyInvalid(_ value: [UInt8], _ error: Metacopy.DecodeError) {
    #expect(throws: error) { try Metacopy(value: value) }
  }

  /// ext4 Q: lower `chattr +a` then append → "a" (61); `chattr +i` / `+ai` through the
  /// overlay → "i" (69) / "ai" (6169); the upper inode itself had no flags.
  @Test(arguments: [
    ("61", Protattr?.some(.appendOnly)),
    ("69", .immutable),
    ("6169", Protattr?.some(Protattr.both)),
  ])
  func protattrKernelWritten(_ hex: String, _ expected: Protattr?) {
    let p = Protattr(value: hexBytes(hex))
    #expect(p == expected)
    #expect(p?.value == hexBytes(hex))
  }

  @Test(arguments: [
    ("a", Protattr?.some(.appendOnly)), ("i", Protattr.immutable), ("ai", Protattr.both),
    ("ia", Protattr.both), ("", nil), ("z", nil), ("aZ", nil),
    (String(repeating: "a", count: 32), Protattr.appendOnly), (String(repeating: "a", count: 33), nil),
  ] as [(String, Protattr?)])
  func protattr(_ text: String, _ expected: Protattr?) {
    #expect(Protattr(value: Array(text.utf8)) == expected)
  }

  @Test func overlayUUID() throws {
    // ext4 A upper root: trusted.overlay.uuid written at the first (uuid=auto) mount.
    let u = try #require(OverlayUUID(value: hexBytes("4f11cf6d532141fd99de080076bb6696")))
    #expect(!u.isNull)
    #expect(u.bytes == hexBytes("4f11cf6d532141fd99de080076bb6696"))
    #expect(OverlayUUID(value: [UInt8](repeating: 0, count: 16))?.isNull == true)
    #expect(OverlayUUID(value: [UInt8](repeating: 1, count: 15)) == nil)
    #expect(OverlayUUID(value: [UInt8](repeating: 1, count: 17)) == nil)
    #expect(OverlayUUID(value: []) == nil)
  }
}

extension Protattr {
  static let both: Protattr = [.appendOnly, .immutable]
}

// MARK: - Xattr namespaces

@Suite struct XattrNamespaceTests {
  static func b(_ s: String) -> [UInt8] { Array(s.utf8) }

  @Test func names() {
    #expect(XattrNamespace.trusted.name(.origin) == Self.b("trusted.overlay.origin"))
    #expect(XattrNamespace.user.name(.origin) == Self.b("user.overlay.origin"))  // U scenario
    #expect(XattrNamespace.trusted.name(.protattr) == Self.b("trusted.overlay.protattr"))
    for key in OverlayXattr.allCases {
      #expect(XattrNamespace.trusted.name(key) == Self.b("trusted.overlay." + key.rawValue))
      #expect(XattrNamespace.user.name(key) == Self.b("user.overlay." + key.rawValue))
    }
  }

  /// (namespace, name in a layer, private?, name in the merged view (nil: hidden))
  @Test(arguments: [
    (XattrNamespace.trusted, "trusted.overlay.origin", true, String?.none),
    (.trusted, "trusted.overlay.", true, nil),
    // ext4 P: lower trusted.overlay.overlay.esc=0x6869 was copied up as is and shown as
    // trusted.overlay.esc on the merged view.
    (.trusted, "trusted.overlay.overlay.esc", false, "trusted.overlay.esc"),
    (.trusted, "trusted.overlay.overlay.whiteout", false, "trusted.overlay.whiteout"),
    (.trusted, "trusted.overlay.overlay.overlay.x", false, "trusted.overlay.overlay.x"),
    (.trusted, "trusted.overlayx", false, "trusted.overlayx"),
    (.trusted, "trusted.other", false, "trusted.other"),
    (.trusted, "user.overlay.origin", false, "user.overlay.origin"),
    (.trusted, "security.selinux", false, "security.selinux"),
    (.user, "user.overlay.origin", true, nil),
    (.user, "user.overlay.overlay.esc", false, "user.overlay.esc"),
    (.user, "trusted.overlay.origin", false, "trusted.overlay.origin"),  // not private with userxattr
    (.user, "trusted.overlay.overlay.esc", false, "trusted.overlay.overlay.esc"),
    (.user, "user.foo", false, "user.foo"),
  ])
  func privacyAndViewName(_ ns: XattrNamespace, _ name: String, _ isPrivate: Bool, _ view: String?) {
    #expect(ns.isPrivate(Self.b(name)) == isPrivate)
    #expect(ns.viewName(Self.b(name)) == view.map(Self.b))
    if let view { #expect(ns.layerName(Self.b(view)) == Self.b(name)) }
  }

  @Test func layerNameEscapes() {
    #expect(XattrNamespace.trusted.layerName(Self.b("trusted.overlay.foo")) == Self.b("trusted.overlay.overlay.foo"))
    #expect(XattrNamespace.user.layerName(Self.b("user.overlay.foo")) == Self.b("user.overlay.overlay.foo"))
    #expect(XattrNamespace.user.layerName(Self.b("trusted.overlay.foo")) == Self.b("trusted.overlay.foo"))
    #expect(XattrNamespace.trusted.layerName(Self.b("user.x")) == Self.b("user.x"))
  }
}

// MARK: - JSONLine.string

@Suite struct JSONStringTests {
  static func json(_ bytes: [UInt8]) -> String {
    var out: [UInt8] = []
    JSONLine.string(bytes, into: &out)
    return String(decoding: out, as: UTF8.self)
  }

  @Test(arguments: [
    ([UInt8](), #""""#),
    (Array("plain".utf8), #""plain""#),
    (Array(#"a"b\c"#.utf8), #""a\"b\\c""#),
    (Array("/".utf8), #""/""#),
    ([0x00, 0x01, 0x09, 0x0A, 0x1F, 0x20, 0x7E, 0x7F], #""\u0000\u0001\u0009\u000a\u001f ~\u007f""#),
    (Array("é€😀".utf8), "\"é€😀\""),  // 2-, 3-, 4-byte sequences kept raw
    ([0xC2, 0x80], "\"\u{80}\""),  // smallest 2-byte
    ([0xDF, 0xBF], "\"\u{7FF}\""),
    ([0xE0, 0xA0, 0x80], "\"\u{800}\""),  // smallest 3-byte
    ([0xED, 0x9F, 0xBF], "\"\u{D7FF}\""),  // last before surrogates
    ([0xEE, 0x80, 0x80], "\"\u{E000}\""),
    ([0xF0, 0x90, 0x80, 0x80], "\"\u{10000}\""),
    ([0xF4, 0x8F, 0xBF, 0xBF], "\"\u{10FFFF}\""),  // 4-byte max
    // Invalid: every byte escaped.
    ([0xC0, 0xAF], #""\u00c0\u00af""#),  // overlong "/"
    ([0xC1, 0xBF], #""\u00c1\u00bf""#),  // overlong
    ([0xE0, 0x80, 0xAF], #""\u00e0\u0080\u00af""#),  // overlong 3-byte
    ([0xF0, 0x80, 0x80, 0xAF], #""\u00f0\u0080\u0080\u00af""#),  // overlong 4-byte
    ([0xED, 0xA0, 0x80], #""\u00ed\u00a0\u0080""#),  // surrogate U+D800
    ([0xED, 0xBF, 0xBF], #""\u00ed\u00bf\u00bf""#),  // surrogate U+DFFF
    ([0xF4, 0x90, 0x80, 0x80], #""\u00f4\u0090\u0080\u0080""#),  // U+110000
    ([0xF5, 0x80, 0x80, 0x80], #""\u00f5\u0080\u0080\u0080""#),
    ([0xFE, 0xFF], #""\u00fe\u00ff""#),
    ([0x80], #""\u0080""#),  // lone continuation
    ([0xE2, 0x82], #""\u00e2\u0082""#),  // truncated at end
    ([0xE2, 0x82, 0x41], #""\u00e2\u0082A""#),  // truncated before ASCII
    ([0xF0, 0x9F, 0x98], #""\u00f0\u009f\u0098""#),  // truncated 4-byte
    ([0xC3], #""\u00c3""#),
    ([0xC3, 0xA9, 0xC3], "\"é\\u00c3\""),  // valid then truncated
    ([0xE2, 0x28, 0xA1], #""\u00e2(\u00a1""#),
    ([0x61, 0xFF, 0x22], #""a\u00ff\"""#),
  ])
  func escaping(_ bytes: [UInt8], _ expected: String) {
    #expect(Self.json(bytes) == expected)
  }

  @Test func everyByteRoundTrips() {
    // Every single byte gives either itself, a two-char escape, or \u00XX lower-case.
    for b in UInt8(0)...255 {
      let s = Self.json([b])
      if b >= 0x20 && b < 0x7F && b != 0x22 && b != 0x5C {
        #expect(s == "\"" + String(UnicodeScalar(b)) + "\"")
      } else if b == 0x22 || b == 0x5C {
        #expect(s == "\"\\" + String(UnicodeScalar(b)) + "\"")
      } else {
        #expect(s == "\"\\u00" + Hex.encode([b]) + "\"")
      }
    }
  }
}

@Suite struct ByteKeyTests {
  @Test func equalBytesAreOneKeyAndOthersAreNot() {
    let names: [[UInt8]] = [[], [0x61], [0x61, 0x62], [0x62, 0x61], [0xFF, 0x00, 0x2F], Array(repeating: 0x78, count: 255)]
    var set = Set(names.map(ByteKey.init))
    #expect(set.count == names.count)
    for name in names {
      #expect(set.contains(ByteKey(Array(name))))
      #expect(ByteKey(name).hashValue == ByteKey(Array(name)).hashValue)
    }
    #expect(!set.contains(ByteKey([0x61, 0x62, 0x63])))
    set.insert(ByteKey([0x61]))
    #expect(set.count == names.count)
  }
}

/// `PosixACL`: the xattr codec and `posix_acl_create`'s masking (values as setfacl and the
/// kernel wrote them on 6.18).
@Suite struct PosixACLTests {
  static func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var i = s.startIndex
    while i < s.endIndex {
      let j = s.index(i, offsetBy: 2)
      out.append(UInt8(s[i..<j], radix: 16) ?? 0)
      i = j
    }
    return out
  }

  /// `u::rwx,u:1000:r-x,g::r-x,m::rwx,o::r-x`
  static let extended = hex("0200000001000700ffffffff02000500e803000004000500ffffffff10000700ffffffff20000500ffffffff")
  /// `u::rwx,g::rwx,o::rwx`
  static let open = hex("0200000001000700ffffffff04000700ffffffff20000700ffffffff")

  @Test func roundTrip() throws {
    let acl = try #require(PosixACL(xattr: Self.extended))
    #expect(acl.entries.count == 5)
    #expect(acl.entries[1] == PosixACL.Entry(tag: PosixACL.user, permissions: 5, id: 1000))
    #expect(acl.xattrValue == Self.extended)
    #expect(PosixACL(xattr: Array(Self.extended.dropLast())) == nil)
    #expect(PosixACL(xattr: [1, 0, 0, 0] + Array(Self.extended.dropFirst(4))) == nil)
    #expect(PosixACL(xattr: [2, 0, 0, 0]) == nil)
  }

  @Test func createMasksTheModeAndTheACL() throws {
    let extended = try #require(PosixACL(xattr: Self.extended))
    // A file (0666): the mask entry takes the group class, `o::r-x` cuts other to r--.
    let file = extended.create(mode: 0o666, isDirectory: false)
    #expect(file.permissions == 0o664)
    #expect(file.access?.xattrValue == Self.hex("0200000001000600ffffffff02000500e803000004000500ffffffff10000600ffffffff20000400ffffffff"))
    #expect(file.default == nil)
    // A directory (0777) also inherits the default ACL.
    let dir = extended.create(mode: 0o777, isDirectory: true)
    #expect(dir.permissions == 0o775)
    #expect(dir.access?.xattrValue == Self.extended)
    #expect(dir.default?.xattrValue == Self.extended)
    // A minimal ACL that allows everything: no umask, no access ACL.
    let open = try #require(PosixACL(xattr: Self.open))
    #expect(open.create(mode: 0o666, isDirectory: false).permissions == 0o666)
    #expect(open.create(mode: 0o666, isDirectory: false).access == nil)
    #expect(open.create(mode: 0o2777, isDirectory: true).permissions == 0o2777)
  }
}

/// `user.containers.override_stat` in containers/storage's current form (its own test
/// values) and the older forms without a type (c/storage before 1.57, fuse-overlayfs).
@Suite struct OverrideStatTests {
  @Test(arguments: [
    ("1000:1011:0644:file", OverrideStat(uid: 1000, gid: 1011, permissions: 0o644, type: .regular)),
    ("1001:1012:0755:dir", OverrideStat(uid: 1001, gid: 1012, permissions: 0o755, type: .directory)),
    ("1002:1013:0777:symlink", OverrideStat(uid: 1002, gid: 1013, permissions: 0o777, type: .symlink)),
    ("1003:1014:0666:pipe", OverrideStat(uid: 1003, gid: 1014, permissions: 0o666, type: .fifo)),
    ("1004:1015:0700:socket", OverrideStat(uid: 1004, gid: 1015, permissions: 0o700, type: .socket)),
    ("1005:1016:0600:block-8-0", OverrideStat(uid: 1005, gid: 1016, permissions: 0o600, type: .block(major: 8, minor: 0))),
    ("1006:1017:0600:char-1-3", OverrideStat(uid: 1006, gid: 1017, permissions: 0o600, type: .character(major: 1, minor: 3))),
    ("1012:1022:4755:file", OverrideStat(uid: 1012, gid: 1022, permissions: 0o4755, type: .regular)),
    ("1014:1024:1777:file", OverrideStat(uid: 1014, gid: 1024, permissions: 0o1777, type: .regular)),
    ("0:0:0000:file", OverrideStat(uid: 0, gid: 0, permissions: 0, type: .regular)),
  ])
  func currentFormRoundTrips(_ text: String, _ expected: OverrideStat) {
    #expect(OverrideStat(xattr: Array(text.utf8)) == expected)
    #expect(String(decoding: expected.xattrValue, as: UTF8.self) == text)
  }

  @Test(arguments: [
    ("0:0:0755", OverrideStat(uid: 0, gid: 0, permissions: 0o755, type: nil)),  // c/storage < 1.57
    ("0:0:0100644", OverrideStat(uid: 0, gid: 0, permissions: 0o644, type: .regular)),  // with S_IFMT
    ("5:6:40755", OverrideStat(uid: 5, gid: 6, permissions: 0o755, type: .directory)),
    ("1:2:3:block-3-4-option_from_the_future", OverrideStat(uid: 1, gid: 2, permissions: 0o3, type: .block(major: 3, minor: 4))),
  ])
  func olderAndLaterFormsAreRead(_ text: String, _ expected: OverrideStat) {
    #expect(OverrideStat(xattr: Array(text.utf8)) == expected)
  }

  @Test(arguments: [
    "", "1000:1001", "invalid:1001:0644:file", "1:2:0644:disk-1-2", "1:2:0644:block800", "1:2:0644:block-abc-0",
    "1:2:0644:char-1-xyz", "1:2:0998:file", "-1:2:0644:file", "1:2:10644:file", "4294967296:0:0644:file",
    "1:2:0644:file:extra", " 1:2:0644:file", "1:2:020644", "1:2:0644:",
  ])
  func malformedValuesAreNotGuessed(_ text: String) {
    #expect(OverrideStat(xattr: Array(text.utf8)) == nil)
  }
}
