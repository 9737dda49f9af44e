#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// One persistent pool of worker threads (no thread is created per call).
///
/// Determinism rule: callers split work only over *output* elements, by a partition that does not
/// depend on the thread count, and every output element is computed by one task with the same
/// sequence of operations. Results are then bit-identical with 1 or N threads.
public final class ThreadPool {
    public let threads: Int
    private var handles: [pthread_t] = []
    // Workers hold the core, not the pool, so that dropping the pool stops and joins them.
    private let core = PoolCore()

    /// The process-wide pool used by the engine. Replace it with `setThreads`.
    public static var shared: ThreadPool {
        pthread_mutex_lock(sharedLock)
        defer { pthread_mutex_unlock(sharedLock) }
        return current
    }
    nonisolated(unsafe) private static var current = ThreadPool(threads: 1)
    private static let sharedLock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    /// Sets the number of threads the engine uses (1 = the calling thread only).
    public static func setThreads(_ n: Int) {
        pthread_mutex_lock(sharedLock)
        defer { pthread_mutex_unlock(sharedLock) }
        let n = max(1, min(n, 256))
        if current.threads != n { current = ThreadPool(threads: n) }
    }

    public init(threads: Int) {
        self.threads = max(1, threads)
        for _ in 1..<self.threads {
            if let handle = startThread({ [core] in core.workerLoop() }) { handles.append(handle) }
        }
    }

    deinit {
        core.stop()
        for h in handles { pthread_join(h, nil) }
    }

    /// Runs `body(i)` for every i in 0..<count, spread over the pool; returns when all are done.
    /// A call made while the pool is busy (nested, or from another thread) runs serially.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || handles.isEmpty {
            for i in 0..<count { body(i) }
            return
        }
        core.run(count, body)
    }
}

final class PoolCore {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let done = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // Guarded by `mutex`. Workers see the job unretained: `withoutActuallyEscaping` traps if a
    // reference to the closure outlives the call, so no worker may hold one once it reports done.
    private var job: Unmanaged<JobBox>?
    /// Reused for every job, so that a parallel region allocates nothing.
    private let box = JobBox()
    private var generation = 0
    private var taskCount = 0
    private var nextTask = 0
    private var pending = 0
    private var stopping = false
    /// `generation`, readable without the lock: a worker that has just finished a job spins on it
    /// for a while before it sleeps, since waking a sleeping thread costs 15-30 µs, more than many
    /// of the regions take.
    private let published = Atomic<Int>(0)

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        pthread_cond_init(done, nil)
    }

    deinit {
        pthread_cond_destroy(wake); pthread_cond_destroy(done); pthread_mutex_destroy(mutex)
        wake.deallocate(); done.deallocate(); mutex.deallocate()
    }

    func stop() {
        pthread_mutex_lock(mutex)
        stopping = true
        published.store(-1, ordering: .releasing)
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
    }

    func run(_ count: Int, _ body: (Int) -> Void) {
        pthread_mutex_lock(mutex)
        if job != nil {
            pthread_mutex_unlock(mutex)
            for i in 0..<count { body(i) }
            return
        }
        // The workers reach the caller's closure through a pointer to it on this stack: storing
        // the closure itself would allocate a reabstraction thunk for every parallel region.
        withoutActuallyEscaping(body) { escaping in withUnsafePointer(to: escaping) { bodyPointer in
            box.body = bodyPointer
            job = Unmanaged.passUnretained(box)
            taskCount = count
            nextTask = 0
            pending = count
            generation &+= 1
            published.store(generation, ordering: .releasing)
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(mutex)
            runTasks()
            pthread_mutex_lock(mutex)
            while pending > 0 { pthread_cond_wait(done, mutex) }
            job = nil
            box.body = nil   // the closure must not outlive withoutActuallyEscaping
            pthread_mutex_unlock(mutex)
        } }
    }

    private func runTasks() {
        while true {
            pthread_mutex_lock(mutex)
            guard let box = job, nextTask < taskCount else {
                pthread_mutex_unlock(mutex)
                return
            }
            let i = nextTask
            nextTask += 1
            pthread_mutex_unlock(mutex)
            box.takeUnretainedValue().body?.pointee(i)
            pthread_mutex_lock(mutex)
            pending -= 1
            if pending == 0 { pthread_cond_signal(done) }
            pthread_mutex_unlock(mutex)
        }
    }

    func workerLoop() {
        var seen = 0
        while true {
            var spins = 0
            while published.load(ordering: .acquiring) == seen && spins < 20_000 { spins += 1 }
            pthread_mutex_lock(mutex)
            while generation == seen && !stopping { pthread_cond_wait(wake, mutex) }
            if stopping { pthread_mutex_unlock(mutex); return }
            seen = generation
            pthread_mutex_unlock(mutex)
            runTasks()
        }
    }
}

/// Starts a thread that runs `body` (and holds what it captures until it returns); nil when the
/// system refuses a thread.
func startThread(_ body: @escaping () -> Void) -> pthread_t? {
    var handle = pthread_t()
    let context = Unmanaged.passRetained(ThreadStart(body)).toOpaque()
    guard pthread_create(&handle, nil, { raw in
        Unmanaged<ThreadStart>.fromOpaque(raw!).takeRetainedValue().body()
        return nil
    }, context) == 0 else {
        Unmanaged<ThreadStart>.fromOpaque(context).release()
        return nil
    }
    return handle
}

private final class ThreadStart {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

final class JobBox {
    var body: UnsafePointer<(Int) -> Void>?
}
