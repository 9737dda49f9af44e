"""SwiftCNN for Python: a thin ctypes binding of libcnn.so, with numpy in and out.

    import cnn
    model = cnn.Model("input(1,28,28) conv(32,3,pad=1) relu maxpool(2) flatten dense(10)", seed=1)
    train = cnn.Dataset.from_folder("data/fashion-mnist-jpeg/train")
    history = model.fit(train, epochs=2, lr=0.01, momentum=0.9, validation_split=0.1)
    model.predict_jpeg("shirt.jpg", top=3)          # files or bytes
    model.predict_image(pil_image_or_uint8_array)    # decoded images of any size
"""
from ._lib import VERSION, lib, path as library_path
from .dataset import Dataset
from .errors import (BadFormatError, BusyError, CancelledError, CNNError, CNNIOError, CNNMemoryError, DivergedError,
                     InternalError, InvalidArgumentError, ParseError, ShapeMismatchError)
from .history import History
from .model import Model, top_k
from .training import Trainer, train_defaults

__version__ = "%d.%d.%d" % VERSION


def library_version():
    """The version of the loaded libcnn.so."""
    return lib.cnn_version_string().decode()


def runtime_info():
    """What the library runs on: "kernels: avx512; cpu: avx512; threads: 2". The kernels are the
    best the CPU has (AVX-512, AVX2 + FMA or the x86-64-v2 baseline), capped by CNN_CPU."""
    return lib.cnn_runtime_info().decode()


def launcher_rank():
    """(rank, size) of this process as an MPI launcher (mpirun -np N) started it, from the
    environment it sets; (0, 1) when none did. With fit(..., distributed=True) every rank trains
    the same model: let rank 0 alone print and save."""
    import os
    for rank, size in (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMIX_RANK", "PMIX_SIZE"),
                       ("PMI_RANK", "PMI_SIZE")):
        if rank in os.environ and size in os.environ:
            return int(os.environ[rank]), int(os.environ[size])
    return 0, 1


def set_num_threads(threads):
    """Threads used by the library (1-256); results do not depend on it."""
    from ._lib import check
    check(lib.cnn_set_num_threads(int(threads)))


def get_num_threads():
    return lib.cnn_get_num_threads()


def set_memory_limit(nbytes):
    """The most memory (bytes, at least 1 MiB) one call of the library may allocate; a larger
    request raises CNNMemoryError, checked before anything is allocated."""
    from ._lib import check
    check(lib.cnn_set_memory_limit(int(nbytes)))


def get_memory_limit():
    """The memory limit in force, in bytes (default: CNN_MEMORY_LIMIT, else half the physical memory)."""
    return lib.cnn_get_memory_limit()


__all__ = ["Model", "Dataset", "Trainer", "History", "top_k", "set_num_threads", "get_num_threads", "set_memory_limit",
           "get_memory_limit", "launcher_rank", "library_version", "runtime_info", "train_defaults",
           "library_path", "CNNError", "InvalidArgumentError", "ParseError", "CNNIOError", "BadFormatError",
           "ShapeMismatchError", "CNNMemoryError", "DivergedError", "CancelledError", "BusyError", "InternalError"]
