// Opaque handles: every live handle is registered, so a NULL, freed or foreign pointer is
// rejected with an error instead of being dereferenced.
import CNN
import CNNABI
#if canImport(Glibc)
import Glibc
#endif

/// A C string owned by a handle.
final class CString {
    let pointer: UnsafeMutablePointer<CChar>
    init(_ s: String) { pointer = strdup(s)! }
    deinit { free(pointer) }
}

/// A model and what the C API adds around it: exclusive training, concurrent prediction on
/// private copies (each layer keeps per-call buffers), and the strings handed out.
final class ModelHandle {
    let model: Model
    let lock = Lock()
    // Guarded by `lock`.
    private var training = false
    private var users = 0
    private var replicas: [Model] = []
    private var strings: [String: CString] = [:]
    private var classNames: [CString] = []
    /// A cnn_trainer holds the model between its runs: other training is refused meanwhile.
    private var trainerAttached = false
    /// The thread inside an epoch-end progress callback: it may read the model (save it,
    /// predict, evaluate) while the training call waits for the callback.
    private var epochEndThread: pthread_t?

    init(_ model: Model) { self.model = model }

    /// Whether the model may be read now (guarded by `lock`).
    private var readable: Bool {
        !training || epochEndThread.map { pthread_equal($0, pthread_self()) != 0 } == true
    }

    func attachTrainer() throws {
        try lock.with {
            guard !trainerAttached else { throw CNNError(.busy, "the model already has a cnn_trainer (free it first)") }
            trainerAttached = true
        }
    }

    func detachTrainer() { lock.with { trainerAttached = false } }

    /// Runs `body` (an epoch-end callback) with the model readable from this thread.
    func epochEnd<T>(_ body: () throws -> T) rethrows -> T {
        lock.with {
            epochEndThread = pthread_self()
            replicas.removeAll()
            classNames.removeAll()
            strings["summary"] = nil
        }
        defer { lock.with { epochEndThread = nil; replicas.removeAll() } }
        return try body()
    }

    /// Runs `body` with the model to itself (training); `trainer`: the call is a cnn_trainer's.
    func exclusive<T>(trainer: Bool = false, _ body: (Model) throws -> T) throws -> T {
        try lock.with {
            guard !training, users == 0 else { throw CNNError(.busy, "the model is being trained or used by another call") }
            guard trainer || !trainerAttached else { throw CNNError(.busy, "the model belongs to a cnn_trainer; train it with cnn_trainer_run or free the trainer first") }
            training = true
        }
        defer {
            lock.with {
                training = false
                replicas.removeAll()
                classNames.removeAll()
                strings["summary"] = nil
            }
        }
        return try body(model)
    }

    /// Runs `body` with a private copy of the model, for calls that may run concurrently.
    func shared<T>(_ body: (Model) throws -> T) throws -> T {
        var replica: Model? = try lock.with {
            guard readable else { throw CNNError(.busy, "the model is being trained") }
            users += 1
            return replicas.popLast()
        }
        defer {
            lock.with {
                if let replica, replicas.count < 16 { replicas.append(replica) }
                users -= 1
            }
        }
        if replica == nil { replica = try model.copy() }
        return try body(replica ?? model)
    }

    /// Reads the model itself without changing it (saving): excluded only by training.
    func reading<T>(_ body: (Model) throws -> T) throws -> T {
        try lock.with {
            guard readable else { throw CNNError(.busy, "the model is being trained") }
            users += 1
        }
        defer { lock.with { users -= 1 } }
        return try body(model)
    }

    /// A string owned by the handle that replaces the one before under `key` (valid until then).
    func replaceString(_ key: String, _ value: String) throws -> UnsafePointer<CChar> {
        try lock.with {
            guard readable else { throw CNNError(.busy, "the model is being trained") }
            let s = CString(value)
            strings[key] = s
            return UnsafePointer(s.pointer)
        }
    }

    /// A string owned by the handle, made once.
    func string(_ key: String, _ make: (Model) -> String) throws -> UnsafePointer<CChar> {
        try lock.with {
            guard readable else { throw CNNError(.busy, "the model is being trained") }
            if let s = strings[key] { return UnsafePointer(s.pointer) }
            let s = CString(make(model))
            strings[key] = s
            return UnsafePointer(s.pointer)
        }
    }

    func className(_ index: Int) throws -> UnsafePointer<CChar> {
        try lock.with {
            guard readable else { throw CNNError(.busy, "the model is being trained") }
            if classNames.count != model.classNames.count { classNames = model.classNames.map(CString.init) }
            guard index >= 0, index < classNames.count else {
                throw CNNError(.invalidArgument, "index \(index) is outside 0..<\(classNames.count)")
            }
            return UnsafePointer(classNames[index].pointer)
        }
    }
}

