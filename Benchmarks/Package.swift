// swift-tools-version:5.10
// SwiftCNN's benchmarks, apart from the library: `make bench` (or `swift run -c release cnn-bench`).
import PackageDescription

let package = Package(
    name: "SwiftCNNBenchmarks",
    dependencies: [.package(name: "SwiftCNN", path: "..")],
    targets: [
        // libjpeg-turbo's own decoding, in C: the baseline the JPEG loader is measured against.
        .target(name: "CJPEGBaseline", linkerSettings: [.linkedLibrary("jpeg")]),
        .executableTarget(name: "cnn-bench", dependencies: [
            "CJPEGBaseline", .product(name: "CNN", package: "SwiftCNN"),
        ]),
    ]
)
