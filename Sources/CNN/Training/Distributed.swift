#if canImport(Glibc)
import Glibc
#endif

/// Data-parallel training over MPI: every process (rank) holds the whole model and trains on its
/// share of each global batch; the gradients are summed across ranks before every update, so all
/// ranks make the same update and keep the same weights. See `Trainer.fit` for how a batch is split
/// and README ("Training on many processes") for the design and its limits.
public final class Distributed {
    public let rank: Int
    public let size: Int
    let mpi: MPILibrary
    let comm: UnsafeMutableRawPointer
    /// Training stopped because another rank failed or stopped (its own message says why).
    public internal(set) var othersFailed = false

    /// MPI_COMM_WORLD, initializing MPI (and finalizing it at exit) if the program did not.
    public static func world() throws -> Distributed {
        let mpi = try MPILibrary.shared()
        try mpi.initializeIfNeeded()
        return try Distributed(mpi, mpi.commWorld)
    }

    /// A communicator of the program's own: Open MPI's MPI_Comm (MPI initialized by the program).
    public static func communicator(_ comm: UnsafeMutableRawPointer) throws -> Distributed {
        let mpi = try MPILibrary.shared()
        var flag: Int32 = 0
        _ = mpi.initialized(&flag)
        guard flag != 0 else { throw CNNError(.invalidArgument, "an MPI communicator was given but MPI is not initialized") }
        return try Distributed(mpi, comm)
    }

    private init(_ mpi: MPILibrary, _ comm: UnsafeMutableRawPointer) throws {
        self.mpi = mpi
        self.comm = comm
        var r: Int32 = 0, n: Int32 = 0
        guard mpi.commRank(comm, &r) == 0, mpi.commSize(comm, &n) == 0, n >= 1, r >= 0, r < n else {
            throw CNNError(.invalidArgument, "MPI_Comm_rank / MPI_Comm_size failed on the communicator")
        }
        rank = Int(r)
        size = Int(n)
    }

    /// The number of processes an MPI launcher (mpirun, srun with PMIx) started, from the
    /// environment it gives each process; nil when this process was not started by one.
    public static var launcherSize: Int? {
        for name in ["OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"] {
            if let v = getenv(name), let n = Int(String(cString: v)), n >= 1 { return n }
        }
        return nil
    }

    /// Ends every process of the job (MPI_Abort): for the tool, whose other ranks would otherwise
    /// wait in a collective for one that stopped.
    public func abort(_ code: Int32) -> Never {
        _ = mpi.abort(comm, code)
        exit(code)
    }

    /// Reduces doubles across ranks, in place (`op`: mpi.sum, .min or .max).
    func reduce(_ values: inout [Double], _ op: UnsafeMutableRawPointer) {
        let n = Int32(values.count)
        values.withUnsafeMutableBufferPointer { _ = mpi.allreduce(MPILibrary.inPlace, $0.baseAddress!, n, mpi.double, op, comm) }
    }

    /// Whether any rank passes true.
    func any(_ flag: Bool) -> Bool {
        var v: [Double] = [flag ? 1 : 0]
        reduce(&v, mpi.max)
        return v[0] > 0
    }

    /// The names of the items whose value differs between ranks (each a 64-bit fingerprint).
    func disagreements(_ items: [(name: String, value: UInt64)]) -> [String] {
        // Two exact halves per fingerprint (a double holds 32-bit integers exactly).
        let halves = items.flatMap { [Double($0.value >> 32), Double($0.value & 0xFFFF_FFFF)] }
        var low = halves, high = halves
        reduce(&low, mpi.min)
        reduce(&high, mpi.max)
        return items.indices.filter { low[2 * $0] != high[2 * $0] || low[2 * $0 + 1] != high[2 * $0 + 1] }.map { items[$0].name }
    }

    /// Whether gradient buckets start during backward (the default), or all after it:
    /// CNN_DISTRIBUTED_OVERLAP=0, to measure what the overlap hides.
    static let overlap = getenv("CNN_DISTRIBUTED_OVERLAP").map { String(cString: $0) != "0" } ?? true

    // MARK: Gradient buckets

    /// A step's exchange. After forward: the batch's status (loss sum, hits, failure) and the
    /// batch-norm running statistics, weighted by the rank's share. During backward: the gradients
    /// in buckets of about `bucketFloats`, in the order backward produces them (last layer first),
    /// each summed across ranks as soon as backward has produced all of it. All non-blocking
    /// (MPI_Iallreduce), waited for at the end of backward: the ranks meet once per step, and the
    /// exchange runs behind the remaining backward work.
    final class Buckets {
        /// Tensors exchanged as one contiguous buffer (MPI sums one buffer per request): the
        /// running statistics.
        struct Packed {
            let tensors: [FloatBuffer]
            let buffer: FloatBuffer
            init(_ tensors: [FloatBuffer]) {
                self.tensors = tensors
                buffer = FloatBuffer(count: tensors.reduce(0) { $0 + $1.count })
            }
            /// Copies the tensors into the buffer, times `scale`.
            func pack(scale: Float = 1) {
                var offset = 0
                for t in tensors {
                    let out = buffer.pointer + offset
                    if scale == 1 { out.update(from: t.pointer, count: t.count) }
                    else { for i in 0..<t.count { out[i] = t.pointer[i] * scale } }
                    offset += t.count
                }
            }
            /// Copies the buffer back into the tensors.
            func unpack() {
                var offset = 0
                for t in tensors {
                    t.pointer.update(from: buffer.pointer + offset, count: t.count)
                    offset += t.count
                }
            }
        }
        /// Consecutive gradients, a range of the model's gradient block summed in place.
        struct Bucket {
            let start: UnsafeMutablePointer<Float>
            let count: Int
            /// The top-level layer whose backward completes the bucket.
            let layer: Int
        }
        let buckets: [Bucket]
        private let distributed: Distributed
        private var requests: [UnsafeMutableRawPointer?]
        private var started = 0
        /// The step's status (loss sum, hits, failed ranks, ranks asking to stop), summed; then
        /// the running statistics.
        private let status = UnsafeMutablePointer<Double>.allocate(capacity: 4)
        private var statusRequests: [UnsafeMutableRawPointer?] = [nil, nil]
        private var statusStarted = 0
        /// The batch-norm running means and variances.
        private let statistics: Packed
        /// Seconds spent waiting for the exchange after backward (what it did not hide), this run.
        var waitSeconds = 0.0

