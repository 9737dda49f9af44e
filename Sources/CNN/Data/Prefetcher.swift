#if canImport(Glibc)
import Glibc
#endif

/// Builds the next batches on worker threads while the current one trains: decoding (for folders
/// too large for the memory budget), augmentation and normalization. The queue is bounded (`depth`
/// batches), so memory stays bounded whatever the dataset size. Batch j's content depends only on
/// the epoch's order, its seed and j, never on which worker built it or when.
final class Prefetcher {
    struct Slot {
        let x: FloatBuffer
        let labels: UnsafeMutablePointer<Int32>
        var job = -1
        var ready = false
        var error: CNNError?
    }

    private let dataset: Dataset
    private let batchSize: Int
    private let mean: [Float], std: [Float]
    private let augmentation: Augmentation?
    private let depth: Int
    private var slots: [Slot]
    private let order: UnsafeMutablePointer<Int32>
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let changed = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var threads: [pthread_t] = []
    // Guarded by `mutex`.
    private var batches = 0
    private var epochSeed: UInt64 = 0
    private var nextJob = 0
    private var consumed = 0
    private var stopping = false

    /// A rank of a distributed run builds only its part of each batch (`Trainer.share`).
    private let part: (rank: Int, of: Int)

    init(dataset: Dataset, batchSize: Int, mean: [Float], std: [Float], augmentation: Augmentation?,
         workers: Int, depth: Int = 4, part: (rank: Int, of: Int) = (0, 1)) {
        self.dataset = dataset
        self.batchSize = batchSize
        self.part = part
        self.mean = mean
        self.std = std
        self.augmentation = augmentation
        self.depth = max(2, depth)
        slots = (0..<max(2, depth)).map { _ in
            Slot(x: FloatBuffer(count: batchSize / part.of * dataset.shape.count),
                 labels: UnsafeMutablePointer<Int32>.allocate(capacity: batchSize / part.of))
        }
        order = UnsafeMutablePointer<Int32>.allocate(capacity: max(dataset.count, 1))
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(changed, nil)
        for _ in 0..<max(1, workers) {
            // Unowned: the prefetcher joins its workers before it goes away.
            if let handle = startThread({ [unowned self] in self.workerLoop() }) { threads.append(handle) }
        }
    }

    /// Stops and joins the workers. Must be called before the prefetcher is dropped.
    func stop() {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_broadcast(changed)
        pthread_mutex_unlock(mutex)
        for t in threads { pthread_join(t, nil) }
        threads.removeAll()
    }

    deinit {
        stop()
        for s in slots { s.labels.deallocate() }
        order.deallocate()
        pthread_cond_destroy(changed)
        pthread_mutex_destroy(mutex)
        changed.deallocate()
        mutex.deallocate()
    }

    /// Starts an epoch: the samples in `permutation` order, augmentation drawn from `seed`, from
    /// batch `firstBatch` on (a run that goes on inside an epoch).
    func startEpoch(_ permutation: [Int32], seed: UInt64, firstBatch: Int = 0) {
        pthread_mutex_lock(mutex)
        // Wait for the workers of the previous epoch to finish what they were building.
        while slots.contains(where: { $0.job >= 0 && !$0.ready }) { pthread_cond_wait(changed, mutex) }
        for i in 0..<permutation.count { order[i] = permutation[i] }
        batches = (permutation.count + batchSize - 1) / batchSize
        epochSeed = seed
        nextJob = firstBatch
        consumed = firstBatch
        for i in slots.indices { slots[i].job = -1; slots[i].ready = false; slots[i].error = nil }
        pthread_cond_broadcast(changed)
        pthread_mutex_unlock(mutex)
    }

    /// The next batch in order: its images, labels and size. Valid until `release()`.
    func next() throws -> (x: FloatBuffer, labels: UnsafeMutablePointer<Int32>, count: Int) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        let j = consumed, slot = j % depth
        while !(slots[slot].job == j && slots[slot].ready) { pthread_cond_wait(changed, mutex) }
        if let e = slots[slot].error { throw e }
        let n = min(batchSize, dataset.count - j * batchSize)
        return (slots[slot].x, slots[slot].labels, Trainer.share(of: n, rank: part.rank, ranks: part.of).count)
    }

    /// Hands the current batch's buffers back to the workers.
    func release() {
        pthread_mutex_lock(mutex)
        let slot = consumed % depth
        slots[slot].job = -1
        slots[slot].ready = false
        consumed += 1
        pthread_cond_broadcast(changed)
        pthread_mutex_unlock(mutex)
    }

    private func workerLoop() {
        var scratch = SampleScratch(shape: dataset.shape)
        let sample = dataset.shape.count
        while true {
            pthread_mutex_lock(mutex)
            while !stopping && !(nextJob < batches && nextJob < consumed + depth) { pthread_cond_wait(changed, mutex) }
            if stopping { pthread_mutex_unlock(mutex); return }
            let j = nextJob, slot = j % depth
            nextJob += 1
            slots[slot].job = j
            slots[slot].ready = false
            let x = slots[slot].x.pointer, labels = slots[slot].labels, seed = epochSeed
            pthread_mutex_unlock(mutex)

            var failure: CNNError? = nil
            let share = Trainer.share(of: min(batchSize, dataset.count - j * batchSize), rank: part.rank, ranks: part.of)
            let lo = j * batchSize + share.first, n = share.count
            for b in 0..<n {
                let position = lo + b, index = Int(order[position])
                labels[b] = dataset.labels[index]
                // Each sample's augmentation comes from its own generator: the same whatever the
                // thread or the timing.
                var rng = Random(seed: seed &+ UInt64(position) &* 0x9E37_79B9_7F4A_7C15)
                do {
                    try dataset.fillSample(index, into: x + b * sample, mean: mean, std: std,
                                           augmentation: augmentation, rng: &rng, scratch: &scratch)
                } catch let e as CNNError {
                    failure = e
                    break
                } catch {
                    failure = CNNError(.internal, "\(error)")
                    break
                }
            }
            pthread_mutex_lock(mutex)
            slots[slot].error = failure
            slots[slot].ready = true
            pthread_cond_broadcast(changed)
            pthread_mutex_unlock(mutex)
        }
    }
}
