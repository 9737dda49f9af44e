import Testing
@testable import CNN

@Suite("Architecture language")
struct ArchitectureTests {
    @Test func referenceNetwork() throws {
        let a = try Architecture(parsing: CNN_referenceNetworkText)
        #expect(a.text == CNN_referenceNetworkText)
        #expect(a.input == Shape(c: 1, h: 28, w: 28))
        let m = try Model(architecture: a, seed: 1)
        #expect(m.parameterCount == 421_642)
        #expect(m.namedParameters.map(\.name) == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias"])
        #expect(m.namedParameters.map(\.parameter.shape) == [[32, 1, 3, 3], [32], [64, 32, 3, 3], [64], [128, 3136], [128], [10, 128], [10]])
    }

    @Test func commentsNewlinesAndSpaces() throws {
        let text = """
        # a small network
        input(3, 32, 32)
        conv(16, 3x5, stride=2, pad=1x2)   # rectangular kernel
        batchnorm relu dropout(0.25)
        globalavgpool flatten dense(10, bias=false)
        """
        let a = try Architecture(parsing: text)
        #expect(a.text == "input(3,32,32) conv(16,3x5,stride=2,pad=1x2) batchnorm relu dropout(0.25) globalavgpool flatten dense(10,bias=false)")
        #expect(try Architecture(parsing: a.text) == a)
        let m = try Model(architecture: a, seed: 1)
        #expect(m.layers[0].outputShape == Shape(c: 16, h: 16, w: 16))
    }

    /// Max pooling with padding (ResNet-18's stem): its text, its output size as PyTorch's.
    @Test func maxPoolingWithPadding() throws {
        let a = try Architecture(parsing: "input(3,224,224) conv(64,7,stride=2,pad=3) maxpool(3, stride=2, pad=1) flatten dense(2)")
        #expect(a.text == "input(3,224,224) conv(64,7,stride=2,pad=3) maxpool(3,stride=2,pad=1) flatten dense(2)")
        let m = try Model(architecture: a)
        #expect(m.layers[1].outputShape == Shape(c: 64, h: 56, w: 56))
    }

    /// ceil=true rounds the output size up as PyTorch's ceil_mode does (a last window that would
    /// start past the input and its leading padding is dropped); average pooling takes padding.
    @Test func ceilModeAndPaddedAveragePooling() throws {
        let text = "input(3,13,13) maxpool(3, stride=2, ceil=true) avgpool(3,stride=1,pad=1) maxpool(2,ceil=false) flatten dense(2)"
        let a = try Architecture(parsing: text)
        #expect(a.text == "input(3,13,13) maxpool(3,stride=2,ceil=true) avgpool(3,stride=1,pad=1) maxpool(2) flatten dense(2)")
        #expect(try Architecture(parsing: a.text) == a)
        let m = try Model(architecture: a)
        #expect(m.layers.prefix(3).map(\.outputShape) == [Shape(c: 3, h: 6, w: 6), Shape(c: 3, h: 6, w: 6), Shape(c: 3, h: 3, w: 3)])
        // PyTorch's sizes: 112 -> 56 (ceil as floor), 55 -> 28 (floor 27), 6 at stride 2 with pad 1 -> 4,
        // and 5 with kernel 2, stride 2, pad 1 -> 3 (ceil's 4th window would start in the right padding).
        for (n, k, s, p, floor, ceil) in [(112, 3, 2, 0, 55, 56), (55, 3, 2, 0, 27, 27), (56, 3, 2, 0, 27, 28), (6, 3, 2, 1, 3, 4), (5, 2, 2, 1, 3, 3)] {
            #expect(pooledSize(n, kernel: k, stride: s, pad: p, ceil: false) == floor, "\(n) \(k) \(s) \(p)")
            #expect(pooledSize(n, kernel: k, stride: s, pad: p, ceil: true) == ceil, "\(n) \(k) \(s) \(p) ceil")
        }
        #expect(throws: CNNError.self) { try Architecture(parsing: "input(1,8,8) avgpool(3,pad=2) flatten dense(2)") }
        #expect(throws: CNNError.self) { try Architecture(parsing: "input(1,8,8) maxpool(3,ceil=maybe) flatten dense(2)") }
        #expect(throws: CNNError.self) { try Architecture(parsing: "input(1,8,8) avgpool(3,ceil=true) flatten dense(2)") }
        // count_include_pad=false is written where it changes something: with padding.
        let notCounted = try Architecture(parsing: "input(1,8,8) avgpool(3,stride=1,pad=1,count_include_pad=false) avgpool(2,count_include_pad=false) flatten dense(2)")
        #expect(notCounted.text == "input(1,8,8) avgpool(3,stride=1,pad=1,count_include_pad=false) avgpool(2) flatten dense(2)")
        #expect(try Architecture(parsing: notCounted.text) == notCounted)
        #expect(notCounted != (try Architecture(parsing: "input(1,8,8) avgpool(3,stride=1,pad=1) avgpool(2) flatten dense(2)")))
    }

