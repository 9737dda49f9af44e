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

    /// The process-wide pool used by the engine: `CPUCount.defaultThreads` threads until
    /// `setThreads` replaces it.
    public static var shared: ThreadPool {
        pthread_mutex_lock(sharedLock)
        defer { pthread_mutex_unlock(sharedLock) }
        return current
    }
    nonisolated(unsafe) private static var current = ThreadPool(threads: CPUCount.defaultThreads)
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

    public convenience init(threads: Int) {
        self.init(threads: threads, generation: 0)
    }

    /// `generation`: the last job number, for tests that cross its wrap-around.
    init(threads: Int, generation: Int) {
        core.generation = generation
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

    /// Runs `body(item, slot)` for every item in 0..<count on `slots` tasks (slot 0..<slots: the
    /// task's own, which no other item uses while it runs: its scratch). Task s takes items s,
    /// s + slots, s + 2·slots ... in order, as a fixed split would, so that from one layer to the
    /// next a core gets the same samples, whose inputs it wrote itself; with two tasks, one that
    /// has run out takes the other's last items. A core that runs slower for a while (another
    /// process on it: these 2 vCPUs each ran a convolution at 2.5 to 4.2 ms by turns) then holds
    /// up the call by at most an item (a fixed split of ResNet-20's batch of 32 kept the caller
    /// waiting for the other thread 10 % of its time). Handing all items out in turn, or from
    /// the two ends, moved samples between cores from layer to layer: 7-10 % slower when both
    /// cores ran at speed. Only for items whose results do not depend on which slot runs them or
    /// in which order (samples through a layer's forward).
    public func parallelItems(_ count: Int, slots: Int, _ body: (_ item: Int, _ slot: Int) -> Void) {
        let tasks = min(count, slots)
        guard tasks == 2 && count < 1 << 16 else {
            return parallelFor(tasks) { slot in
                for item in stride(from: slot, to: count, by: tasks) { body(item, slot) }
            }
        }
        // Items 2j + s for j in front_s ..< back_s are task s's not yet taken, 16 bits each:
        // front_0 | back_0 << 16 | front_1 << 32 | back_1 << 48.
        let left = Atomic<Int>(((count + 1) / 2) << 16 | (count / 2) << 48)
        parallelFor(2) { slot in
            while true {
                let c = left.load(ordering: .relaxed)
                @inline(__always) func field(_ i: Int) -> Int { c >> (16 * i) & 0xFFFF }
                let own = 2 * slot, other = 2 * (1 - slot)
                let next: Int, item: Int
                if field(own) < field(own + 1) {
                    (next, item) = (c + 1 << (16 * own), 2 * field(own) + slot)
                } else if field(other) < field(other + 1) {
                    (next, item) = (c - 1 << (16 * (other + 1)), 2 * (field(other + 1) - 1) + 1 - slot)
                } else {
                    return
                }
                guard left.compareExchange(expected: c, desired: next, ordering: .relaxed).exchanged else { continue }
                body(item, slot)
            }
        }
    }
}

/// The pool's shared state. A job is published by bumping `generation`; tasks are claimed from
/// `claim`, one word holding the job's generation and the range of tasks not yet claimed, so a
/// worker still looking at a finished job can never claim a task of the next one, and a claim
/// that succeeds is a task of a job that stays live until that task is counted done.
/// Both sides spin before they sleep (a worker 0.5 ms after its last task, the caller up to 2 ms
/// for the others): waking a sleeping thread costs 15-30 µs, more than many regions take (a
/// batch-1 prediction is about 25 µs in all). The mutex is taken only to sleep or to wake a
/// sleeper: a region between spinning threads is a few atomic operations (the three lock pairs a
/// region took were a third of a 1.5 µs layer's time at batch 1).
final class PoolCore {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let done = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // Workers reach the caller's closure through a pointer to it on the caller's stack (storing
    // the closure would allocate a reabstraction thunk per region); `withoutActuallyEscaping`
    // traps if a reference outlives the call, so none is kept once the job's tasks are done.
    // Written by the caller before it publishes a job, stable until all its tasks are done.
    private var body: UnsafePointer<(Int) -> Void>?
    private let busy = Atomic<Bool>(false)
    private var stopping = false        // guarded by `mutex`
    // Set under `mutex` by a thread about to sleep; read without it by the thread that would wake
    // it. Both sides store their own flag, then load the other's, sequentially consistent: one of
    // them sees the other (the sleeper sees the news and does not sleep, or the waker sees the
    // sleeper and signals it under the mutex).
    private let callerSleeping = Atomic<Bool>(false)
    private let sleepingWorkers = Atomic<Int>(0)
    /// The caller's copy; 1...maxGeneration, so that `generation << 40` stays a positive Int.
    var generation = 0
    static let maxGeneration = 1 << 23 - 1
    private let published = Atomic<Int>(0)
    private let claim = Atomic<Int>(0)
    private let remaining = Atomic<Int>(0)
    /// How long a worker spins for the next job, and the caller for the last task, before sleeping.
    private static let workerSpin = 0.000_5
    private static let callerSpin = 0.002

