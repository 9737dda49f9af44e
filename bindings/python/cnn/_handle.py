"""Ownership of C handles: each is freed exactly once, by close(), the context manager, or a
finalizer when the Python object is collected."""
import ctypes
import weakref

from ._lib import lib


class Handle:
    _free = None  # the cnn_*_free function
    _kind = "object"

    def __init__(self, pointer):
        self._pointer = ctypes.c_void_p(pointer)
        self._finalizer = weakref.finalize(self, type(self)._free, pointer)

    @property
    def _as_parameter_(self):
        return self.pointer()

    def pointer(self):
        """The C handle; ValueError once closed (checked before any call into the library)."""
        if not self._finalizer.alive:
            raise ValueError("this %s is closed" % self._kind)
        return self._pointer

    def close(self):
        """Frees the C object now (later uses raise ValueError). Safe to call twice."""
        self._finalizer()

    @property
    def closed(self):
        return not self._finalizer.alive

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def free_model(pointer):
    lib.cnn_model_free(pointer)


def free_dataset(pointer):
    lib.cnn_dataset_free(pointer)
