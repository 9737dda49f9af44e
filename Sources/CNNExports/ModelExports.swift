import CNN
import CNNABI

// export: cnn_model_create
public func exportModelCreate(_ architecture: UnsafePointer<CChar>?, _ seed: UInt64,
                              _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cnn_status {
    guarded("cnn_model_create") {
        let text = try string(architecture, "architecture")
        let out = try required(out, "model")
        out.pointee = Registry.add(ModelHandle(try Model(architecture: Architecture(parsing: text), seed: seed)))
    }
}

// export: cnn_model_load
public func exportModelLoad(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cnn_status {
    guarded("cnn_model_load") {
        let path = try string(path, "path")
        let out = try required(out, "model")
        out.pointee = Registry.add(ModelHandle(try Model.load(from: path)))
    }
}

// export: cnn_model_load_flags
public func exportModelLoadFlags(_ path: UnsafePointer<CChar>?, _ flags: UInt32, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cnn_status {
    guarded("cnn_model_load_flags") {
        let path = try string(path, "path")
        let out = try required(out, "model")
        guard flags & ~UInt32(CNN_LOAD_ALLOW_NON_FINITE) == 0 else { throw invalid("flags has unknown bits: \(flags)") }
        let allow = flags & UInt32(CNN_LOAD_ALLOW_NON_FINITE) != 0
        out.pointee = Registry.add(ModelHandle(try Model.load(from: path, allowNonFinite: allow)))
    }
}

// export: cnn_model_save
public func exportModelSave(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> cnn_status {
    guarded("cnn_model_save") {
        let handle = try Registry.model(model)
        let path = try string(path, "path")
        try handle.reading { try $0.save(to: path) }
    }
}

// export: cnn_model_new_head
public func exportModelNewHead(_ model: OpaquePointer?, _ classes: Int32, _ seed: UInt64,
                               _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cnn_status {
    guarded("cnn_model_new_head") {
        let handle = try Registry.model(model)
        let out = try required(out, "out")
        let m = try handle.reading { try $0.replacingHead(classes: Int(classes), seed: seed) }
        out.pointee = Registry.add(ModelHandle(m))
    }
}

// export: cnn_model_export_onnx
public func exportModelExportONNX(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> cnn_status {
    guarded("cnn_model_export_onnx") {
        let handle = try Registry.model(model)
        let path = try string(path, "path")
        try handle.reading { try $0.exportONNX(to: path) }
    }
}

// export: cnn_model_free
public func exportModelFree(_ model: OpaquePointer?) { Registry.remove(model) }

// export: cnn_model_input_shape
public func exportModelInputShape(_ model: OpaquePointer?, _ c: UnsafeMutablePointer<Int32>?,
                                  _ h: UnsafeMutablePointer<Int32>?, _ w: UnsafeMutablePointer<Int32>?) -> cnn_status {
    guarded("cnn_model_input_shape") {
        let s = try Registry.model(model).model.inputShape
        c?.pointee = Int32(s.c)
        h?.pointee = Int32(s.h)
        w?.pointee = Int32(s.w)
    }
}

// export: cnn_model_num_classes
public func exportModelNumClasses(_ model: OpaquePointer?, _ classes: UnsafeMutablePointer<Int32>?) -> cnn_status {
    guarded("cnn_model_num_classes") {
        let m = try Registry.model(model).model
        try required(classes, "num_classes").pointee = Int32(m.numClasses)
    }
}

// export: cnn_model_class_name
public func exportModelClassName(_ model: OpaquePointer?, _ index: Int32,
                                 _ name: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> cnn_status {
    guarded("cnn_model_class_name") {
        let handle = try Registry.model(model)
        let name = try required(name, "name")
        name.pointee = try handle.className(Int(index))
    }
}

// export: cnn_model_parameter_count
public func exportModelParameterCount(_ model: OpaquePointer?, _ count: UnsafeMutablePointer<Int64>?) -> cnn_status {
    guarded("cnn_model_parameter_count") {
        let m = try Registry.model(model).model
        try required(count, "count").pointee = Int64(m.parameterCount)
    }
}

// export: cnn_model_architecture
public func exportModelArchitecture(_ model: OpaquePointer?, _ text: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> cnn_status {
    guarded("cnn_model_architecture") {
        let handle = try Registry.model(model)
        let text = try required(text, "text")
        text.pointee = try handle.string("architecture") { $0.architecture.text }
    }
}

// export: cnn_model_summary_timed
public func exportModelSummaryTimed(_ model: OpaquePointer?, _ batch: Int32, _ rounds: Int32,
                                    _ text: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> cnn_status {
    guarded("cnn_model_summary_timed") {
        let handle = try Registry.model(model)
        let text = try required(text, "text")
        // Measured on a private copy (the clock is the copy's), as predictions run.
        let table = try handle.shared { m in m.architecture.text + "\n" + (try m.timedSummary(batch: Int(batch), rounds: Int(rounds))) }
        text.pointee = try handle.replaceString("timed summary", table)
    }
}

// export: cnn_model_summary
public func exportModelSummary(_ model: OpaquePointer?, _ text: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> cnn_status {
    guarded("cnn_model_summary") {
        let handle = try Registry.model(model)
        let text = try required(text, "text")
        text.pointee = try handle.string("summary") { $0.architecture.text + "\n" + $0.summary }
    }
}
