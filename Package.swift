// swift-tools-version:5.10
// SwiftCNN: a convolutional-network engine written from scratch in Swift.
import Foundation
import PackageDescription

/// The engine, its C exports and the tool are compiled once per instruction-set level, as modules
/// whose source folders are symlinks to one folder (Swift has no per-function target attributes);
/// CNNLibrary and CNNMain forward to the copy Sources/CNNDispatch picks at run time. Each copy gets
/// its level's -target-cpu (the CPU names Swift knows for x86-64-v2, v3 and v4) and the kernels'
/// compile-time choices: fused multiply-add (CNN_FMA) and 16-wide vectors (CNN_AVX512). The baseline
/// copies keep the plain names (CNN, CNNExports, CNNTool); in the others `import CNN` means that
/// level's engine (-module-alias). A -target-cpu given to `swift build` comes after these and wins
/// (`make TARGET_CPU=native`: every copy for the building machine). The clang importer's -march
/// sets the CPU Swift generates code for too, so each copy passes its own.
/// AVX-512: LLVM's skylake-avx512 tuning prefers 256-bit vectors for the loops it vectorizes
/// itself (Intel's clock throttling); the explicit kernels use 512 bits anyway, so the rest does too,
/// as a build for an AMD Zen 4/5 (-march=native here) does.
typealias Level = (suffix: String, cpu: String, defines: [String], flags: [String])
let baseline: Level = ("", "nehalem", [], [])
/// CNN_KERNEL_LEVELS=baseline in the environment builds the baseline copies alone (a third of the
/// compile time: scripts/sanitize.sh's builds of the suites); that build runs baseline kernels on
/// every CPU and says so.
let allLevels = ProcessInfo.processInfo.environment["CNN_KERNEL_LEVELS"] != "baseline"
let levels: [Level] = allLevels ? [
    ("AVX2", "haswell", ["CNN_FMA"], []),
    ("AVX512", "skylake-avx512", ["CNN_FMA", "CNN_AVX512"], ["-Xcc", "-mprefer-vector-width=512"]),
] : []
let levelSetting: [SwiftSetting] = [.define(allLevels ? "CNN_ALL_LEVELS" : "CNN_BASELINE_ONLY")]
/// CNN_TEST_LEVELS (a comma-separated list of AVX2, AVX512; all when unset): the levels whose copy
/// of the kernel and layer suites is built. `make test-swift` names the levels this CPU runs: a
/// CPU without AVX-512 would build that copy and its engine (a third of the test build) only to
/// skip its suites. The library and the tool always have every level.
let testLevels = ProcessInfo.processInfo.environment["CNN_TEST_LEVELS"].map { $0.split(separator: ",").map(String.init) }

func copy(_ name: String, _ level: Level,
          dependencies: [Target.Dependency], sources: [String]? = nil, test: Bool = false) -> Target {
    // A copy built from some of a folder's files excludes the others.
    let folder = (test ? "Tests/" : "Sources/") + name + level.suffix
    let files = (try? FileManager.default.contentsOfDirectory(atPath: Context.packageDirectory + "/" + folder)) ?? []
    let exclude = sources.map { keep in files.filter { !keep.contains($0) } } ?? []
    let aliases = level.suffix.isEmpty ? [] : ["-module-alias", "CNN=CNN" + level.suffix]
    let settings: [SwiftSetting] = level.defines.map { .define($0) }
        + [.unsafeFlags(["-target-cpu", level.cpu, "-Xcc", "-march=" + level.cpu] + level.flags + (name == "CNN" ? [] : aliases))]
    return test
        ? .testTarget(name: name + level.suffix, dependencies: dependencies, exclude: exclude, sources: sources, swiftSettings: settings)
        : .target(name: name + level.suffix, dependencies: dependencies, exclude: exclude, sources: sources, swiftSettings: settings)
}

/// The C targets' debug information in DWARF 4, as Swift's: valgrind 3.19 cannot read clang's DWARF 5.
let dwarf4: [CSetting] = [.unsafeFlags(["-gdwarf-4"])]

