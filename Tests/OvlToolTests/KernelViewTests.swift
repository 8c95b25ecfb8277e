import Testing

/// Kernel-differential tests of the merged view: each fixture is built on disk, walked by
/// ovltool, then mounted read-only by the kernel and walked by the oracle; every field of
/// every entry must match (the `layer` field excepted: the mount cannot show it).
@Suite(.serialized) struct KernelViewTests {
  struct Case: CustomTestStringConvertible, Sendable {
    let name: String
    let spec: String
    var options = ""
    var testDescription: String { name }
  }

  static let deepDir = (1...120).map { "d\($0)" }.joined(separator: "/")
  static let longName = String(repeating: "n", count: 255)

  static let cases: [Case] = [
    Case(name: "every file type, modes, owners, xattrs, one lower", spec: """
      [upper]
      file /up "upper\\n" mode=4755 uid=12 gid=34 mtime=1600000000.123456789 xattr.user.color=red
      dir /shared mode=1777
      file /shared/u "u"
      [lower l1]
      file /low "low" mode=0600 xattr.user.bin=0x00ff10 xattr.trusted.other=t
      dir /shared mode=0700 uid=5
      file /shared/l "l" mode=2755
      symlink /link ../somewhere/else
      fifo /fifo mode=0640
      char /null 1 3
      block /loop 7 0 mode=0660
      socket /sock
      link /low2 /low
      """),
    Case(name: "lower-only stack of two layers", spec: """
      [lower l1]
      file /a "1"
      dir /d
      file /d/x "x1"
      [lower l2]
      file /a "2"
      file /b "b"
      dir /d mode=0700
      file /d/x "x2"
      file /d/y "y2"
      """),
    Case(name: "four lowers and an upper", spec: """
      [upper]
      file /d/u "u"
      [lower l1]
      file /d/1 "1"
      [lower l2]
      file /d/2 "2"
      whiteout /d/4
      [lower l3]
      file /d/3 "3"
      file /d/1 "shadowed"
      [lower l4]
      file /d/4 "hidden by l2"
      file /d/5 "5"
      """),
    Case(name: "whiteouts in upper and middle lower", spec: """
      [upper]
      whiteout /gone
      whiteout /gonedir
      dir /d
      whiteout /d/x
      whiteout /never-existed
      [lower l1]
      whiteout /mid
      file /d/y "y"
      [lower l2]
      file /gone "g"
      dir /gonedir
      file /gonedir/inner "i"
      file /mid "m"
      file /d/x "x"
      """),
    Case(name: "opaque directories, and values the kernel ignores", spec: """
      [upper]
      dir /o opaque=y
      file /o/new "n"
      dir /notopaque opaque=yes
      dir /zero opaque=0
      [lower l1]
      dir /m opaque=y
      file /m/a "a1"
      file /o/hidden "h"
      file /notopaque/seen "s"
      file /zero/seen "s"
      [lower l2]
      file /m/b "b2"
      """),
    Case(name: "xattr whiteouts: marked, unmarked, upper, lowest, root", spec: """
      [upper]
      xwhiteout /upperxw
      dir /xd
      [lower l1]
      dir / opaque=x
      xwhiteout /rootxw
      dir /xd opaque=x
      xwhiteout /xd/gone
      file /xd/kept "k"
      dir /plain
      xwhiteout /plain/gone
      file /nonzero "data" whiteout
      [lower l2]
      file /upperxw "u"
      file /rootxw "r"
      file /xd/gone "g"
      file /plain/gone "g"
      dir /lowestx opaque=x
      xwhiteout /lowestx/w
      """),
    Case(name: "directory and file of the same name across layers", spec: """
      [upper]
      dir /ud
      file /ud/a "a"
      file /uf "file"
      [lower l1]
      file /ud "lower file"
      dir /uf
      file /uf/y "y"
      file /fd "l1 file"
      dir /mm
      file /mm/1 "1"
      [lower l2]
      dir /fd
      file /fd/z "z"
      dir /mm
      file /mm/2 "2"
      [lower l3]
      file /mm "l3 file stops nothing above"
      """),
    Case(name: "redirects: relative, absolute, middle layer, chains, intermediate components", spec: """
      [upper]
      dir /relt redirect=orig
      file /relt/u "u"
      dir /abs redirect=/p/q
      dir /ch redirect=/chb
      dir /ia redirect=/ix
      dir /ia/b
      whiteout /orig
      whiteout /chb
      [lower l1]
      dir /orig
      file /orig/o "o"
      dir /p/q
      file /p/q/f "pq"
      dir /mid redirect=midt
      file /mid/m1 "m1"
      dir /chb redirect=/chc
      file /chb/b "b"
      dir /ix/b
      file /ix/b/f1 "f1"
      [lower l2]
      dir /midt
      file /midt/m2 "m2"
      dir /chc
      file /chc/c "c"
      dir /ix/b
      file /ix/b/f2 "f2"
      dir /lowest redirect=a/b
      file /lowest/ok "redirect in the lowest layer is never read"
      """),
    Case(name: "redirects under opaque and pure-upper parents", spec: """
      [upper]
      dir /o opaque=y
      dir /o/k redirect=/z
      dir /o/r redirect=z
      dir /pure
      dir /pure/k redirect=/z
      [lower l1]
      dir /z
      file /z/f "z"
      file /o/hidden "h"
      """),
    Case(name: "invalid redirects fail lookup like the kernel", spec: """
      [upper]
      dir /empty redirect=""
      dir /slash redirect=/
      dir /double redirect=//x
      dir /trailing redirect=/x/
      dir /relslash redirect=a/b
      dir /dot redirect=..
      [lower l1]
      dir /x
      """),
    Case(name: "redirect_dir=nofollow refuses to follow", spec: """
      [upper]
      dir /r redirect=/t
      dir /pure
      dir /pure/k redirect=/t
      [lower l1]
      dir /t
      file /t/f "f"
      dir /pure
      """, options: "redirect_dir=nofollow"),
    Case(name: "redirect_dir=off follows", spec: """
      [upper]
      dir /r redirect=/t
      [lower l1]
      dir /t
      file /t/f "f"
      """, options: "redirect_dir=off"),
    Case(name: "metacopy files with metacopy=on", spec: """
      [upper]
      file /mc size=10 metacopy mode=0600 uid=7
      file /mr size=3 metacopy redirect=/dd/x
      file /mrel size=4 metacopy redirect=relx
      file /ch size=5 metacopy
      file /nolow size=2 metacopy
      file /bad "" xattr.trusted.overlay.metacopy=0x0102
      file /full "full data" redirect=/dd/x
      [lower l1]
      file /mc "0123456789" xattr.user.lower=1
      dir /dd
      file /dd/x "abc"
      file /relx "rel!"
      file /ch size=5 metacopy redirect=/cdata
      [lower l2]
      file /cdata "chain"
      """, options: "metacopy=on"),
    Case(name: "metacopy refused without metacopy=on", spec: """
      [upper]
      file /mc size=10 metacopy
      [lower l1]
      file /mc "0123456789"
      """),
    Case(name: "data-only layers", spec: """
      [upper]
      file /um size=4 metacopy
      [lower l1]
      file /dl size=6 metacopy redirect=/blob
      file /rel size=6 metacopy redirect=blob
      file /um size=4 metacopy redirect=/sub/b2
      file /missing size=1 metacopy redirect=/nothere
      [data d1]
      file /blob "blob!!"
      file /sub/b2 "b2b2"
      """, options: "metacopy=on"),
    Case(name: "userxattr stack", spec: """
      options userxattr
      [upper]
      dir /o opaque=y xattr.trusted.overlay.opaque=y
      file /o/n "n"
      whiteout /gone
      file /esc "e" xattr.user.overlay.overlay.inner=v
      [lower l1]
      file /o/hidden "h"
      file /gone "g"
      dir /t xattr.trusted.overlay.redirect=/x
      file /t/f "f"
      """),
    Case(name: "escaped overlay xattrs and private names", spec: """
      [upper]
      file /f "f" xattr.trusted.overlay.overlay.whiteout=1 xattr.trusted.overlay.origin=0x00 xattr.user.overlay.x=1 impure=y
      [lower l1]
      file /g "g" xattr.trusted.overlay.overlay.opaque=y
      """),
    Case(name: "byte names, 255-byte names, deep trees", spec: """
      [upper]
      file "/bad\\xffname" "x"
      file "/quote\\"back\\\\slash" "q"
      file "/new\\nline\\ttab" "n"
      file "/\\x7fdel" "d"
      file /\(longName) "long"
      file /\(deepDir)/leaf "deep"
      [lower l1]
      file "/caf\\xc3\\xa9" "utf8"
      file "/over\\xc0\\xafong" "overlong"
      file "/emoji\\xf0\\x9f\\x98\\x80" "e"
      file /\(deepDir)/low "deep lower"
      """),
    Case(name: "unmerged directories list whiteouts raw", spec: """
      [upper]
      dir /pure
      whiteout /pure/w
      file /pure/f "f"
      dir /withorigin origin=""
      whiteout /withorigin/w
      [lower l1]
      dir /one
      whiteout /one/w
      file /one/f "f"
      """),
    Case(name: "everything mixed over three lowers", spec: """
      [upper]
      dir /etc
      file /etc/passwd "root:x:0:0\\n" mode=0644
      whiteout /etc/shadow
      dir /etc/conf.d opaque=y
      file /etc/conf.d/new "n"
      dir /var/lib2 redirect=/var/lib
      whiteout /var/lib
      symlink /bin/sh busybox
      [lower l1]
      dir /etc
      file /etc/hosts "127.0.0.1 localhost\\n"
      file /etc/conf.d/old "o"
      dir /var/lib
      file /var/lib/state "s" xattr.user.a=b
      [lower l2]
      file /etc/shadow "secret"
      file /etc/passwd "old"
      file /bin/busybox size=50000 mode=0755
      dir /var/lib
      file /var/lib/deeper "d"
      [lower l3]
      dir /bin mode=0700
      file /bin/sh "old sh"
      dir /usr/share/doc
      file /usr/share/doc/README "r"
      """),
    Case(name: "uncovered redirect origins met before and after the redirect, and two redirects to one dir", spec: """
      [upper]
      dir /zz redirect=/aa
      file /zz/u "u"
      dir /b1 redirect=/target
      dir /b2 redirect=/target
      file /meta size=3 metacopy redirect=/data/x
      [lower l1]
      dir /aa
      file /aa/f "f"
      dir /target
      file /target/t "t"
      dir /data
      file /data/x "abc"
      """, options: "metacopy=on"),
    Case(name: "impure merged dir: a failed lookup drops the name", spec: """
      [upper]
      dir / impure=y
      dir /r redirect=/t
      [lower l1]
      dir /t
      file /t/f "f"
      """, options: "redirect_dir=nofollow"),
    Case(name: "impure merged dir: two failed lookups in a row fail the readdir", spec: """
      [upper]
      dir / impure=y
      dir /r1 redirect=/t
      dir /r2 redirect=/t
      [lower l1]
      dir /t
      file /t/f "f"
      """, options: "redirect_dir=nofollow"),
    Case(name: "impure real dir: a failed lookup fails the readdir", spec: """
      [upper]
      dir /p impure=y
      file /p/m size=3 metacopy
      file /p/ok "ok"
      [lower l1]
      file /x "x"
      """),
    Case(name: "impure root with a metacopy file that must not be followed", spec: """
      [upper]
      dir / impure=y
      file /m size=3 metacopy
      [lower l1]
      file /m "abc"
      """),
    Case(name: "index=on is ignored without upper, so nfs_export does not conflict", spec: """
      [lower l1]
      file /a "a"
      [lower l2]
      file /b "b"
      """, options: "index=on,nfs_export=on,metacopy=on"),
    Case(name: "index=on without upper does not count as given for nfs_export", spec: """
      [lower l1]
      file /a "a"
      [lower l2]
      file /b "b"
      """, options: "nfs_export=on,redirect_dir=nofollow,uuid=on,index=on"),
    Case(name: "redirect cycles and self-redirects terminate", spec: """
      [upper]
      dir /a redirect=/b
      dir /b redirect=/a
      dir /self redirect=self
      [lower l1]
      dir /a redirect=/b
      file /a/fa "fa"
      dir /b redirect=/a
      file /b/fb "fb"
      dir /self redirect=/self
      file /self/s "s"
      [lower l2]
      dir /a
      file /a/deep "a2"
      dir /b
      file /b/deep "b2"
      """),
    Case(name: "userxattr lower-only stack with xattr whiteouts and escapes", spec: """
      options userxattr
      [lower l1]
      dir /x xattr.user.overlay.opaque=x
      file /x/gone "" xattr.user.overlay.whiteout=
      file /x/stays "s" xattr.trusted.overlay.whiteout=
      dir /o xattr.user.overlay.opaque=y
      file /o/top "t"
      file /esc "e" xattr.user.overlay.overlay.redirect=/nowhere
      [lower l2]
      file /x/gone "g"
      file /o/under "u"
      [lower l3]
      file /x/l3 "3"
      """),
    Case(name: "metacopy lower-only chain and data-only layer without metacopy=on", spec: """
      [lower l1]
      file /d size=4 metacopy redirect=/blob
      [data d1]
      file /blob "data"
      """),
    Case(name: "trusted xattr whiteouts need the marker for readdir", spec: """
      [upper]
      dir /m
      [lower l1]
      dir /m opaque=x
      xwhiteout /m/w1
      [lower l2]
      dir /m
      xwhiteout /m/w2
      file /m/w1 "hidden"
      [lower l3]
      file /m/w2 "also hidden"
      file /m/keep "k"
      """),
  ]

  @Test(.enabled(if: Harness.kernelTestsEnabled, "needs root and overlayfs (set OVLTOOL_REQUIRE_KERNEL=1 to fail instead)"), arguments: cases)
  func sameViewAsKernel(_ c: Case) throws {
    try Harness.expectSameView(c.spec, options: c.options)
  }
}