        /// `gradients` false: only the status and statistics (the gradients are summed by
        /// `SharedGradients`).
        init(model: Model, distributed: Distributed, gradients: Bool = true, bucketFloats: Int = 1 << 18) {
            self.distributed = distributed
            statistics = Packed(model.namedLayers.compactMap { $0.layer as? BatchNorm }
                .flatMap { [$0.runningMean.value, $0.runningVar.value] })
            buckets = gradients ? Buckets.ranges(model, bucketFloats: bucketFloats) : []
            requests = Array(repeating: nil, count: buckets.count)
        }

        /// The buckets of `model`'s trained gradients. They lie in its gradient block in the order
        /// backward completes them, so a bucket is the range from its first tensor to the end of
        /// its last (with the zero gaps between).
        static func ranges(_ model: Model, bucketFloats: Int) -> [Bucket] {
            var out: [Bucket] = []
            var start: UnsafeMutablePointer<Float>?, end: UnsafeMutablePointer<Float>?, layer = 0
            func close() {
                guard let s = start, let e = end else { return }
                out.append(Bucket(start: s, count: e - s, layer: layer))
                start = nil
            }
            for i in stride(from: model.layers.count - 1, through: model.frozenLayers, by: -1) {
                for p in model.layers[i].parameters.reversed() where p.trainable {
                    guard let g = p.grad else { continue }
                    if start != nil && g.pointer != end { close() }  // not next in the block
                    if start == nil { start = g.pointer }
                    end = g.pointer + Model.gradientStride(g.count)
                    layer = i
                    if end! - start! >= bucketFloats { close() }
                }
            }
            close()
            return out
        }

        deinit { status.deallocate() }

        /// After forward: starts summing the batch's loss, hits, failure and cancel (asked after
        /// the previous batch, which one process would have stopped after), and the running
        /// statistics weighted by `weight` (the rank's share of the batch: their weighted mean, so
        /// every rank keeps the same model; the batch statistics stay per rank, as in PyTorch's
        /// DistributedDataParallel without SyncBatchNorm).
        func startStatus(loss: Double, correct: Int, failed: Bool, cancel: Bool, weight: Float) {
            let mpi = distributed.mpi
            (status[0], status[1], status[2], status[3]) = (loss, Double(correct), failed ? 1 : 0, cancel ? 1 : 0)
            _ = mpi.iallreduce(MPILibrary.inPlace, status, 4, mpi.double, mpi.sum, distributed.comm, &statusRequests[0])
            statusStarted = 1
            guard statistics.buffer.count > 0 else { return }
            statistics.pack(scale: weight)
            _ = mpi.iallreduce(MPILibrary.inPlace, statistics.buffer.pointer, Int32(statistics.buffer.count), mpi.float, mpi.sum,
                               distributed.comm, &statusRequests[1])
            statusStarted = 2
        }

        /// Called after top-level layer `layer`'s backward: starts the buckets it completes, and
        /// lets MPI progress the ones under way.
        func layerDone(_ layer: Int) {
            while started < buckets.count && buckets[started].layer >= layer {
                let b = buckets[started], mpi = distributed.mpi
                _ = mpi.iallreduce(MPILibrary.inPlace, b.start, Int32(b.count), mpi.float, mpi.sum,
                                   distributed.comm, &requests[started])
                started += 1
            }
            var flag: Int32 = 0
            if started > 0 { _ = distributed.mpi.testall(Int32(started), &requests, &flag, nil) }
            if statusStarted > 0 { _ = distributed.mpi.testall(Int32(statusStarted), &statusRequests, &flag, nil) }
        }

        /// Starts what is left, waits for everything, copies the running statistics back, and
        /// returns the batch's status summed over the ranks.
        func finish() -> (loss: Double, correct: Int, failed: Bool, cancelled: Bool) {
            layerDone(-1)
            let t0 = monotonicSeconds()
            _ = distributed.mpi.waitall(Int32(started), &requests, nil)
            _ = distributed.mpi.waitall(Int32(statusStarted), &statusRequests, nil)
            waitSeconds += monotonicSeconds() - t0
            if statusStarted == 2 { statistics.unpack() }
            statusStarted = 0
            started = 0
            return (status[0], Int(status[1]), status[2] > 0, status[3] > 0)
        }
    }
}
