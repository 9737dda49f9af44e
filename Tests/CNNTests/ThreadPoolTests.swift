import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import CNN

@Suite("Thread pool")
struct ThreadPoolTests {
    /// Many tiny jobs back to back: the pattern that exposes races between a job's end and the
    /// next one's start (a worker still holding the previous job would trap here).
    @Test func manySmallJobs() {
        let pool = ThreadPool(threads: 3)
        var sums = [Int](repeating: 0, count: 8)
        for round in 0..<20_000 {
            sums.withUnsafeMutableBufferPointer { s in
                let base = s.baseAddress!
                pool.parallelFor(8) { i in base[i] += i + round % 3 }
            }
        }
        #expect(sums == (0..<8).map { 20_000 * $0 + (0..<20_000).reduce(0) { $0 + $1 % 3 } })
    }

    /// Jobs after a pause (the workers have gone to sleep and must be woken) and jobs whose last
    /// task runs long (the caller goes to sleep and must be woken): each wake-up is decided
    /// without the mutex, so a lost one would hang here.
    @Test(.timeLimit(.minutes(1))) func sleepersAreWoken() {
        let pool = ThreadPool(threads: 3)
        var sums = [Int](repeating: 0, count: 4)
        for round in 0..<60 {
            if round % 2 == 0 { usleep(2_000) }
            sums.withUnsafeMutableBufferPointer { s in
                let base = s.baseAddress!
                pool.parallelFor(4) { i in
                    if round % 3 == 0 && i == 3 { usleep(4_000) }
                    base[i] += i
                }
            }
        }
        #expect(sums == [0, 60, 120, 180])
    }

    @Test func nestedCallsRunSerially() {
        let pool = ThreadPool(threads: 2)
        var hits = [Int](repeating: 0, count: 16)
        hits.withUnsafeMutableBufferPointer { h in
            let base = h.baseAddress!
            pool.parallelFor(4) { i in pool.parallelFor(4) { j in base[i * 4 + j] += 1 } }
        }
        #expect(hits == [Int](repeating: 1, count: 16))
    }

    /// Job numbers wrap around; jobs keep running across the wrap. (Numbers past 2^23 once
    /// overflowed the claim word, and the next job never finished.)
    @Test func jobNumbersWrapAround() {
        let pool = ThreadPool(threads: 2, generation: PoolCore.maxGeneration - 3)
        var sums = [Int](repeating: 0, count: 4)
        for _ in 0..<10 {
            sums.withUnsafeMutableBufferPointer { s in
                let base = s.baseAddress!
                pool.parallelFor(4) { i in base[i] += i }
            }
        }
        #expect(sums == [0, 10, 20, 30])
    }
}
