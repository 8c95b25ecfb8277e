// swift-tools-version: 6.2
import PackageDescription

// Layers, bottom to top: COvlSys/CCrypto/CAttr/CArchive (C) → OvlSystem (typed syscalls; every
// layer-changing call through one door) → OvlFormat (pure codecs, no I/O) → OvlStack (stack
// configuration, merged-view lookup) → OvlWrite (the write floor: lock-and-verify, temps,
// whiteouts, publishing) → OvlOperations (copy-up, ...), OvlCheck (fsck) and OvlImage (OCI
// layers) → the ovltool CLI. Only OvlSystem imports Glibc and COvlSys/CCrypto/CAttr; OvlImage
// imports CArchive (libarchive's reader and writer), and nothing else of C.
let package = Package(
  name: "ovltool",
  products: [
    .executable(name: "ovltool", targets: ["ovltool"]),
    .library(name: "OvlStack", targets: ["OvlStack"]),
    .library(name: "OvlOperations", targets: ["OvlOperations"]),
    .library(name: "OvlCheck", targets: ["OvlCheck"]),
    .library(name: "OvlImage", targets: ["OvlImage"]),
    .library(name: "OvlStore", targets: ["OvlStore"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
  ],
  targets: [
    .target(name: "COvlSys"),
    .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
    .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
    .systemLibrary(name: "CAttr", pkgConfig: "libattr", providers: [.apt(["libattr1-dev"])]),
    .target(name: "OvlSystem", dependencies: [
      "COvlSys", "CCrypto", "CAttr", .product(name: "SystemPackage", package: "swift-system"),
    ]),
    .target(name: "OvlFormat"),
    .target(name: "OvlStack", dependencies: ["OvlSystem", "OvlFormat"]),
    // The write floor: lock-and-verify, temps, whiteouts and publishing, for every writer.
    .target(name: "OvlWrite", dependencies: ["OvlStack", "OvlSystem", "OvlFormat"]),
    .target(name: "OvlOperations", dependencies: ["OvlWrite", "OvlStack", "OvlSystem", "OvlFormat"]),
    .target(name: "OvlCheck", dependencies: ["OvlWrite", "OvlStack", "OvlSystem", "OvlFormat"]),
    .target(name: "OvlImage", dependencies: ["OvlStack", "OvlOperations", "OvlWrite", "OvlSystem", "OvlFormat", "CArchive"]),
    // Container stores (containers/storage, Docker overlay2): their metadata → stacks.
    .target(name: "OvlStore", dependencies: ["OvlStack", "OvlSystem", "OvlFormat"]),
    .target(name: "OvlFixtures", dependencies: ["OvlSystem", "OvlFormat"]),
    .executableTarget(name: "ovltool", dependencies: [
      "OvlStack", "OvlOperations", "OvlCheck", "OvlImage", "OvlStore", .product(name: "ArgumentParser", package: "swift-argument-parser"),
    ]),
    .executableTarget(name: "ovl-fixture", dependencies: ["OvlFixtures"]),
    .testTarget(name: "OvlToolTests", dependencies: ["OvlStack", "OvlOperations", "OvlCheck", "OvlImage", "OvlStore", "OvlFixtures", "ovltool", "ovl-fixture"]),
  ],
  swiftLanguageModes: [.v6]
)
