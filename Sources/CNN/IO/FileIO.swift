#if canImport(Glibc)
import Glibc
#endif
import CZlib

/// File access for the engine, without Foundation. Every read is bounded, every write atomic.
enum FileIO {
    static func errnoText() -> String { String(cString: strerror(errno)) }

    /// The size of a regular file, or an error that says why it cannot be read.
    static func regularFileSize(_ path: String) throws -> Int {
        guard !path.isEmpty else { throw CNNError(.invalidArgument, "empty file path") }
        var st = stat()
        guard stat(path, &st) == 0 else { throw CNNError(.io, "\(path): \(errnoText())") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw CNNError(.io, "\(path): not a regular file") }
        return Int(st.st_size)
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    /// Reads a whole regular file of at most `maxBytes`.
    static func read(_ path: String, maxBytes: Int) throws -> [UInt8] {
        let size = try regularFileSize(path)
        guard size <= maxBytes else {
            throw CNNError(.badFormat, "\(path): file is \(size) bytes, more than the limit of \(maxBytes)")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CNNError(.io, "\(path): \(errnoText())") }
        defer { close(fd) }
        var bytes = try Memory.byteArray(size, for: path)
        var done = 0
        try bytes.withUnsafeMutableBytes { raw in
            while done < size {
                let n = Glibc.read(fd, raw.baseAddress! + done, size - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw CNNError(.io, "\(path): read failed after \(done) of \(size) bytes") }
                done += n
            }
        }
        return bytes
    }

    /// Writes `bytes` to `path` atomically: a temporary file in the same folder is written,
    /// flushed to disk and renamed over the target, so a crash never leaves a half-written file.
    static func writeAtomically(_ path: String, _ chunks: [UnsafeRawBufferPointer]) throws {
        guard !path.isEmpty else { throw CNNError(.invalidArgument, "empty output path") }
        var st = stat()
        if stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
            throw CNNError(.io, "\(path): is a directory")
        }
        var template = Array((path + ".tmp-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw CNNError(.io, "\(path): cannot create a temporary file beside it: \(errnoText()) (the destination is unchanged)") }
        let temp = String(cString: template)
        var ok = false
        defer {
            if !ok { unlink(temp) }
        }
        do {
            var open = true
            defer { if open { close(fd) } }
            for chunk in chunks where chunk.count > 0 {
                var done = 0
                while done < chunk.count {
                    let n = write(fd, chunk.baseAddress! + done, chunk.count - done)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw CNNError(.io, "\(path): write failed: \(errnoText()) (the destination is unchanged)") }
                    done += n
                }
            }
            fchmod(fd, 0o644)
            guard fsync(fd) == 0 else { throw CNNError(.io, "\(path): fsync failed: \(errnoText()) (the destination is unchanged)") }
            open = false
            // Some file systems (NFS) report a failed write only here.
            guard close(fd) == 0 else { throw CNNError(.io, "\(path): close failed: \(errnoText()) (the destination is unchanged)") }
        }
        guard rename(temp, path) == 0 else { throw CNNError(.io, "\(path): rename failed: \(errnoText()) (the destination is unchanged)") }
        ok = true
        // Make the rename itself durable. The new file is complete and in place whatever this says,
        // so a failure here is not reported (it would claim that nothing was saved).
        let dir = directory(of: path)
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let d = String(path[..<slash])
        return d.isEmpty ? "/" : d
    }

    /// A reader for plain or gzip-compressed files (zlib reads plain files transparently).
    final class GzipReader {
        let path: String
        private let file: gzFile

        init(_ path: String) throws {
            _ = try FileIO.regularFileSize(path)
            guard let f = gzopen(path, "rb") else { throw CNNError(.io, "\(path): \(FileIO.errnoText())") }
            self.path = path
            file = f
            gzbuffer(file, 1 << 17)
        }

        deinit { gzclose(file) }

        /// Reads up to `count` bytes into `buffer`; returns how many were read (0 at the end).
        func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
            var done = 0
            while done < count {
                let chunk = UInt32(min(count - done, 1 << 30))
                let n = gzread(file, buffer + done, chunk)
                if n < 0 {
                    var code: Int32 = 0
                    let message = gzerror(file, &code).map { String(cString: $0) } ?? "unknown error"
                    throw CNNError(.badFormat, "\(path): gzip data is corrupt (\(message))")
                }
                if n == 0 { break }
                done += Int(n)
            }
            // A truncated gzip stream reads short without an error code until checked here.
            var code: Int32 = 0
            if let message = gzerror(file, &code), code != Z_OK && code != Z_STREAM_END {
                throw CNNError(.badFormat, "\(path): gzip data is corrupt (\(String(cString: message)))")
            }
            return done
        }

        /// True when zlib reads the file as it is (not gzip-compressed); known once a read has
        /// looked at its first bytes.
        var isPlain: Bool { gzdirect(file) == 1 }

        /// Reads `count` bytes, which a header declared. Memory grows with the data that arrives
        /// (in chunks, doubling up to `count`), never to the declared size before the bytes exist:
        /// a short file is an error after reading what it has.
        func readExactly(_ count: Int, what: String) throws -> [UInt8] {
            try Memory.check(count, for: "\(path): \(what)")
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: min(count, 1 << 16))
            while bytes.count < count {
                if bytes.count == bytes.capacity {
                    let grown = min(count, max(1 << 20, 2 * bytes.capacity))
                    try Memory.ensureAvailable(grown, for: "\(path): \(what)")
                    bytes.reserveCapacity(grown)
                }
                let want = min(chunk.count, count - bytes.count)
                let n = try chunk.withUnsafeMutableBytes { try read(into: $0.baseAddress!, count: want) }
                if n == 0 { break }
                bytes.append(contentsOf: chunk[0..<n])
            }
            guard bytes.count == count else {
                throw CNNError(.badFormat, "\(path): file ends after \(bytes.count) of the \(count) bytes of \(what)")
            }
            return bytes
        }

        func atEnd() throws -> Bool {
            var byte: UInt8 = 0
            return try read(into: &byte, count: 1) == 0
        }
    }
}