var targets: [Target] = [
    // zlib, for gzip-compressed IDX files (Debian: zlib1g-dev).
    .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                   providers: [.apt(["zlib1g-dev"])]),
    // libjpeg (Debian: libjpeg-dev, libjpeg-turbo), and the small C shim that keeps its errors
    // from calling exit().
    .systemLibrary(name: "CLibJPEG", path: "Sources/CLibJPEG", pkgConfig: "libjpeg",
                   providers: [.apt(["libjpeg-dev"])]),
    .target(name: "CJPEGShim", dependencies: ["CLibJPEG"], cSettings: dwarf4),
    // libpng 1.6 (Debian: libpng-dev) and its shim, with the same error discipline.
    .systemLibrary(name: "CLibPNG", path: "Sources/CLibPNG", pkgConfig: "libpng",
                   providers: [.apt(["libpng-dev"])]),
    .target(name: "CPNGShim", dependencies: ["CLibPNG"], cSettings: dwarf4),
    // CPUID and XGETBV, and the choice of the level every call runs on.
    .target(name: "CCPUID", cSettings: dwarf4),
    .target(name: "CNNDispatch", dependencies: ["CCPUID"], swiftSettings: levelSetting),
    // The engine: pure Swift, no Foundation, no C types in its API (baseline copy).
    copy("CNN", baseline, dependencies: ["CZlib", "CJPEGShim", "CPNGShim", "CCPUID"]),
    // include/cnn.h as a Clang module, so the exports use the header's own types.
    .systemLibrary(name: "CNNABI", path: "Sources/CNNABI"),
    // The functions of the C API (baseline copy), and the @_cdecl layer that forwards to a copy.
    copy("CNNExports", baseline, dependencies: ["CNN", "CNNABI", "CNNDispatch"]),
    .target(name: "CNNLibrary", dependencies: ["CNNExports", "CNNDispatch", "CNNABI"]
                + levels.map { .target(name: "CNNExports" + $0.suffix) }, swiftSettings: levelSetting),
    // The command-line tool `cnn` (baseline copy) and its entry point, which picks a copy.
    copy("CNNTool", baseline, dependencies: [
        "CNN", "CNNABI", "CNNDispatch", .product(name: "ArgumentParser", package: "swift-argument-parser"),
    ]),
    .executableTarget(name: "CNNMain", dependencies: ["CNNTool", "CNNDispatch"] + levels.map { .target(name: "CNNTool" + $0.suffix) },
                      swiftSettings: levelSetting),
    copy("CNNTests", baseline, dependencies: ["CNN", "CNNDispatch"], test: true),
]
for level in levels {
    targets.append(copy("CNN", level, dependencies: ["CZlib", "CJPEGShim", "CPNGShim", "CCPUID"]))
    targets.append(copy("CNNExports", level, dependencies: [.target(name: "CNN" + level.suffix), "CNNABI", "CNNDispatch"]))
    targets.append(copy("CNNTool", level, dependencies: [
        .target(name: "CNN" + level.suffix), "CNNABI", "CNNDispatch",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
    ]))
    // The kernel and layer suites once more per level, against that level's engine.
    guard testLevels?.contains(level.suffix) ?? true else { continue }
    targets.append(copy("CNNKernelTests", level, dependencies: [.target(name: "CNN" + level.suffix), "CNNDispatch"],
                        sources: ["KernelTests.swift", "LayerTests.swift", "NarrowPlaneTests.swift", "Reference.swift", "TestSupport.swift"], test: true))
}

// The engine's other kernel levels, for the benchmarks (Benchmarks/).
let levelProducts: [Product] = levels.map { .library(name: "CNN" + $0.suffix, targets: ["CNN" + $0.suffix]) }

let package = Package(
    name: "SwiftCNN",
    products: [
        .library(name: "CNN", targets: ["CNN"]),
        // The dispatch, for the benchmarks (Benchmarks/).
        .library(name: "CNNDispatch", targets: ["CNNDispatch"]),
        // The C API of include/cnn.h; `make lib` links it self-contained as libcnn.so.
        .library(name: "CNNC", type: .dynamic, targets: ["CNNLibrary"]),
        .executable(name: "cnn", targets: ["CNNMain"]),
    ] + levelProducts,
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
    ],
    targets: targets
)