    /// Spins while `busy()` holds, for at most about `seconds` (the clock read every 256 turns,
    /// first after 256: most waits are shorter, and need no clock at all).
    @inline(__always)
    private static func spin(_ seconds: Double, while busy: () -> Bool) {
        var start = 0.0
        var turns = 0
        while busy() {
            turns &+= 1
            if turns & 255 == 0 {
                let now = monotonicSeconds()
                if start == 0 { start = now } else if now - start > seconds { return }
            }
        }
    }
    private static let maxTasks = 1 << 20 - 1

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
        if count > PoolCore.maxTasks || !busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {
            for i in 0..<count { body(i) }
            return
        }
        withoutActuallyEscaping(body) { escaping in withUnsafePointer(to: escaping) { bodyPointer in
            self.body = bodyPointer
            generation = generation % PoolCore.maxGeneration + 1
            remaining.store(count, ordering: .relaxed)
            claim.store(generation << 40 | count, ordering: .releasing)
            published.store(generation, ordering: .sequentiallyConsistent)
            if sleepingWorkers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(mutex)
                pthread_cond_broadcast(wake)
                pthread_mutex_unlock(mutex)
            }
            runTasks(generation, fromBack: false)
            PoolCore.spin(PoolCore.callerSpin) { remaining.load(ordering: .acquiring) > 0 }
            if remaining.load(ordering: .acquiring) > 0 {
                pthread_mutex_lock(mutex)
                callerSleeping.store(true, ordering: .sequentiallyConsistent)
                while remaining.load(ordering: .sequentiallyConsistent) > 0 { pthread_cond_wait(done, mutex) }
                callerSleeping.store(false, ordering: .relaxed)
                pthread_mutex_unlock(mutex)
            }
            self.body = nil
        } }
        busy.store(false, ordering: .releasing)
    }

    /// Claims and runs tasks of job `generation` until none is left: the caller from the first
    /// task up, workers from the last down. With as many tasks as threads each thread then runs
    /// the same task every time (whichever reaches the job first), so the data a task touches
    /// stays in its core's cache from one call to the next: the two halves of a dense layer's
    /// weights at batch 1, for instance. Which thread runs a task never changes its result.
    private func runTasks(_ generation: Int, fromBack: Bool) {
        while true {
            // generation << 40 | first unclaimed task << 20 | end of the unclaimed tasks
            let c = claim.load(ordering: .acquiring)
            let front = c >> 20 & PoolCore.maxTasks, back = c & PoolCore.maxTasks
            if c >> 40 != generation || front >= back { return }
            let next = fromBack ? c - 1 : c + (1 << 20)
            guard claim.compareExchange(expected: c, desired: next, ordering: .acquiringAndReleasing).exchanged else { continue }
            body?.pointee(fromBack ? back - 1 : front)
            if remaining.subtract(1, ordering: .sequentiallyConsistent).newValue == 0
                && callerSleeping.load(ordering: .sequentiallyConsistent) {
                pthread_mutex_lock(mutex)
                pthread_cond_signal(done)
                pthread_mutex_unlock(mutex)
            }
        }
    }

    func workerLoop() {
        var seen = 0
        while true {
            PoolCore.spin(PoolCore.workerSpin) { published.load(ordering: .acquiring) == seen }
            var next = published.load(ordering: .acquiring)
            if next == seen {
                pthread_mutex_lock(mutex)
                sleepingWorkers.add(1, ordering: .sequentiallyConsistent)
                while published.load(ordering: .sequentiallyConsistent) == seen && !stopping { pthread_cond_wait(wake, mutex) }
                sleepingWorkers.subtract(1, ordering: .relaxed)
                pthread_mutex_unlock(mutex)
                next = published.load(ordering: .acquiring)
            }
            if next < 0 { return }
            seen = next
            runTasks(next, fromBack: true)
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
