import CNNABI
#if canImport(Glibc)
import Glibc
#endif

let versionNumber = Int32(CNN_VERSION_MAJOR * 10000 + CNN_VERSION_MINOR * 100 + CNN_VERSION_PATCH)
private let versionString = staticString("\(CNN_VERSION_MAJOR).\(CNN_VERSION_MINOR).\(CNN_VERSION_PATCH)")

// export: cnn_version_number
public func exportVersionNumber() -> Int32 { versionNumber }

// export: cnn_version_string
public func exportVersionString() -> UnsafePointer<CChar> { versionString }
