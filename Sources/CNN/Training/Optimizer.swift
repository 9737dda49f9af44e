/// Which update rule training uses.
public enum OptimizerKind: String, Sendable, CaseIterable {
    case sgd, rmsprop, adam, adamw
}

/// Optimizer settings; the defaults are PyTorch's.
public struct OptimizerSettings: Equatable, Sendable {
    public var kind: OptimizerKind = .sgd
    public var momentum: Float = 0
    public var nesterov = false
    public var weightDecay: Float = 0
    /// false: biases and normalization parameters (batch norm's scale and shift) get no weight
    /// decay, as the best ImageNet recipes do; true (PyTorch's default): every parameter does.
    public var decayBiasAndNorm = true
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    /// RMSProp's smoothing constant.
    public var alpha: Float = 0.99
    public var eps: Float = 1e-8
    public init() {}
}

/// The update rules, with their state (momentum buffers, moment estimates) per parameter.
///
/// SGD:     g += wd·p;  v = μ·v + g;  p -= lr·(nesterov ? g + μ·v : v)
/// RMSProp: g += wd·p;  s = α·s + (1-α)·g²;  p -= lr·g / (√s + ε)
/// Adam:    g += wd·p;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;  p -= lr·m̂ / (√v̂ + ε)
/// AdamW:   as Adam without the g += wd·p, and p -= lr·wd·p first (decoupled weight decay).
public final class Optimizer {
    public let settings: OptimizerSettings
    let parameters: [(name: String, parameter: Parameter)]
    /// Each trained parameter's weight decay (0 for biases and norms when they are left out).
    let decay: [Float]
    /// Per trainable parameter: first state (momentum / m / s) and second (v, Adam only).
    var first: [FloatBuffer]
    var second: [FloatBuffer]
    /// Updates done so far (Adam's bias correction).
    public var step = 0
    /// The divergence guard's copy of everything an update changes, taken before it: values,
    /// first and second state, per trainable parameter (see `update` and `restorePrevious`).
    private var previous: [(value: FloatBuffer, first: FloatBuffer, second: FloatBuffer)] = []
    private var previousValid = false

    /// Floats of state `settings` keeps for `model` (what `init` allocates, without the guard's copy).
    static func stateFloats(_ settings: OptimizerSettings, model: Model) -> Int {
        let trainable = model.trainedParameters.reduce(0) { $0 + $1.parameter.count }
        let needsFirst = settings.kind != .sgd || settings.momentum != 0
        let needsSecond = settings.kind == .adam || settings.kind == .adamw
        return trainable * ((needsFirst ? 1 : 0) + (needsSecond ? 1 : 0))
    }

    public init(_ settings: OptimizerSettings, model: Model) throws {
        self.settings = settings
        parameters = model.trainedParameters
        var exempt = Set<ObjectIdentifier>()
        if !settings.decayBiasAndNorm {
            for (_, layer) in model.namedLayers {
                for p in layer.parameters where layer is BatchNorm || p.name == "bias" || p.name.hasSuffix(".bias") {
                    exempt.insert(ObjectIdentifier(p))
                }
            }
        }
        decay = parameters.map { exempt.contains(ObjectIdentifier($0.parameter)) ? 0 : settings.weightDecay }
        let needsFirst = settings.kind != .sgd || settings.momentum != 0
        let needsSecond = settings.kind == .adam || settings.kind == .adamw
        first = try parameters.map { try FloatBuffer(count: needsFirst ? $0.parameter.count : 0, for: "optimizer state of \($0.name)") }
        second = try parameters.map { try FloatBuffer(count: needsSecond ? $0.parameter.count : 0, for: "optimizer state of \($0.name)") }
    }

    /// Makes `update` keep a copy of what it changes, so that `restorePrevious` can undo it.
    func enableGuard() throws {
        guard previous.isEmpty else { return }
        previous = try parameters.indices.map { i in
            (try FloatBuffer(count: parameters[i].parameter.count, for: "the divergence guard's copy of \(parameters[i].name)"),
             try FloatBuffer(count: first[i].count, for: "the divergence guard's copy of the optimizer state"),
             try FloatBuffer(count: second[i].count, for: "the divergence guard's copy of the optimizer state"))
        }
    }

    /// Undoes the last `update` (values, state and step), when the guard is on and it kept a copy.
    /// Returns false when there is nothing to undo.
    @discardableResult
    func restorePrevious() -> Bool {
        guard previousValid else { return false }
        for (i, entry) in parameters.enumerated() {
            entry.parameter.value.copy(from: previous[i].value)
            first[i].copy(from: previous[i].first)
            second[i].copy(from: previous[i].second)
            entry.parameter.version += 1
        }
        step -= 1
        previousValid = false
        return true
    }

    /// True when every trained value is finite.
    var parametersFinite: Bool { parameters.allSatisfy { $0.parameter.value.allFinite } }

    /// The optimizer's state tensors, for checkpoints: name suffix, parameter name, buffer.
    var stateTensors: [(name: String, buffer: FloatBuffer)] {
        var out: [(String, FloatBuffer)] = []
        for (i, p) in parameters.enumerated() {
            if first[i].count > 0 { out.append(("optimizer.\(p.name).first", first[i])) }
            if second[i].count > 0 { out.append(("optimizer.\(p.name).second", second[i])) }
        }
        return out
    }

