/// The meaning of labels: a dataset's label i is the model's class i. Checking that is how a model
/// is never evaluated or trained on data whose classes mean something else.
extension Dataset {
    /// The names a dataset has when nothing names its classes (IDX without classes.txt, arrays).
    public static func numberedNames(_ count: Int) -> [String] { (0..<count).map { String($0) } }

    /// Whether the class names say something (folders, classes.txt, names set by the caller)
    /// rather than being the numbers "0", "1", ... of unnamed data.
    public var namesItsClasses: Bool { classNames != Dataset.numberedNames(numClasses) }

    /// Checks that this data's labels mean the model's classes: no more classes than the model
    /// outputs, and, when both the data and the model name their classes, label i's name is the
    /// model's class i (a data set may lack the model's last classes, never have them in another
    /// order). Where one side has only numbers there is nothing to compare but the count.
    /// `what` names the data in the message ("validation data", a path).
    public func checkClasses(of model: Model, what: String = "the data") throws {
        try checkClasses(against: model.classNames, what: what)
    }

    /// As `checkClasses(of:what:)`, for a model whose classes are `modelNames`.
    public func checkClasses(against modelNames: [String], what: String = "the data") throws {
        guard numClasses <= modelNames.count else {
            throw CNNError(.shapeMismatch, "\(what) has \(numClasses) classes \(Dataset.list(classNames)), the model outputs \(modelNames.count) \(Dataset.list(modelNames))")
        }
        if namesItsClasses, modelNames != Dataset.numberedNames(modelNames.count), Array(modelNames.prefix(numClasses)) != classNames {
            throw CNNError(.shapeMismatch, "\(what) names its classes \(Dataset.list(classNames)), the model's are \(Dataset.list(modelNames)): label i must mean the model's class i (map the data's classes to the model's by name with --map-classes, cnn_dataset_map_classes or Dataset.map_classes)")
        }
    }

    /// This data with its labels renumbered to the model's classes of the same names (and the
    /// model's names): evaluation of a test folder that lacks some classes, or lists them in
    /// another order. Every class of the data must be one of the model's.
    public func mappingClasses(to modelNames: [String]) throws -> Dataset {
        var index: [String: Int32] = [:]
        for (i, name) in modelNames.enumerated() where index[name] == nil { index[name] = Int32(i) }
        var table = [Int32](repeating: 0, count: numClasses)
        var missing: [String] = []
        for (i, name) in classNames.enumerated() {
            if let j = index[name] { table[i] = j } else { missing.append(name) }
        }
        guard missing.isEmpty else {
            throw CNNError(.shapeMismatch, "the data's classes \(Dataset.list(missing)) are not among the model's \(Dataset.list(modelNames))")
        }
        let d = try relabeled(labels.map { table[Int($0)] }, classNames: modelNames)
        return d
    }

    /// Short lists in full; long ones as their first names and a count.
    static func list(_ names: [String]) -> String {
        let shown = names.prefix(12).map { JSON.quote($0) }.joined(separator: ", ")
        return "[" + shown + (names.count > 12 ? ", ... (\(names.count) in all)" : "") + "]"
    }
}
