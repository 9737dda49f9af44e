/// Every failure of the engine is a `CNNError`: a kind (which maps one to one onto the C API's
/// status codes, by name: CNNExports' `status(of:)`) and a message that says what was wrong and where.
public struct CNNError: Error, CustomStringConvertible, Equatable {
    public enum Kind: Sendable, CaseIterable {
        case invalidArgument
        case parse
        case io
        case badFormat
        case shapeMismatch
        case outOfMemory
        case diverged
        case cancelled
        case busy
        case `internal`
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
