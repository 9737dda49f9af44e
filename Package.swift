// swift-tools-version:5.10
// SwiftCNN: a convolutional-network engine written from scratch in Swift.
import PackageDescription

let package = Package(
    name: "SwiftCNN",
    products: [
        .library(name: "CNN", targets: ["CNN"]),
        // The C API of include/cnn.h; `make lib` links it self-contained as libcnn.so.
        .library(name: "CNNC", type: .dynamic, targets: ["CNNExports"]),
        .executable(name: "cnn", targets: ["CNNTool"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
    ],
    targets: [
        // zlib, for gzip-compressed IDX files (Debian: zlib1g-dev).
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        // libjpeg (Debian: libjpeg-dev, libjpeg-turbo), and the small C shim that keeps its errors
        // from calling exit().
        .systemLibrary(name: "CLibJPEG", path: "Sources/CLibJPEG", pkgConfig: "libjpeg",
                       providers: [.apt(["libjpeg-dev"])]),
        .target(name: "CJPEGShim", dependencies: ["CLibJPEG"]),
        // The engine: pure Swift, no Foundation, no C types in its API.
        .target(name: "CNN", dependencies: ["CZlib", "CJPEGShim"]),
        // include/cnn.h as a Clang module, so the exports use the header's own types.
        .systemLibrary(name: "CNNABI", path: "Sources/CNNABI"),
        // The @_cdecl functions of the C API, in the header's order.
        .target(name: "CNNExports", dependencies: ["CNN", "CNNABI"]),
        // The command-line tool `cnn`.
        .executableTarget(name: "CNNTool", dependencies: [
            "CNN", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "CNNTests", dependencies: ["CNN"], resources: []),
    ]
)