    /// zeropad takes PyTorch's ZeroPad2d order (left, right, top, bottom), or one amount for all.
    @Test func zeroPadding() throws {
        let a = try Architecture(parsing: "input(3,7,7) zeropad(0,1,0,1) conv(4,3,stride=2) zeropad(2,2,2,2) zeropad(1,0,2,3) flatten dense(2)")
        #expect(a.text == "input(3,7,7) zeropad(0,1,0,1) conv(4,3,stride=2) zeropad(2) zeropad(1,0,2,3) flatten dense(2)")
        #expect(try Architecture(parsing: a.text) == a)
        #expect(a.layers[0].kind == .zeroPad(Padding(top: 0, left: 0, bottom: 1, right: 1)))
        let m = try Model(architecture: a)
        #expect(m.layers.prefix(4).map(\.outputShape) == [Shape(c: 3, h: 8, w: 8), Shape(c: 4, h: 3, w: 3), Shape(c: 4, h: 7, w: 7), Shape(c: 4, h: 12, w: 8)])
        for (text, message) in [("zeropad(1,2)", "one amount or four"), ("zeropad(0)", "adds nothing"), ("zeropad(-1)", "left must be"),
                                ("zeropad(1,1,1,x)", "bottom must be"), ("zeropad", "missing argument 'left'")] {
            #expect { try Architecture(parsing: "input(1,8,8) \(text) flatten dense(2)") } throws: { ($0 as? CNNError)?.message.contains(message) == true }
        }
        #expect(throws: CNNError.self) { try Model(architecture: Architecture(parsing: "input(1,8,8) flatten zeropad(1) dense(2)")) }
        #expect(throws: CNNError.self) { try Model(architecture: Architecture(parsing: "input(1,8,65536) zeropad(0,1,0,0) flatten dense(2)")) }
    }

    /// The newer layers round-trip through their text and name their tensors as PyTorch does:
    /// a depthwise conv's weight is (C, 1, K, K), a grouped one's (OC, C / groups, K, K).
    @Test func groupsAndNewerActivations() throws {
        let text = "input(8,16,16) conv(8,3,pad=1,groups=8,bias=false) batchnorm relu6 conv(16,1,groups=2) hardswish silu gelu hardsigmoid swish globalavgpool flatten dense(3)"
        let a = try Architecture(parsing: text)
        #expect(a.text == "input(8,16,16) conv(8,3,pad=1,bias=false,groups=8) batchnorm relu6 conv(16,1,groups=2) hardswish silu gelu hardsigmoid silu globalavgpool flatten dense(3)")
        #expect(try Architecture(parsing: a.text) == a)
        let m = try Model(architecture: a, seed: 1)
        #expect(m.namedParameters.map(\.parameter.shape).prefix(2) == [[8, 1, 3, 3], [8]])
        #expect(m.namedParameters.first { $0.name == "3.weight" }?.parameter.shape == [16, 4, 1, 1])
        #expect(m.layers[0].flops == 2 * 8 * 16 * 16 * 9)
        let se = try Model(architecture: Architecture(parsing: "input(16,4,4) se(4,act=silu,gate=hardsigmoid) se(2) flatten dense(2)"), seed: 1)
        #expect(se.architecture.text == "input(16,4,4) se(4,act=silu,gate=hardsigmoid) se(2) flatten dense(2)")
        #expect(se.namedParameters.map(\.name).prefix(4) == ["0.fc1.weight", "0.fc1.bias", "0.fc2.weight", "0.fc2.bias"])
        #expect(se.namedParameters.map(\.parameter.shape).prefix(4) == [[4, 16, 1, 1], [4], [16, 4, 1, 1], [16]])
        // Initialized: neither 1×1 convolution starts at zero (a zero fc2 would pass no gradient).
        #expect(se.namedParameters[0].parameter.value.array.contains { $0 != 0 })
        #expect(se.namedParameters[2].parameter.value.array.contains { $0 != 0 })
    }

