import Foundation
import Testing

/// index=on stacks written by the kernel itself: hard links whose other alias was copied up
/// show the index inode, and a broken index dir makes both the kernel and ovltool refuse.
@Suite(.serialized) struct KernelIndexTests {
  /// Runs `script` with `$1` = the stack dir in a private mount namespace.
  func inNamespace(_ script: String, _ dir: Harness.TempDir) -> Harness.Result {
    Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-ec", script, "sh", dir.path])
  }

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"))
  func copiedUpHardLinkAliasesShowTheIndexInode() throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("index")
    let made = inNamespace("""
      cd "$1"; mkdir l1 u w m
      printf hello > l1/a; ln l1/a l1/b; ln l1/a l1/c; mkdir l1/d; printf x > l1/d/single
      mount -t overlay overlay -o lowerdir=l1,upperdir=u,workdir=w,index=on m
      printf more >> m/a; chmod 600 m/a; printf y >> m/d/single
      umount m
      """, dir)
    #expect(made.status == 0, "\(made.stderr)")
    let options = "lowerdir=\(dir.path)/l1,upperdir=\(dir.path)/u,workdir=\(dir.path)/w,index=on"
    let ours = Harness.ovltoolView(options, ino: true)
    if case .success(let lines) = ours {
      // b and c were never copied up, yet show the copied-up data and mode.
      #expect(lines.contains { $0.contains(#""path":"/b""#) && $0.contains(#""mode":384"#) && $0.contains(#""size":9"#) })
    }
    Harness.compare(ours, Harness.kernelView(options, in: dir, ino: true), spec: "index=on, a/b/c hard links, a written")
  }

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"), arguments: [
    ("entry without origin", "mknod w/index/00fb1d0001000000000000000000000000000000000bc0fb00d6a7243f c 1 3"),
    ("name that is not a handle", "touch w/index/foo"),
    ("upper root origin from another lower", "setfattr -n trusted.overlay.origin -v 0x00fb1d000100000000000000000000000000000000aaaaaaaabbbbbbbb u"),
  ])
  func brokenIndexDirIsRefusedLikeTheKernel(_ label: String, _ damage: String) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("index")
    let made = inNamespace("""
      cd "$1"; mkdir l1 l2 u w m
      printf a > l1/a; printf b > l2/b
      mount -t overlay overlay -o lowerdir=l1:l2,upperdir=u,workdir=w,index=on m
      umount m
      \(damage)
      """, dir)
    #expect(made.status == 0, "\(made.stderr)")
    let options = "lowerdir=\(dir.path)/l1:\(dir.path)/l2,upperdir=\(dir.path)/u,workdir=\(dir.path)/w,index=on"
    let ours = Harness.ovltoolView(options, ino: true)
    if case .failure(let error) = ours {
      #expect("\(error)".contains("refuses to mount"), "\(label): \(error)")
    }
    Harness.compare(ours, Harness.kernelView(options, in: dir, ino: true), spec: label)
  }
}
