import Foundation
import Testing

/// `st_ino` as the kernel's stat(2) shows it, compared with `ovltool tree --json --ino`:
/// copied-up files keep their lower's number unless the lower was a broken hard link,
/// merged and redirected directories show their lower's, an `origin` that is stale, of
/// another type or not a handle is no origin, and across filesystems xino's high bits (or,
/// without xino, a number the kernel makes up per mount for directories).
@Suite(.serialized) struct InodeNumberTests {
  struct Case: CustomTestStringConvertible, Sendable {
    let name: String
    /// Where the upper and work dirs live, and where the second lower does: "same" (the
    /// test dir's filesystem) or "tmpfs" (one of its own).
    let upperFS: String
    let lower2FS: String
    let options: String
    var testDescription: String { name }
  }

  static let cases: [Case] = [
    Case(name: "one filesystem", upperFS: "same", lower2FS: "same", options: "redirect_dir=on"),
    Case(name: "one filesystem, index=on", upperFS: "same", lower2FS: "same", options: "redirect_dir=on,index=on"),
    Case(name: "one filesystem, nfs_export=on", upperFS: "same", lower2FS: "same", options: "index=on,nfs_export=on"),
    Case(name: "upper on tmpfs, xino=off", upperFS: "tmpfs", lower2FS: "same", options: "redirect_dir=on,xino=off"),
    Case(name: "upper on tmpfs, xino=on", upperFS: "tmpfs", lower2FS: "same", options: "redirect_dir=on,xino=on"),
    Case(name: "upper on tmpfs, xino=auto", upperFS: "tmpfs", lower2FS: "same", options: "redirect_dir=on,xino=auto"),
    Case(name: "three filesystems, xino=on, index=on", upperFS: "tmpfs", lower2FS: "tmpfs", options: "redirect_dir=on,xino=on,index=on"),
    Case(name: "three filesystems, xino=off", upperFS: "tmpfs", lower2FS: "tmpfs", options: "xino=off"),
  ]

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs"), arguments: cases)
  func inodeNumbersMatchTheKernel(_ c: Case) throws {
    if Harness.requireKernel { Harness.requireKernelOrFail() }
    let dir = Harness.TempDir("ino")
    // Everything in one private namespace: the tmpfs layers exist only there.
    let script = #"""
      set -e
      D="$1"; T="$2"; W="$3"; cd "$D"; mkdir -p l1 l2 up m
      [ "\#(c.upperFS)" = tmpfs ] && mount -t tmpfs t up
      [ "\#(c.lower2FS)" = tmpfs ] && mount -t tmpfs t l2
      mkdir up/u up/w
      echo a > l1/single; echo b > l1/linked; ln l1/linked l1/alias; mkdir -p l1/d/sub l1/moved; echo c > l1/d/g
      echo s > l1/stale; echo t > l1/typed; mkfifo l1/fifo; ln -s target l1/sym
      echo low > l2/deep; mkdir l2/d; echo e > l2/d/e2; echo f > l2/untouched
      O="lowerdir=$D/l1:$D/l2,upperdir=$D/up/u,workdir=$D/up/w,\#(c.options)"
      mount -t overlay o m -o "$O"
      touch m/single m/linked m/d/g m/deep m/fifo; chmod 700 m/d; mv m/moved m/moved2 2>/dev/null || true
      echo new > m/pure; mkdir m/puredir; touch m/stale m/typed
      umount m
      rm l1/stale
      # An origin of a directory on a regular file: another type, no origin.
      getfattr -n trusted.overlay.origin -e hex up/u/d 2>/dev/null | sed -n 's/^trusted.overlay.origin=//p' > dorigin
      [ -s dorigin ] && setfattr -n trusted.overlay.origin -v "$(cat dorigin)" up/u/typed
      echo junk > up/u/junk; setfattr -n trusted.overlay.origin -v 0x00fb1d0001 up/u/junk
      "$T" tree --json --ino -o "$O" | sed 's/,"mtime":[0-9]*//; s/,"layer":[0-9]*}$/}/' > ours.txt
      mount -t overlay o m -o "ro,$O"
      python3 "$W" m --ino | sed 's/,"mtime":[0-9]*//' > kernel.txt
      umount m
      """#
    let r = Harness.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh", dir.path, Harness.ovltool, Harness.walker])
    #expect(r.status == 0, "\(r.stderr)")
    let ours = ((try? String(contentsOfFile: dir.path + "/ours.txt", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    var kernel = ((try? String(contentsOfFile: dir.path + "/kernel.txt", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    #expect(ours.count > 10 && ours.count == kernel.count, "\(ours.count) lines against \(kernel.count)")
    // A number the kernel makes up per mount: ovltool says null, any number matches.
    for i in ours.indices where i < kernel.count && ours[i].contains(#""ino":null"#) {
      kernel[i] = kernel[i].replacingOccurrences(of: #""ino":[0-9]+"#, with: #""ino":null"#, options: .regularExpression)
    }
    #expect(ours == kernel, "\(Harness.diff(ours, kernel))")
    if c.upperFS == "same" {
      // On one filesystem every number is the kernel's, none made up.
      #expect(!ours.contains { $0.contains(#""ino":null"#) })
    }
  }
}
