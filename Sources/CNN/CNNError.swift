/// Every failure of the engine is a `CNNError`: a kind (which maps one to one onto the C API's
/// status codes) and a message that says what was wrong and where.
public struct CNNError: Error, CustomStringConvertible, Equatable {
    public enum Kind: Int32, Sendable {
        case invalidArgument = 1
        case parse = 2
        case io = 3
        case badFormat = 4
        case shapeMismatch = 5
        case outOfMemory = 6
        case diverged = 7
        case cancelled = 8
        case busy = 9
        case `internal` = 10
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
