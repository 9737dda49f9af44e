// The level every forwarded call runs on, and cnn_runtime_info.
import CNNABI
import CNNDispatch
#if canImport(Glibc)
import Glibc
#endif

/// The copy of the exports each C call goes to (Forwarders.swift). When the environment asked for
/// a level this CPU lacks, it is the baseline copy, whose every fallible call then fails with the
/// reason (CNNExports' `guarded`): nothing runs on the level asked for, and nothing runs silently
/// on another one.
let dispatchLevel = KernelSelection.current.level

/// One C string per thread count, made once each and kept for the process (at most 256).
private var infoStrings: [Int32: UnsafePointer<CChar>] = [:]
private var infoLock = pthread_mutex_t()
private let infoLockReady: Bool = { pthread_mutex_init(&infoLock, nil); return true }()

/// What cnn_runtime_info returns when it cannot allocate its text (a literal: NUL-terminated).
private let fallback = UnsafeRawPointer(("kernels: unknown (out of memory)" as StaticString).utf8Start).assumingMemoryBound(to: CChar.self)

@_cdecl("cnn_runtime_info")
public func exportRuntimeInfo() -> UnsafePointer<CChar> {
    let threads = exportGetNumThreads()
    _ = infoLockReady
    pthread_mutex_lock(&infoLock)
    defer { pthread_mutex_unlock(&infoLock) }
    if let text = infoStrings[threads] { return text }
    guard let text = strdup("\(KernelSelection.current.description); threads: \(threads)") else { return fallback }
    infoStrings[threads] = UnsafePointer(text)
    return UnsafePointer(text)
}
