#if canImport(Glibc)
import Glibc
#endif
import CCPUID

/// How many threads the engine uses by default: `CNN_NUM_THREADS` when it holds a number from 1
/// to 256, else the CPUs this process may run on (its affinity mask, as `nproc` counts them),
/// capped by a cgroup CPU quota (containers: cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`), rounded
/// up. Results never depend on the number; it only decides the speed.
public enum CPUCount {
    public static var defaultThreads: Int {
        if let text = getenv("CNN_NUM_THREADS").map({ String(cString: $0) }), let n = Int(text), n >= 1, n <= 256 {
            return n
        }
        return min(256, max(1, min(affinity(), quota() ?? Int.max)))
    }

    /// The CPUs in this thread's affinity mask.
    static func affinity() -> Int { Int(cnncpu_affinity_count()) }

    /// The cgroup CPU quota in whole CPUs (rounded up), or nil when there is none.
    static func quota() -> Int? {
        func cpus(_ quota: Int, _ period: Int) -> Int? { quota > 0 && period > 0 ? (quota + period - 1) / period : nil }
        if let v2 = firstLine("/sys/fs/cgroup/cpu.max") {   // "max 100000" or "200000 100000"
            let parts = v2.split(separator: " ")
            if parts.count == 2, let q = Int(parts[0]), let p = Int(parts[1]) { return cpus(q, p) }
            return nil
        }
        if let q = firstLine("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").flatMap({ Int($0) }),
           let p = firstLine("/sys/fs/cgroup/cpu/cpu.cfs_period_us").flatMap({ Int($0) }) {
            return cpus(q, p)
        }
        return nil
    }

    /// The first line of a small text file, or nil.
    static func firstLine(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var buffer = [CChar](repeating: 0, count: 128)
        guard fgets(&buffer, Int32(buffer.count), f) != nil else { return nil }
        let line = String(cString: buffer)
        return line.hasSuffix("\n") ? String(line.dropLast()) : line
    }
}
