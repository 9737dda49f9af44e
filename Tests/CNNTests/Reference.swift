// Plain-loop references in Double for every layer and loss: the algorithmic definition that the
// engine's fast kernels are tested against, and the function that finite differences
// differentiate. Tensors are flat NCHW arrays; `p` holds the layer's parameters in file order.
@testable import CNN

enum Reference {
    static func forward(_ layer: Layer, _ x: [Double], batch: Int, _ p: [[Double]], training: Bool) -> [Double] {
        let s = layer.inputShape, o = layer.outputShape
        switch layer.spec.kind {
        case let .conv(out, k, st, pad, bias, groups):
            var y = [Double](repeating: 0, count: batch * o.count)
            let cg = s.c / groups, og = out / groups
            for n in 0..<batch { for oc in 0..<out { for oy in 0..<o.h { for ox in 0..<o.w {
                var acc = bias ? p[1][oc] : 0
                for j in 0..<cg { for ki in 0..<k.h { for kj in 0..<k.w {
                    let c = oc / og * cg + j
                    let iy = oy * st.h - pad.h + ki, ix = ox * st.w - pad.w + kj
                    if iy < 0 || iy >= s.h || ix < 0 || ix >= s.w { continue }
                    acc += p[0][((oc * cg + j) * k.h + ki) * k.w + kj] * x[((n * s.c + c) * s.h + iy) * s.w + ix]
                } } }
                y[((n * out + oc) * o.h + oy) * o.w + ox] = acc
            } } } }
            return y
        case let .maxpool(k, st, pad, _):
            return pool(x, batch: batch, s, o, k, st, true, pad: pad)
        case let .avgpool(k, st, pad, countPad):
            return pool(x, batch: batch, s, o, k, st, false, pad: pad, countPad: countPad)
        case .globalAvgPool:
            return pool(x, batch: batch, s, o, Pair(s.h, s.w), Pair(s.h, s.w), false)
        case let .zeroPad(pad):
            var y = [Double](repeating: 0, count: batch * o.count)
            for n in 0..<batch { for c in 0..<s.c { for iy in 0..<s.h { for ix in 0..<s.w {
                y[((n * s.c + c) * o.h + iy + pad.top) * o.w + ix + pad.left] = x[((n * s.c + c) * s.h + iy) * s.w + ix]
            } } } }
            return y
        case .flatten:
            return x
        case let .dense(out, bias):
            let i = s.count
            var y = [Double](repeating: 0, count: batch * out)
            for n in 0..<batch { for j in 0..<out {
                var acc = bias ? p[1][j] : 0
                for t in 0..<i { acc += p[0][j * i + t] * x[n * i + t] }
                y[n * out + j] = acc
            } }
            return y
        case .activation(let kind):
            return x.map { activation(kind, $0) }
        case .dropout:
            guard training, let d = layer as? Dropout else { return x }
            return x.indices.map { x[$0] * Double(d.mask[$0]) }
        case let .batchnorm(eps, _):
            let c = s.c, hw = s.h * s.w, m = Double(batch * hw)
            var y = x
            for ch in 0..<c {
                var mean = 0.0, variance = 0.0
                if training {
                    for n in 0..<batch { for i in 0..<hw { mean += x[(n * c + ch) * hw + i] } }
                    mean /= m
                    for n in 0..<batch { for i in 0..<hw { let d = x[(n * c + ch) * hw + i] - mean; variance += d * d } }
                    variance /= m
                } else {
                    mean = p[2][ch]; variance = p[3][ch]
                }
                for n in 0..<batch { for i in 0..<hw {
                    let j = (n * c + ch) * hw + i
                    y[j] = p[0][ch] * (x[j] - mean) / (variance + Double(eps)).squareRoot() + p[1][ch]
                } }
            }
            return y
        case .residual, .concat:
            // The sequences' layers on the block's parameters, split in their order.
            let block = layer as! Block
            var offset = 0
            func run(_ sequence: [Layer], _ x: [Double]) -> [Double] {
                var h = x
                for l in sequence {
                    let n = l.parameters.count
                    h = forward(l, h, batch: batch, Array(p[offset..<(offset + n)]), training: training)
                    offset += n
                }
                return h
            }
            let outputs = block.sequences.map { run($0.layers, x) }
            if layer is Residual { return outputs.count == 1 ? zip(outputs[0], x).map(+) : zip(outputs[0], outputs[1]).map(+) }
            let hw = o.h * o.w
            var y: [Double] = []
            for n in 0..<batch {
                for out in outputs {
                    let per = out.count / batch
                    y += out[(n * per)..<((n + 1) * per)]
                }
            }
            precondition(y.count == batch * o.c * hw)
            return y
        case let .squeezeExcite(sq, act, gate):
            // p: fc1.weight (sq, c), fc1.bias, fc2.weight (c, sq), fc2.bias
            let c = s.c, hw = s.h * s.w
            var y = x
            for n in 0..<batch {
                let means = (0..<c).map { ch in (0..<hw).reduce(0.0) { $0 + x[(n * c + ch) * hw + $1] } / Double(hw) }
                let h = (0..<sq).map { r in activation(act, p[1][r] + (0..<c).reduce(0.0) { $0 + p[0][r * c + $1] * means[$1] }) }
                for ch in 0..<c {
                    let g = activation(gate, p[3][ch] + (0..<sq).reduce(0.0) { $0 + p[2][ch * sq + $1] * h[$1] })
                    for i in 0..<hw { y[(n * c + ch) * hw + i] = x[(n * c + ch) * hw + i] * g }
                }
            }
            return y
        }
    }