final class DatasetHandle {
    let dataset: Dataset
    let lock = Lock()
    private var users = 0
    private var skippedStrings: [(CString, CString)] = []

    /// Skipped file `index`: path and reason, as C strings owned by the handle.
    func skipped(_ index: Int) throws -> (UnsafePointer<CChar>, UnsafePointer<CChar>) {
        try lock.with {
            if skippedStrings.count != dataset.skipped.count {
                skippedStrings = dataset.skipped.map { (CString($0.path), CString($0.reason)) }
            }
            guard index >= 0, index < skippedStrings.count else {
                throw CNNError(.invalidArgument, "index \(index) is outside 0..<\(skippedStrings.count)")
            }
            return (UnsafePointer(skippedStrings[index].0.pointer), UnsafePointer(skippedStrings[index].1.pointer))
        }
    }
    init(_ dataset: Dataset) { self.dataset = dataset }

    private var pathStrings: [CString] = []
    private var nameStrings: [CString] = []

    /// Class `index`'s name, as a C string owned by the handle (made again after a rename).
    func className(_ index: Int) throws -> UnsafePointer<CChar> {
        try lock.with {
            if nameStrings.count != dataset.classNames.count { nameStrings = dataset.classNames.map(CString.init) }
            guard index >= 0, index < nameStrings.count else {
                throw CNNError(.invalidArgument, "index \(index) is outside 0..<\(nameStrings.count)")
            }
            return UnsafePointer(nameStrings[index].pointer)
        }
    }

    /// The file of sample `index`, as a C string owned by the handle, or nil (no file).
    func samplePath(_ index: Int) throws -> UnsafePointer<CChar>? {
        try lock.with {
            guard index >= 0, index < dataset.count else {
                throw CNNError(.invalidArgument, "index \(index) is outside 0..<\(dataset.count)")
            }
            guard let paths = dataset.samplePaths else { return nil }
            if pathStrings.count != paths.count { pathStrings = paths.map(CString.init) }
            return UnsafePointer(pathStrings[index].pointer)
        }
    }

    func using<T>(_ body: (Dataset) throws -> T) throws -> T {
        lock.with { users += 1 }
        defer { lock.with { users -= 1 } }
        return try body(dataset)
    }

    func setClassNames(_ names: [String]) throws {
        try lock.with {
            guard users == 0 else { throw CNNError(.busy, "the dataset is in use by another call") }
            dataset.classNames = names
            nameStrings.removeAll()  // texts handed out before are valid until here (cnn.h says so)
        }
    }
}

/// The live handles, by address. The table's reference is what keeps a handle's object alive.
enum Registry {
    private static let lock = Lock()
    nonisolated(unsafe) private static var live: [UnsafeMutableRawPointer: AnyObject] = [:]

    static func add(_ object: AnyObject) -> OpaquePointer {
        let p = Unmanaged.passUnretained(object).toOpaque()
        lock.with { live[p] = object }
        return OpaquePointer(p)
    }

    static func remove(_ handle: OpaquePointer?) {
        guard let handle else { return }
        // The object is released here, after the lock, when `removed` goes out of scope.
        let removed = lock.with { live.removeValue(forKey: UnsafeMutableRawPointer(handle)) }
        withExtendedLifetime(removed) {}
    }

    /// The live object of a handle, or nil.
    static func object(_ handle: OpaquePointer?, _ name: String) -> AnyObject? {
        guard let handle else { return nil }
        return lock.with { live[UnsafeMutableRawPointer(handle)] }
    }

    static func model(_ handle: OpaquePointer?, _ name: String = "model") throws -> ModelHandle {
        guard let handle else { throw invalid("\(name) is NULL") }
        guard let m = lock.with({ live[UnsafeMutableRawPointer(handle)] }) as? ModelHandle else {
            throw invalid("\(name) is not a live cnn_model (freed, or not created by cnn_model_create/load)")
        }
        return m
    }

    static func dataset(_ handle: OpaquePointer?, _ name: String = "dataset") throws -> DatasetHandle {
        guard let handle else { throw invalid("\(name) is NULL") }
        guard let d = lock.with({ live[UnsafeMutableRawPointer(handle)] }) as? DatasetHandle else {
            throw invalid("\(name) is not a live cnn_dataset (freed, or not created by cnn_dataset_from_*)")
        }
        return d
    }
}
