// swift-tools-version:5.10
// SwiftCNN's benchmarks, apart from the library: `make bench` (or `swift run -c release cnn-bench`).
import PackageDescription

/// The benchmarks are compiled against each kernel level's engine copy (as the library and tool
/// are, see ../Package.swift) and cnn-bench runs the one the CPU and CNN_CPU select.
let levels: [(suffix: String, cpu: String, flags: [String])] = [
    ("", "nehalem", []), ("AVX2", "haswell", []), ("AVX512", "skylake-avx512", ["-Xcc", "-mprefer-vector-width=512"]),
]

let package = Package(
    name: "SwiftCNNBenchmarks",
    dependencies: [.package(name: "SwiftCNN", path: "..")],
    targets: [
        // libjpeg-turbo's own decoding, in C: the baseline the JPEG loader is measured against.
        .target(name: "CJPEGBaseline", linkerSettings: [.linkedLibrary("jpeg")]),
        .executableTarget(name: "cnn-bench", dependencies: [
            "Bench", "BenchAVX2", "BenchAVX512", .product(name: "CNNDispatch", package: "SwiftCNN"),
        ]),
    ] + levels.map { level in
        .target(name: "Bench" + level.suffix, dependencies: [
            "CJPEGBaseline", .product(name: "CNN" + level.suffix, package: "SwiftCNN"),
        ], swiftSettings: [.unsafeFlags(["-target-cpu", level.cpu, "-Xcc", "-march=" + level.cpu] + level.flags
                                        + (level.suffix.isEmpty ? [] : ["-module-alias", "CNN=CNN" + level.suffix]))])
    }
)
