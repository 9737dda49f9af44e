#if canImport(Glibc)
import Glibc
#endif

/// The gradient sum of data-parallel training when every rank runs on one machine: the ranks'
/// gradient blocks lie side by side in one shared memory segment, and after backward each rank
/// sums its slice of them (in rank order) and writes the sum into every rank's block. MPI only
/// marks the two moments the ranks meet (a barrier when all have finished backward, one when all
/// sums are written), so nothing goes through the kernel or a temporary: each rank reads and
/// writes each float of the gradient once. Open MPI's all-reduce of the same blocks copied them
/// between the processes (through the kernel, and its own shared fragments) and summed into a
/// temporary; see README ("Training on many processes") for what each costs.
///
/// Ranks on several machines, a segment that cannot be made (no /dev/shm, too little room in it,
/// over the memory limit) or `CNN_DISTRIBUTED_SHARED=0` on any rank: the gradients go through
/// `Distributed.Buckets` instead. For two ranks both add the same two floats, so the models are
/// the same bytes either way; for more, the sum's order differs (rank order here).
final class SharedGradients {
    /// The mapped segment: a header (the token that names it), then one gradient block per rank.
    final class Segment {
        let base: UnsafeMutableRawPointer
        let bytes: Int
        init(base: UnsafeMutableRawPointer, bytes: Int) {
            self.base = base
            self.bytes = bytes
        }
        deinit { munmap(base, bytes) }
    }

    static let headerBytes = 64
    private let distributed: Distributed
    private let segment: Segment
    /// Each rank's gradient block in the segment.
    private let blocks: [UnsafeMutablePointer<Float>]
    /// The floats this rank sums: its slice of the trained gradients (a prefix of the block, as
    /// frozen layers come last in it), on 16-float boundaries.
    let slice: Range<Int>
    /// Seconds waited at the first barrier (for the other ranks to finish backward), this run.
    var waitSeconds = 0.0

    /// This rank's block: the model's gradients while it trains (`Model.useGradientBlock`).
    var block: FloatBuffer { FloatBuffer(borrowing: blocks[distributed.rank], count: floats, owner: segment) }
    private let floats: Int

    private init(_ d: Distributed, _ segment: Segment, floats: Int, trained: Int) {
        distributed = d
        self.segment = segment
        self.floats = floats
        let first = (segment.base + SharedGradients.headerBytes).assumingMemoryBound(to: Float.self)
        blocks = (0..<d.size).map { first + $0 * floats }
        slice = SharedGradients.slice(rank: d.rank, ranks: d.size, trained: trained)
    }

    /// Rank `rank`'s part of the first `trained` floats (a multiple of 16): the parts cover them
    /// in order, each on 16-float (64-byte) boundaries, as equal as can be.
    static func slice(rank: Int, ranks: Int, trained: Int) -> Range<Int> {
        func bound(_ r: Int) -> Int { trained / 16 * r / ranks * 16 }
        return bound(rank)..<bound(rank + 1)
    }

    /// Sets up the segment for `model`'s gradients; collective (every rank calls it, and every
    /// rank gets nil, or a segment, together). nil: the ranks cannot share memory (see above).
    static func make(model: Model, distributed d: Distributed) -> SharedGradients? {
        let floats = model.gradientBlock.count
        let start = model.gradientBlock.pointer
        let trained = Distributed.Buckets.ranges(model, bucketFloats: Int.max).map { $0.start + $0.count - start }.max() ?? 0
        // The block was allocated, so 4 · floats fits; times the ranks may not.
        let (blocksBytes, overflow) = (4 * floats).multipliedReportingOverflow(by: d.size)
        let bytes = headerBytes + (overflow ? 0 : blocksBytes)
        let asked = getenv("CNN_DISTRIBUTED_SHARED").map { String(cString: $0) != "0" } ?? true
        let fits = floats > 0 && !overflow && (try? Memory.check(bytes, for: "the ranks' shared gradients")) != nil
        guard !d.any(d.size < 2 || !asked || !fits) else { return nil }

        // Rank 0 names and makes the segment; the others open it and check its token, which
        // fails on another machine (no such segment there, or another one's).
        var shared = [d.rank == 0 ? Double(token()) : 0]
        d.reduce(&shared, d.mpi.max)
        let token = UInt64(shared[0]), name = "/cnn-gradients-\(token)"
        var segment = d.rank == 0 ? create(name, bytes: bytes, token: token) : nil
        guard !d.any(d.rank == 0 && segment == nil) else { return nil }
        if d.rank != 0 { segment = open(name, bytes: bytes, token: token) }
        let everyone = !d.any(segment == nil)
        if d.rank == 0 { shm_unlink(name) }  // every rank has opened it or failed: the mappings stay
        guard everyone, let segment else { return nil }
        return SharedGradients(d, segment, floats: floats, trained: trained)
    }