    /// Blocks: the canonical text round-trips, repeat(N) is written out, tensors take PyTorch's
    /// module paths, and a model file with blocks saves and loads back the same bytes.
    @Test func blocks() throws {
        let text = """
        input(3,16,16) conv(8,3,pad=1) batchnorm relu
        repeat(2)[ residual[conv(8,3,pad=1) batchnorm relu conv(8,3,pad=1) batchnorm] relu ]
        residual[conv(16,3,stride=2,pad=1) batchnorm relu conv(16,3,pad=1) batchnorm | conv(16,1,stride=2) batchnorm] relu
        concat[conv(4,1) | conv(4,3,pad=1) | ] globalavgpool flatten dense(3)
        """
        let a = try Architecture(parsing: text)
        let block = "residual[conv(8,3,pad=1) batchnorm relu conv(8,3,pad=1) batchnorm] relu"
        #expect(a.text == "input(3,16,16) conv(8,3,pad=1) batchnorm relu \(block) \(block) residual[conv(16,3,stride=2,pad=1) batchnorm relu conv(16,3,pad=1) batchnorm | conv(16,1,stride=2) batchnorm] relu concat[conv(4,1) | conv(4,3,pad=1) | ] globalavgpool flatten dense(3)")
        #expect(try Architecture(parsing: a.text) == a)
        let m = try Model(architecture: a, seed: 3)
        #expect(m.layers.count == 13)
        #expect(m.layers[9].outputShape == Shape(c: 24, h: 8, w: 8))
        let names = m.namedParameters.map(\.name)
        #expect(names.contains("3.body.0.weight") && names.contains("3.body.4.running_var") && names.contains("7.shortcut.1.bias"))
        #expect(names.contains("9.branches.1.0.weight") && names.last == "12.bias")
        #expect(m.summary.contains("shortcut.1 batchnorm") && m.summary.contains("branches.2: identity"))
        // A block's parameters are its layers' (gradients, optimizers and devices take them from
        // the layers): every named one, each trained one with a gradient.
        #expect(m.layers.flatMap(\.parameters).map(ObjectIdentifier.init) == m.namedParameters.map { ObjectIdentifier($0.parameter) })
        #expect(m.namedParameters.allSatisfy { !$0.parameter.trainable || $0.parameter.grad != nil })
        let path = temporaryPath("blocks.safetensors")
        try m.save(to: path)
        let back = try Model.load(from: path)
        #expect(back.namedParameters.map(\.name) == names)
        #expect(zip(back.namedParameters, m.namedParameters).allSatisfy { $0.parameter.value.array == $1.parameter.value.array })
    }