    /// A convolution's backward by its definition: for L = Σ g · y, the input gradient, the weight
    /// gradient and (with a bias) the bias gradient, each a sum over the taps that touch it.
    static func convBackward(_ layer: Layer, _ x: [Double], _ g: [Double], batch: Int, _ p: [[Double]]) -> (dx: [Double], dw: [Double], db: [Double]) {
        guard case let .conv(out, k, st, pad, bias, groups) = layer.spec.kind else { return ([], [], []) }
        let s = layer.inputShape, o = layer.outputShape, cg = s.c / groups, og = out / groups
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: p[0].count)
        var db = [Double](repeating: 0, count: bias ? out : 0)
        for n in 0..<batch { for oc in 0..<out { for oy in 0..<o.h { for ox in 0..<o.w {
            let gv = g[((n * out + oc) * o.h + oy) * o.w + ox]
            if bias { db[oc] += gv }
            for j in 0..<cg { for ki in 0..<k.h { for kj in 0..<k.w {
                let iy = oy * st.h - pad.h + ki, ix = ox * st.w - pad.w + kj
                if iy < 0 || iy >= s.h || ix < 0 || ix >= s.w { continue }
                let xi = ((n * s.c + oc / og * cg + j) * s.h + iy) * s.w + ix, wi = ((oc * cg + j) * k.h + ki) * k.w + kj
                dx[xi] += p[0][wi] * gv
                dw[wi] += x[xi] * gv
            } } }
        } } } }
        return (dx, dw, db)
    }

    static func activation(_ kind: ActivationKind, _ v: Double) -> Double {
        switch kind {
        case .relu: return max(v, 0)
        case .leakyRelu(let a): return v > 0 ? v : Double(a) * v
        case .sigmoid: return 1 / (1 + exp(-v))
        case .tanh: return tanh(v)
        case .relu6: return min(max(v, 0), 6)
        case .hardSigmoid: return min(max(v + 3, 0), 6) / 6
        case .hardSwish: return v * min(max(v + 3, 0), 6) / 6
        case .silu: return v / (1 + exp(-v))
        case .gelu: return 0.5 * v * (1 + erf(v / 2.0.squareRoot()))
        }
    }

    static func pool(_ x: [Double], batch: Int, _ s: Shape, _ o: Shape, _ k: Pair, _ st: Pair, _ isMax: Bool, pad: Pair = Pair(0, 0),
                     countPad: Bool = true) -> [Double] {
        var y = [Double](repeating: 0, count: batch * o.count)
        for n in 0..<batch { for c in 0..<s.c { for oy in 0..<o.h { for ox in 0..<o.w {
            var acc = isMax ? -Double.infinity : 0
            var inside = 0
            for ki in 0..<k.h { for kj in 0..<k.w {
                let iy = oy * st.h - pad.h + ki, ix = ox * st.w - pad.w + kj
                if iy < 0 || iy >= s.h || ix < 0 || ix >= s.w { continue }  // padding: -infinity, or 0 not counted
                let v = x[((n * s.c + c) * s.h + iy) * s.w + ix]
                acc = isMax ? max(acc, v) : acc + v
                inside += 1
            } }
            y[((n * s.c + c) * o.h + oy) * o.w + ox] = isMax ? acc : acc / Double(countPad ? k.h * k.w : inside)
        } } } }
        return y
    }

    /// Mean loss over the batch.
    static func loss(_ kind: LossKind, _ z: [Double], labels: [Int32], classes k: Int, smoothing: Double) -> Double {
        let batch = labels.count
        var total = 0.0
        for n in 0..<batch {
            let row = Array(z[(n * k)..<((n + 1) * k)])
            switch kind {
            case .crossEntropy:
                let logSum = log(row.map { exp($0) }.reduce(0, +))
                for j in 0..<k {
                    let t = (j == labels[n] ? 1 - smoothing : 0) + smoothing / Double(k)
                    total -= t * (row[j] - logSum)
                }
            case .mse:
                for j in 0..<k { let d = row[j] - (j == labels[n] ? 1 : 0); total += d * d / Double(k) }
            }
        }
        return total / Double(batch)
    }
}

#if canImport(Glibc)
import Glibc
#endif