    /// A name no other run on the machine uses at the same time (52 bits: a double holds it).
    private static func token() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        let mixed = (UInt64(UInt32(bitPattern: getpid())) &* 0x9E37_79B9_7F4A_7C15) ^ UInt64(t.tv_sec) &* 1_000_000_007 ^ UInt64(t.tv_nsec)
        return mixed & ((1 << 52) - 1) | 1
    }

    /// Rank 0's segment: made new (never an existing one), its pages reserved (a full /dev/shm
    /// is a nil here, not a SIGBUS on first touch), zeroed, the token in its header.
    private static func create(_ name: String, bytes: Int, token: UInt64) -> Segment? {
        let fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0o600)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard ftruncate(fd, off_t(bytes)) == 0, posix_fallocate(fd, 0, off_t(bytes)) == 0,
              let segment = map(fd, bytes: bytes) else {
            shm_unlink(name)
            return nil
        }
        segment.base.storeBytes(of: token, as: UInt64.self)
        return segment
    }

    /// Another rank's view of rank 0's segment, when it is the one rank 0 made.
    private static func open(_ name: String, bytes: Int, token: UInt64) -> Segment? {
        let fd = shm_open(name, O_RDWR, 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_size == off_t(bytes), let segment = map(fd, bytes: bytes),
              segment.base.load(as: UInt64.self) == token else { return nil }
        return segment
    }

    private static func map(_ fd: Int32, bytes: Int) -> Segment? {
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
              p != UnsafeMutableRawPointer(bitPattern: -1) else { return nil }
        return Segment(base: p, bytes: bytes)
    }

    /// After backward on every rank: the gradients summed over the ranks, in every rank's block.
    /// The barriers order the memory: every block is complete before any rank reads it, and
    /// every sum is written before any rank goes on (x86 keeps stores in order, and the barrier
    /// is a call the compiler cannot move them across).
    func sum() {
        let mpi = distributed.mpi
        let t0 = monotonicSeconds()
        _ = mpi.barrier(distributed.comm)
        waitSeconds += monotonicSeconds() - t0
        let blocks = self.blocks, lo = slice.lowerBound
        parallelChunks(slice.count, chunk: 1 << 16) { a, b in
            SharedGradients.sum(blocks, from: lo + a, to: lo + b)
        }
        _ = mpi.barrier(distributed.comm)
    }

    /// Floats lo..<hi of `blocks` summed in order and written back to every block; a vector at
    /// a time, the tail one by one with the same additions.
    static func sum(_ blocks: [UnsafeMutablePointer<Float>], from lo: Int, to hi: Int) {
        guard !blocks.isEmpty else { return }
        var j = lo
        while j + V.scalarCount <= hi {
            var s = load(blocks[0] + j)
            for r in 1..<blocks.count { s += load(blocks[r] + j) }
            for r in 0..<blocks.count { store(s, blocks[r] + j) }
            j += V.scalarCount
        }
        while j < hi {
            var s = blocks[0][j]
            for r in 1..<blocks.count { s += blocks[r][j] }
            for r in 0..<blocks.count { blocks[r][j] = s }
            j += 1
        }
    }
}
