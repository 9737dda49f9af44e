import Testing
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
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
    /// without the mutex, so a lost one would hang here. (The pool has no timed waits: a lost
    /// wake-up hangs for good, and any limit catches it. Five minutes, not one: CI runs these
    /// suites under AddressSanitizer at nice 19 beside the tests, where this test and the next,
    /// well under a second alone, were once reported at 80 s; the whole sanitized run alone
    /// reported them at 58 s, finishing with the last suites.)
    @Test(.timeLimit(.minutes(5))) func sleepersAreWoken() {
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

    /// `parallelItems` runs every item once, in a slot below both the slots and the items. With
    /// more than two tasks, task s takes items s, s + slots, ...; two tasks on one thread run one
    /// after the other, and the first takes all the items.
    @Test func itemsRunOnceEach() {
        for threads in 1...3 {
            let pool = ThreadPool(threads: threads)
            for slots in 1...3 {
                for count in 0...41 {
                    var slotOf = [Int](repeating: -1, count: count), runs = [Int](repeating: 0, count: count)
                    slotOf.withUnsafeMutableBufferPointer { s in runs.withUnsafeMutableBufferPointer { r in
                        let slotBase = s.baseAddress, runBase = r.baseAddress
                        pool.parallelItems(count, slots: slots) { item, slot in
                            slotBase![item] = slot
                            runBase![item] += 1
                        }
                    } }
                    #expect(runs.allSatisfy { $0 == 1 }, "\(threads) threads, \(slots) slots, \(count) items")
                    #expect(slotOf.allSatisfy { $0 >= 0 && $0 < min(slots, count) })
                    let tasks = min(slots, count)
                    if tasks > 2 {
                        #expect(slotOf.enumerated().allSatisfy { $0.element == $0.offset % tasks })
                    } else if threads == 1 {
                        #expect(slotOf.allSatisfy { $0 == 0 })
                    }
                }
            }
        }
    }

    /// With two tasks, one that has run out of its own items takes the other's last ones: slot 0,
    /// once it has item 0, waits until slot 1 has run all of its own (odd) items, which wait for
    /// item 0 to start; slot 1 then runs every even item but the first.
    @Test(.timeLimit(.minutes(5))) func idleTaskTakesTheOthersItems() {
        let pool = ThreadPool(threads: 2)
        let started = Atomic<Bool>(false), oddDone = Atomic<Int>(0)
        func wait(until done: () -> Bool) {
            var tries = 0
            while !done() && tries < 10_000 { usleep(1_000); tries += 1 }
        }
        var slotOf = [Int](repeating: -1, count: 21)
        slotOf.withUnsafeMutableBufferPointer { s in
            let base = s.baseAddress!
            pool.parallelItems(21, slots: 2) { item, slot in
                base[item] = slot
                if item == 0 {
                    started.store(true, ordering: .releasing)
                    wait { oddDone.load(ordering: .acquiring) == 10 }
                } else if item % 2 == 1 {
                    wait { started.load(ordering: .acquiring) }
                    oddDone.add(1, ordering: .releasing)
                }
            }
        }
        #expect(slotOf == [0] + (1..<21).map { _ in 1 })
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
