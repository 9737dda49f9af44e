// Which compiled copy of the engine runs: chosen once, from CPUID and XGETBV, capped by CNN_CPU.
//
// Swift has no per-function target attributes, so the engine (Sources/CNN), the C exports and the
// tool are each compiled three times as separate modules (CNN, CNNAVX2, CNNAVX512: symlinks to one
// source folder, each with its own -target-cpu, see Package.swift). The C library and the `cnn`
// executable are thin layers that forward every call to the copy this selection names.
import CCPUID
#if canImport(Glibc)
import Glibc
#endif

/// The instruction-set levels the engine is compiled for, slowest first.
public enum KernelLevel: Int, CaseIterable, Comparable, Sendable {
    /// x86-64-v2 (SSE4.2): 4-wide vectors, no fused multiply-add.
    case baseline
    /// x86-64-v3: AVX2 and FMA, 8-wide vectors.
    case avx2
    /// x86-64-v4: AVX-512 F/BW/CD/DQ/VL, 16-wide vectors and FMA.
    case avx512

    public var name: String {
        switch self {
        case .baseline: "baseline"
        case .avx2: "avx2"
        case .avx512: "avx512"
        }
    }

    public init?(name: String) {
        guard let level = KernelLevel.allCases.first(where: { $0.name == name.lowercased() }) else { return nil }
        self = level
    }

    var cpuidLevel: UInt32 {
        switch self {
        case .baseline: UInt32(CNNCPU_V2)
        case .avx2: UInt32(CNNCPU_V3)
        case .avx512: UInt32(CNNCPU_V4)
        }
    }

    public static func < (a: KernelLevel, b: KernelLevel) -> Bool { a.rawValue < b.rawValue }

    /// The best level compiled into this build (all of them, unless CNN_KERNEL_LEVELS=baseline).
    #if CNN_BASELINE_ONLY
    public static let built = KernelLevel.baseline
    #else
    public static let built = KernelLevel.avx512
    #endif
}

/// The outcome of the choice: the level in use, or why none may run.
public struct KernelSelection: Sendable {
    /// The copy every call goes to. When `problem` is set it is the baseline copy, which then
    /// answers every call that can fail with `problem` (nothing runs on a level the CPU lacks).
    public let level: KernelLevel
    /// The best level this CPU and OS support (nil: not even x86-64-v2).
    public let supported: KernelLevel?
    /// Set when the environment asked for a level this CPU lacks, or named none.
    public let problem: String?

    /// Chooses for a processor that supports `supported` (nil: below x86-64-v2) and a CNN_CPU
    /// value `request` (nil or empty: no cap). `missing` names what a level lacks.
    public init(supported: KernelLevel?, request: String?, missing: (KernelLevel) -> String) {
        self.supported = supported
        guard let supported else {
            level = .baseline
            problem = "this CPU lacks \(missing(.baseline)), which even the baseline kernels (x86-64-v2) need"
            return
        }
        guard let request, !request.isEmpty else {
            level = min(supported, KernelLevel.built)
            problem = nil
            return
        }
        guard let asked = KernelLevel(name: request) else {
            level = .baseline
            problem = "CNN_CPU=\(request) is not a kernel level: use avx512, avx2 or baseline (or unset it for the best this CPU has, \(supported.name))"
            return
        }
        guard asked <= KernelLevel.built else {
            level = .baseline
            problem = "CNN_CPU=\(request) asks for \(asked.name) kernels, but this build has only the baseline ones (built with CNN_KERNEL_LEVELS=baseline)"
            return
        }
        guard asked <= supported else {
            level = .baseline
            problem = "CNN_CPU=\(request) asks for \(asked.name) kernels, but this CPU lacks \(missing(asked)); it supports up to \(supported.name) (unset CNN_CPU or set CNN_CPU=\(supported.name))"
            return
        }
        level = asked
        problem = nil
    }

    /// "kernels: avx512; cpu: avx512" (and the problem, when there is one).
    public var description: String {
        let cpu = supported?.name ?? "below x86-64-v2"
        if let problem { return "kernels: none (\(problem)); cpu: \(cpu)" }
        return "kernels: \(level.name); cpu: \(cpu)"
    }

    /// For an executable's entry point: the level to run, or (when none may run) the reason on
    /// stderr as "program: error: ..." and exit status 1.
    public static func levelOrExit(program: String) -> KernelLevel {
        if let problem = current.problem {
            fputs("\(program): error: \(problem)\n", stderr)
            exit(1)
        }
        return current.level
    }

    /// This process's choice: made once, on first use (a Swift global: thread-safe, swift_once).
    public static let current: KernelSelection = {
        let levels = cnncpu_levels()
        let supported = KernelLevel.allCases.last { levels & $0.cpuidLevel != 0 }
        let request = getenv("CNN_CPU").map { String(cString: $0) }
        return KernelSelection(supported: supported, request: request, missing: missingFeatures)
    }()
}

/// The features `level` needs that this CPU (or its OS) lacks, as CPUID names them.
func missingFeatures(_ level: KernelLevel) -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    cnncpu_missing(level.cpuidLevel, &buffer, UInt32(buffer.count))
    return String(cString: buffer)
}