    /// Per-layer forward times (`cnn summary --time`): one for every layer, blocks' inner layers
    /// too, a block's at least its layers' sum; the predictions are the same bits with the clock
    /// running; bad arguments are errors.
    @Test func layerTimes() throws {
        let m = try Model(architecture: Architecture(parsing: """
            input(3,16,16) conv(8,3,pad=1) batchnorm relu residual[conv(8,3,pad=1) batchnorm relu conv(8,3,pad=1) batchnorm] relu
            concat[conv(4,1) | conv(4,3,pad=1,groups=4) | ] globalavgpool flatten dense(3)
            """), seed: 2)
        var r = TestRandom(3)
        let x = r.values(2 * m.inputShape.count, 0, 1)
        let before = x.withUnsafeBufferPointer { m.predict($0.baseAddress!, batch: 2, logits: true) }
        let times = try m.layerTimes(batch: 2, rounds: 3)
        let all = m.namedLayers.map(\.layer) + m.layers.filter { $0 is Block }
        #expect(all.allSatisfy { times[ObjectIdentifier($0)].map { $0 >= 0 } ?? false })
        #expect(times.count == Set(all.map(ObjectIdentifier.init)).count)
        for case let block as Block in m.layers {
            let inner = block.sequences.flatMap(\.layers).reduce(0) { $0 + times[ObjectIdentifier($1)]! }
            #expect(times[ObjectIdentifier(block)]! >= inner)
        }
        let after = x.withUnsafeBufferPointer { m.predict($0.baseAddress!, batch: 2, logits: true) }
        #expect(before == after)
        let table = m.summary(times: times)
        #expect(table.contains("ms") && table.contains("forward:") && table.contains("body.3 conv(8,3,pad=1)"))
        #expect(throws: CNNError.self) { try m.layerTimes(batch: 0, rounds: 1) }
        #expect(throws: CNNError.self) { try m.layerTimes(batch: 1, rounds: 0) }
    }

