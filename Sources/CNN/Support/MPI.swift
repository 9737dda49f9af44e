#if canImport(Glibc)
import Glibc
#endif

/// Open MPI, loaded at run time: libcnn.so never links libmpi, so programs that do not train
/// distributed do not need it. Only what data-parallel training calls is looked up. Open MPI's
/// handles (MPI_Comm, MPI_Datatype, MPI_Op, MPI_Request) are pointers, its predefined ones the
/// addresses of exported objects (`MPI_COMM_WORLD` is `&ompi_mpi_comm_world`), so they come from
/// dlsym too. MPICH's integer handles are a different ABI and are refused by name.
final class MPILibrary: @unchecked Sendable {
    typealias Handle = UnsafeMutableRawPointer
    typealias InitThread = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?, Int32, UnsafeMutablePointer<Int32>) -> Int32
    typealias Flag = @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    typealias CommInt = @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
    typealias Allreduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer, Int32, Handle, Handle, Handle) -> Int32
    typealias Iallreduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer, Int32, Handle, Handle, Handle, UnsafeMutablePointer<Handle?>) -> Int32
    typealias Waitall = @convention(c) (Int32, UnsafeMutablePointer<Handle?>, UnsafeMutableRawPointer?) -> Int32
    typealias Testall = @convention(c) (Int32, UnsafeMutablePointer<Handle?>, UnsafeMutablePointer<Int32>, UnsafeMutableRawPointer?) -> Int32
    typealias Abort = @convention(c) (Handle, Int32) -> Int32
    typealias Barrier = @convention(c) (Handle) -> Int32
    typealias Finalize = @convention(c) () -> Int32

    let initThread: InitThread
    let initialized: Flag
    let finalized: Flag
    let commRank: CommInt
    let commSize: CommInt
    let allreduce: Allreduce
    let iallreduce: Iallreduce
    let waitall: Waitall
    let testall: Testall
    let abort: Abort
    let barrier: Barrier
    let finalize: Finalize
    let commWorld: Handle
    let float: Handle, double: Handle
    let sum: Handle, min: Handle, max: Handle
    /// MPI_IN_PLACE: `(void *) 1` in Open MPI.
    static let inPlace = UnsafeRawPointer(bitPattern: 1)

    private init(_ lib: UnsafeMutableRawPointer, _ path: String) throws {
        func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
            guard let p = dlsym(lib, name) else {
                throw CNNError(.invalidArgument, "\(path) has no \(name): distributed training needs Open MPI (4.x, libmpi.so.40)")
            }
            return p
        }
        func function<T>(_ name: String, _ type: T.Type) throws -> T { unsafeBitCast(try symbol(name), to: type) }
        initThread = try function("MPI_Init_thread", InitThread.self)
        initialized = try function("MPI_Initialized", Flag.self)
        finalized = try function("MPI_Finalized", Flag.self)
        commRank = try function("MPI_Comm_rank", CommInt.self)
        commSize = try function("MPI_Comm_size", CommInt.self)
        allreduce = try function("MPI_Allreduce", Allreduce.self)
        iallreduce = try function("MPI_Iallreduce", Iallreduce.self)
        waitall = try function("MPI_Waitall", Waitall.self)
        testall = try function("MPI_Testall", Testall.self)
        abort = try function("MPI_Abort", Abort.self)
        barrier = try function("MPI_Barrier", Barrier.self)
        finalize = try function("MPI_Finalize", Finalize.self)
        commWorld = try symbol("ompi_mpi_comm_world")
        float = try symbol("ompi_mpi_float")
        double = try symbol("ompi_mpi_double")
        sum = try symbol("ompi_mpi_op_sum")
        min = try symbol("ompi_mpi_op_min")
        max = try symbol("ompi_mpi_op_max")
    }

    private static let lock = Lock()
    nonisolated(unsafe) private static var loaded: MPILibrary?
    /// Whether this library called MPI_Init_thread (and so must call MPI_Finalize at exit).
    nonisolated(unsafe) private static var initializedHere = false

    /// The library, loaded once: `CNN_MPI_LIBRARY` names it, or libmpi.so.40 from the loader's path.
    /// RTLD_GLOBAL: Open MPI's own plugins, which it dlopens, look up libmpi's symbols.
    static func shared() throws -> MPILibrary {
        try lock.with {
            if let loaded { return loaded }
            let path = getenv("CNN_MPI_LIBRARY").map { String(cString: $0) } ?? "libmpi.so.40"
            guard let handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL) else {
                let why = dlerror().map { String(cString: $0) } ?? "not found"
                throw CNNError(.invalidArgument, "distributed training needs Open MPI, and \(path) could not be loaded (\(why)); install it (Debian: apt-get install openmpi-bin) or set CNN_MPI_LIBRARY to its libmpi.so")
            }
            if dlsym(handle, "MPICH_Calling_convention") != nil || dlsym(handle, "MPIR_Init_thread") != nil {
                throw CNNError(.invalidArgument, "\(path) is MPICH; distributed training is built for Open MPI's handles (libmpi.so.40)")
            }
            let mpi = try MPILibrary(handle, path)
            loaded = mpi
            return mpi
        }
    }

    /// Initializes MPI unless the program (or an earlier call) did; serialized: any one thread may
    /// call MPI at a time, which is how training calls it.
    func initializeIfNeeded() throws {
        try MPILibrary.lock.with {
            var flag: Int32 = 0
            _ = initialized(&flag)
            if flag != 0 { return }
            var finalizedFlag: Int32 = 0
            _ = finalized(&finalizedFlag)
            guard finalizedFlag == 0 else { throw CNNError(.invalidArgument, "MPI was finalized: distributed training cannot start again in this process") }
            var provided: Int32 = 0
            let serialized: Int32 = 2  // MPI_THREAD_SERIALIZED in Open MPI's mpi.h
            guard initThread(nil, nil, serialized, &provided) == 0 else { throw CNNError(.internal, "MPI_Init_thread failed") }
            MPILibrary.initializedHere = true
            // MPI_Finalize before the process exits, or the launcher reports the rank as failed.
            atexit { MPILibrary.finalizeIfInitializedHere() }
        }
    }

    /// MPI_Finalize, when this library initialized MPI and nobody finalized it yet.
    static func finalizeIfInitializedHere() {
        guard initializedHere, let mpi = loaded else { return }
        var flag: Int32 = 0
        _ = mpi.finalized(&flag)
        if flag == 0 { _ = mpi.finalize() }
        initializedHere = false
    }
}
