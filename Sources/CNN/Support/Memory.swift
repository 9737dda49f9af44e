#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The library's memory discipline: a cap on what one call may allocate, checked against sizes
/// computed from shapes before anything is taken, and the one function that takes large buffers
/// and reports a failure as an error (Swift's own allocation traps when malloc says no).
public enum Memory {
    /// Bytes one call (loading a dataset or a model, building a model, training, predicting) may
    /// allocate. Default: `CNN_MEMORY_LIMIT` from the environment (bytes, or with a K, M, G or T
    /// suffix), else half the machine's physical memory, at least 1 GiB.
    public static var limit: Int {
        get { limitBytes.load(ordering: .relaxed) }
        set { limitBytes.store(max(newValue, 1 << 20), ordering: .relaxed) }
    }

    private static let limitBytes = Atomic<Int>(defaultLimit)

    public static let defaultLimit: Int = {
        if let text = getenv("CNN_MEMORY_LIMIT").map({ String(cString: $0) }), let bytes = parseSize(text) {
            return max(bytes, 1 << 20)
        }
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), pageSize = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, pageSize > 0 else { return 4 << 30 }
        return max(1 << 30, pages / 2 * pageSize)
    }()

    /// "4096", "512M", "8G", "1.5G": bytes; nil when the text is not such a size.
    public static func parseSize(_ text: String) -> Int? {
        var digits = Substring(text.trimmingSpaces)
        var scale = 1.0
        if let last = digits.last, let power = "KMGT".firstIndex(of: last.uppercased().first!) {
            scale = Double(1 << (10 * ("KMGT".distance(from: "KMGT".startIndex, to: power) + 1)))
            digits = digits.dropLast()
        }
        guard let value = Double(digits), value.isFinite, value > 0, value * scale < 9e18 else { return nil }
        return Int(value * scale)
    }

    /// Throws `outOfMemory` when `bytes` (a size computed from shapes, before allocating) is over
    /// the limit; `what` names what needs it.
    public static func check(_ bytes: Int, for what: String) throws {
        guard bytes >= 0, bytes <= limit else {
            throw CNNError(.outOfMemory, "\(what) would take \(describe(bytes)), more than the memory limit of \(describe(limit)) (raise it with cnn_set_memory_limit or CNN_MEMORY_LIMIT)")
        }
    }

    /// `count` zeroed values of `T`, taken with calloc: over the limit or refused by the system,
    /// an `outOfMemory` error instead of a trap. Free with `free`.
    public static func allocate<T>(_ count: Int, of type: T.Type, for what: String) throws -> UnsafeMutablePointer<T> {
        let (bytes, overflow) = max(count, 1).multipliedReportingOverflow(by: MemoryLayout<T>.stride)
        guard !overflow else { throw CNNError(.outOfMemory, "\(what): \(count) values do not fit in memory") }
        try check(bytes, for: what)
        guard let raw = calloc(max(count, 1), MemoryLayout<T>.stride) else {
            throw CNNError(.outOfMemory, "\(what): the system refused \(describe(bytes))")
        }
        return raw.bindMemory(to: T.self, capacity: max(count, 1))
    }

    /// A zeroed array of `count` bytes. A Swift array cannot report a failed allocation (it traps),
    /// so the memory is first mapped and given back (`ensureAvailable`): a request the system would refuse
    /// (ulimit -v, a cgroup's limit) fails here with an error instead.
    public static func byteArray(_ count: Int, for what: String) throws -> [UInt8] {
        try ensureAvailable(count, for: what)
        return [UInt8](repeating: 0, count: count)
    }

    /// Checks `bytes` against the limit and that the system would give them now (see `byteArray`).
    public static func ensureAvailable(_ bytes: Int, for what: String) throws {
        try check(bytes, for: what)
        guard bytes >= 1 << 20 else { return }
        // mmap, as malloc does for blocks this large (a malloc/free pair whose block is unused is
        // deleted by the optimizer).
        let probe = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let probe, probe != MAP_FAILED else {
            throw CNNError(.outOfMemory, "\(what): the system refused \(describe(bytes))")
        }
        munmap(probe, bytes)
    }

    static func describe(_ bytes: Int) -> String {
        if bytes >= 1 << 30 { return "\((Double(bytes) / Double(1 << 30) * 10).rounded() / 10) GiB" }
        if bytes >= 1 << 20 { return "\((Double(bytes) / Double(1 << 20) * 10).rounded() / 10) MiB" }
        return "\(bytes) bytes"
    }
}