    @Test(arguments: [
        ("input(3,8,8) residual[conv(4,3,pad=1)] flatten dense(2)", "must have one shape to be added (a body that changes the shape needs a shortcut"),
        ("input(3,8,8) residual[conv(4,3,pad=1) | conv(4,1,stride=2)] flatten dense(2)", "the body's output [4, 8, 8] and the shortcut's output [4, 4, 4]"),
        ("input(3,8,8) concat[conv(4,3) | conv(4,1)] flatten dense(2)", "needs images of one height and width"),
        ("input(3,8,8) concat[conv(4,1,stride=2) | ] flatten dense(2)", "an empty branch passes the input"),
    ])
    func blockShapeErrors(_ text: String, _ expected: String) {
        do {
            _ = try Model(architecture: Architecture(parsing: text), seed: 1)
            Issue.record("built without error: \(text)")
        } catch let e as CNNError {
            #expect(e.message.contains(expected), "\(e.message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test(arguments: [
        ("", "empty"),
        ("input(3,8,8) residual[conv(3,1) flatten dense(2)", "residual[ has no closing ']'"),
        ("input(3,8,8) residual conv(3,1) flatten dense(2)", "residual needs a block"),
        ("input(3,8,8) conv(3,1)[relu] flatten dense(2)", "takes no block"),
        ("input(3,8,8) relu | relu flatten dense(2)", "unexpected '|' outside a block"),
        ("input(3,8,8) residual[conv(3,1) | conv(3,1) | conv(3,1)] flatten dense(2)", "at most one '|'"),
        ("input(3,8,8) concat[conv(3,1)] flatten dense(2)", "at least two branches"),
        ("input(3,8,8) repeat(0)[relu] flatten dense(2)", "n must be"),
        ("input(3,8,8) repeat(1000)[relu relu] flatten dense(2)", "more than 1024 layers once repeated"),
        ("input(3,8,8) " + String(repeating: "residual[", count: 17) + "relu" + String(repeating: "]", count: 17) + " flatten dense(2)", "nested more than 16 deep"),
        ("input(3,8,8) residual[] flatten dense(2)", "needs layers in its body"),
        ("conv(32,3) dense(10)", "expected input(C,H,W) as the first layer"),
        ("input(1,28) dense(10)", "expected input(C,H,W)"),
        ("input(1,28,28) convv(3,3) flatten dense(10)", "unknown layer 'convv'"),
        ("input(1,28,28) conv(32,3,pad=x) flatten dense(10)", "pad must be"),
        ("input(1,28,28) conv(32) flatten dense(10)", "missing argument 'kernel'"),
        ("input(1,28,28) conv(32,3,foo=1) flatten dense(10)", "unknown argument 'foo'"),
        ("input(1,28,28) conv(32,3 flatten dense(10)", "no closing ')'"),
        ("input(1,28,28) dropout(1.5) flatten dense(10)", "p must be"),
        ("input(1,28,28) conv(0,3) flatten dense(10)", "out must be"),
        ("input(1,28,28) relu(3) flatten dense(10)", "takes no positional arguments"),
        ("input(1,28,28) @ dense(10)", "unexpected '@'"),
        ("input(1,28,28)\n  conv(32,99999999999999999999) flatten dense(10)", "line 2 column 3"),
        ("input(4,8,8) conv(6,3,groups=4) flatten dense(2)", "out (6) must be a multiple of groups (4)"),
        ("input(4,8,8) conv(4,3,groups=0) flatten dense(2)", "groups must be"),
        ("input(4,8,8) se(2,gate=relu) flatten dense(2)", "gate must be one of sigmoid, hardsigmoid, not 'relu'"),
        ("input(4,8,8) se(2,act=magic) flatten dense(2)", "act must be one of"),
        ("input(1,8,8) maxpool(3,pad=2) flatten dense(2)", "pad (2) must be at most half the kernel (3)"),
        ("input(1,8,8) avgpool(2,ceil=true) flatten dense(2)", "unknown argument 'ceil'"),
        ("input(1,8,8) avgpool(3,pad=1,count_include_pad=some) flatten dense(2)", "count_include_pad"),
        ("input(1,8,8) maxpool(3,pad=1,count_include_pad=false) flatten dense(2)", "unknown argument 'count_include_pad'"),
    ])
    func parseErrors(_ text: String, _ expected: String) {
        do {
            _ = try Architecture(parsing: text)
            Issue.record("parsed without error: \(text)")
        } catch let e as CNNError {
            #expect(e.kind == .parse)
            #expect(e.message.contains(expected), "\(e.message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test(arguments: [
        ("input(1,28,28) dense(10)", "add flatten"),
        ("input(1,4,4) conv(2,7) flatten dense(2)", "larger than the padded input"),
        ("input(1,4,4) maxpool(5) flatten dense(2)", "larger than the input"),
        ("input(1,4,4) conv(2,3)", "must end with a vector"),
        ("input(1,4,4) flatten conv(2,1) dense(2)", "needs an image input"),
        ("input(65536,65536,65536) flatten dense(2)", "has more than"),
        ("input(1,4096,4096) conv(4096,3,pad=1) flatten dense(2)", "values per sample"),
        ("input(64,1024,1024) conv(8,5,pad=2) flatten dense(2)", "im2col matrix"),
        ("input(1,1,65536) flatten dense(65536)", "too many weights"),
        ("input(1,1,1) conv(65536,65535,pad=32767) flatten dense(2)", "too many weights"),
        ("input(6,8,8) conv(4,3,groups=4) flatten dense(2)", "6 channels are not a multiple of groups (4)"),
    ])
    func shapeErrors(_ text: String, _ expected: String) {
        do {
            _ = try Model(architecture: Architecture(parsing: text), seed: 1)
            Issue.record("built without error: \(text)")
        } catch let e as CNNError {
            #expect(e.message.contains(expected), "\(e.message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func initialization() throws {
        let m = try Model(architecture: Architecture(parsing: "input(1,1,400) flatten dense(300) relu dense(200) tanh dense(10)"), seed: 3)
        func std(_ p: Parameter) -> Double {
            let v = p.value.array.map(Double.init)
            let mean = v.reduce(0, +) / Double(v.count)
            return (v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(v.count)).squareRoot()
        }
        let he = std(m.namedParameters[0].parameter), glorot = std(m.namedParameters[2].parameter)
        #expect(abs(he - (2.0 / 400).squareRoot()) < 0.003)                 // He: followed by relu
        #expect(abs(glorot - (2.0 / (300 + 200)).squareRoot()) < 0.003)     // Glorot uniform: var = 2/(in+out)
        #expect(m.namedParameters[1].parameter.value.array.allSatisfy { $0 == 0 })
        let again = try Model(architecture: m.architecture, seed: 3)
        #expect(again.namedParameters[0].parameter.value.array == m.namedParameters[0].parameter.value.array)
    }
}

let CNN_referenceNetworkText = referenceNetwork