    /// One update of every trained parameter from its gradient. With the guard on, what it changes
    /// is copied first: by the common SGD-with-momentum loop as it goes (the values are in
    /// registers: two more stores; a separate copy before it cost 0.7 % of a 1-thread and 2 % of
    /// a 2-thread training step of the reference network), else parameter by parameter before
    /// the update, while it is in the cache.
    public func update(learningRate lr: Float) {
        step += 1
        let s = settings
        let bc1 = 1 - _powf(s.beta1, Float(step)), bc2 = 1 - _powf(s.beta2, Float(step))
        previousValid = !previous.isEmpty
        let vectorSGD = s.kind == .sgd && s.momentum != 0 && !s.nesterov && step > 1
        for (i, entry) in parameters.enumerated() {
            let p = entry.parameter
            guard let gradBuffer = p.grad else { continue }
            if previousValid && !vectorSGD {
                previous[i].value.copy(from: p.value)
                previous[i].first.copy(from: first[i])
                previous[i].second.copy(from: second[i])
            }
            let w = p.value.pointer, g = gradBuffer.pointer, count = p.count, wd = decay[i]
            let m = first[i].pointer, v = second[i].pointer
            switch s.kind {
            case .sgd:
                if vectorSGD {
                    // The common case a vector at a time, on the pool for large tensors: each value
                    // gets the same operations in any chunk, so results do not depend on threads.
                    let keep = previousValid
                    let pw = keep ? previous[i].value.pointer : w, pm = keep ? previous[i].first.pointer : m
                    parallelChunks(count, chunk: 1 << 16) { lo, hi in
                        Optimizer.sgdMomentum(w: w, g: g, m: m, from: lo, to: hi, keepingIn: keep ? (pw, pm) : nil,
                                              lr: lr, momentum: s.momentum, weightDecay: wd)
                    }
                    p.version += 1
                    continue
                }
                for j in 0..<count {
                    var d = g[j] + wd * w[j]
                    if s.momentum != 0 {
                        m[j] = step == 1 ? d : s.momentum * m[j] + d
                        d = s.nesterov ? d + s.momentum * m[j] : m[j]
                    }
                    w[j] -= lr * d
                }
            case .rmsprop:
                for j in 0..<count {
                    let d = g[j] + wd * w[j]
                    m[j] = s.alpha * m[j] + (1 - s.alpha) * d * d
                    w[j] -= lr * d / (m[j].squareRoot() + s.eps)
                }
            case .adam, .adamw:
                let decoupled = s.kind == .adamw
                for j in 0..<count {
                    if decoupled { w[j] -= lr * wd * w[j] }
                    let d = decoupled ? g[j] : g[j] + wd * w[j]
                    m[j] = s.beta1 * m[j] + (1 - s.beta1) * d
                    v[j] = s.beta2 * v[j] + (1 - s.beta2) * d * d
                    let mHat = m[j] / bc1, vHat = v[j] / bc2
                    w[j] -= lr * mHat / (vHat.squareRoot() + s.eps)
                }
            }
            p.version += 1
        }
    }

    /// SGD with momentum (after the first step) on values lo..<hi, a vector at a time, the tail
    /// one by one with the same operations; with `keepingIn`, the old values and momentum are
    /// stored there as they are read (the divergence guard's copy).
    static func sgdMomentum(w: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>,
                            from lo: Int, to hi: Int, keepingIn copy: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>)?,
                            lr: Float, momentum: Float, weightDecay: Float) {
        func run(keep: Bool, _ pw: UnsafeMutablePointer<Float>, _ pm: UnsafeMutablePointer<Float>) {
            let decay = V(repeating: weightDecay), mu = V(repeating: momentum), rate = V(repeating: lr)
            var j = lo
            while j + V.scalarCount <= hi {
                let wj = UnsafeRawPointer(w + j).loadUnaligned(as: V.self)
                let mOld = UnsafeRawPointer(m + j).loadUnaligned(as: V.self)
                if keep {
                    UnsafeMutableRawPointer(pw + j).storeBytes(of: wj, as: V.self)
                    UnsafeMutableRawPointer(pm + j).storeBytes(of: mOld, as: V.self)
                }
                let mj = mu * mOld + (UnsafeRawPointer(g + j).loadUnaligned(as: V.self) + decay * wj)
                UnsafeMutableRawPointer(m + j).storeBytes(of: mj, as: V.self)
                UnsafeMutableRawPointer(w + j).storeBytes(of: wj - rate * mj, as: V.self)
                j += V.scalarCount
            }
            while j < hi {
                if keep { pw[j] = w[j]; pm[j] = m[j] }
                let d = g[j] + weightDecay * w[j]
                m[j] = momentum * m[j] + d
                w[j] -= lr * m[j]
                j += 1
            }
        }
        if let (pw, pm) = copy { run(keep: true, pw, pm) } else { run(keep: false, w, m) }
    }
}
