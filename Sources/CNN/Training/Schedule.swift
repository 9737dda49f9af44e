/// Learning-rate schedules, each with an optional linear warm-up.
public enum ScheduleKind: String, Sendable, CaseIterable {
    /// The base rate throughout.
    case constant
    /// The rate times `gamma` every `stepEpochs` epochs.
    case step
    /// Cosine decay from the base rate to 0 over the whole run.
    case cosine
}

public struct Schedule: Equatable, Sendable {
    public var kind: ScheduleKind = .constant
    public var stepEpochs = 10
    public var gamma: Float = 0.1
    /// Epochs of linear warm-up from 0 to the base rate (may be fractional).
    public var warmupEpochs: Float = 0
    public init() {}

    /// The rate for update `step` (0-based) of a run of `totalSteps`, `stepsPerEpoch` per epoch.
    public func learningRate(base: Float, step: Int, stepsPerEpoch: Int, totalSteps: Int) -> Float {
        let perEpoch = Float(max(stepsPerEpoch, 1))
        let epoch = Float(step) / perEpoch
        let warmupSteps = warmupEpochs * perEpoch
        if warmupSteps > 0 && Float(step) < warmupSteps {
            return base * (Float(step) + 1) / warmupSteps
        }
        switch kind {
        case .constant:
            return base
        case .step:
            let k = Int(epoch) / max(stepEpochs, 1)
            return base * _powf(gamma, Float(k))
        case .cosine:
            let start = warmupSteps, span = max(Float(totalSteps) - start, 1)
            let t = min(max((Float(step) - start) / span, 0), 1)
            return base * 0.5 * (1 + _cosf(Float.pi * t))
        }
    }
}
