import CNN
import CNNABI

// export: cnn_set_num_threads
public func exportSetNumThreads(_ threads: Int32) -> cnn_status {
    guarded("cnn_set_num_threads") {
        guard threads >= 1, threads <= 256 else { throw invalid("threads must be from 1 to 256, not \(threads)") }
        ThreadPool.setThreads(Int(threads))
    }
}

// export: cnn_get_num_threads
public func exportGetNumThreads() -> Int32 { Int32(ThreadPool.shared.threads) }

// export: cnn_set_memory_limit
public func exportSetMemoryLimit(_ bytes: Int64) -> cnn_status {
    guarded("cnn_set_memory_limit") {
        guard bytes >= 1 << 20 else { throw invalid("the memory limit must be at least 1 MiB (1048576 bytes), not \(bytes)") }
        Memory.limit = Int(bytes)
    }
}

// export: cnn_get_memory_limit
public func exportGetMemoryLimit() -> Int64 { Int64(Memory.limit) }
