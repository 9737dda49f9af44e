// Status codes, the per-thread last error, and the wrapper every exported function runs in.
import CNN
import CNNABI
import CNNDispatch
#if canImport(Glibc)
import Glibc
#endif

/// The key of each thread's last error message (a malloc'd C string, freed when replaced or when
/// the thread exits).
private let errorKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { free($0) }
    return key
}()

/// A C string that lives as long as the process (static texts).
func staticString(_ s: String) -> UnsafePointer<CChar> { UnsafePointer(strdup(s)!) }

private let emptyString = staticString("")

func setLastError(_ message: String) {
    let old = pthread_getspecific(errorKey)
    pthread_setspecific(errorKey, strdup(message))
    free(old)
}

/// Runs the body of exported function `function`: a thrown CNNError becomes its status code and
/// the thread's last error ("function: message"). Nothing else may escape: the body validates
/// every argument before it touches Swift collections, so no Swift trap can cross the ABI.
///
/// When the kernel level asked for in CNN_CPU cannot run here, every call fails with the reason.
func guarded(_ function: String, _ body: () throws -> Void) -> cnn_status {
    if let problem = KernelSelection.current.problem {
        setLastError("\(function): \(problem)")
        return cnn_status(CNN_INVALID_ARGUMENT)
    }
    do {
        try body()
        return cnn_status(CNN_OK)
    } catch let e as CNNError {
        setLastError("\(function): \(e.message)")
        return status(of: e.kind)
    } catch {
        setLastError("\(function): internal error: \(error)")
        return cnn_status(CNN_INTERNAL)
    }
}

func invalid(_ what: String) -> CNNError { CNNError(.invalidArgument, what) }

/// A C string argument that must not be NULL.
func string(_ p: UnsafePointer<CChar>?, _ name: String) throws -> String {
    guard let p else { throw invalid("\(name) is NULL") }
    return String(cString: p)
}

/// A pointer argument that must not be NULL.
func required<T>(_ p: T?, _ name: String) throws -> T {
    guard let p else { throw invalid("\(name) is NULL") }
    return p
}

/// A caller's options struct that starts with `uint32_t struct_size` and grows at the end: a
/// program built against an older header passes a smaller struct, whose fields are read over the
/// defaults (later fields keep their defaults); `oldestSize` is the size of the first version.
func versionedStruct<T>(_ p: UnsafePointer<T>, defaults: T, oldestSize: Int, name: String, initializer: String) throws -> T {
    // Read struct_size alone first: an older, smaller struct must not be read whole.
    let size = Int(UnsafeRawPointer(p).load(as: UInt32.self))
    guard size >= oldestSize, size <= 1 << 16 else {
        throw invalid("\(name).struct_size is \(size), expected \(MemoryLayout<T>.size); initialize it with \(initializer)")
    }
    var value = defaults
    withUnsafeMutableBytes(of: &value) { dst in
        dst.copyMemory(from: UnsafeRawBufferPointer(start: UnsafeRawPointer(p), count: min(size, MemoryLayout<T>.size)))
    }
    return value
}

/// The C status of each kind of engine error: the codes are the header's (CNN_*), matched by name.
func status(of kind: CNNError.Kind) -> cnn_status {
    switch kind {
    case .invalidArgument: cnn_status(CNN_INVALID_ARGUMENT)
    case .parse: cnn_status(CNN_PARSE_ERROR)
    case .io: cnn_status(CNN_IO_ERROR)
    case .badFormat: cnn_status(CNN_BAD_FORMAT)
    case .shapeMismatch: cnn_status(CNN_SHAPE_MISMATCH)
    case .outOfMemory: cnn_status(CNN_OUT_OF_MEMORY)
    case .diverged: cnn_status(CNN_DIVERGED)
    case .cancelled: cnn_status(CNN_CANCELLED)
    case .busy: cnn_status(CNN_BUSY)
    case .internal: cnn_status(CNN_INTERNAL)
    }
}

/// What cnn_status_string says of each kind.
private func text(of kind: CNNError.Kind) -> String {
    switch kind {
    case .invalidArgument: "invalid argument"
    case .parse: "parse error"
    case .io: "I/O error"
    case .badFormat: "bad file format"
    case .shapeMismatch: "shape mismatch"
    case .outOfMemory: "out of memory"
    case .diverged: "training diverged"
    case .cancelled: "cancelled"
    case .busy: "busy"
    case .internal: "internal error"
    }
}

/// cnn_status_string's texts by status, made once: "ok" and one per kind of error.
private let statusTexts: [cnn_status: UnsafePointer<CChar>] = {
    var texts = [cnn_status(CNN_OK): staticString("ok")]
    for kind in CNNError.Kind.allCases { texts[status(of: kind)] = staticString(text(of: kind)) }
    return texts
}()
private let unknownStatus = staticString("unknown status")

// export: cnn_status_string
public func exportStatusString(_ status: cnn_status) -> UnsafePointer<CChar> {
    statusTexts[status] ?? unknownStatus
}

// export: cnn_last_error
public func exportLastError() -> UnsafePointer<CChar> {
    guard let p = pthread_getspecific(errorKey) else { return emptyString }
    return UnsafePointer(p.assumingMemoryBound(to: CChar.self))
}
