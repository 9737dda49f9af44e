"""Datasets: labelled images held by libcnn.so (as bytes when they came as bytes)."""
import ctypes
import os
from typing import List, Optional

import numpy as np

from . import _lib
from ._handle import Handle, free_dataset
from ._lib import check, lib

_FITS = {"crop": 0, "stretch": 1, "pad": 2}


def _new(fn, *args):
    out = ctypes.c_void_p()
    check(fn(*args, ctypes.byref(out)))
    return _Native(out.value)


class _Native(Handle):
    _free = staticmethod(free_dataset)
    _kind = "dataset"


class Dataset:
    """Labelled images: ``from_numpy``, ``from_idx`` or ``from_folder``.

    A folder dataset opened without a shape takes its image size from the model that uses it
    (the model's ``input(C,H,W)``); each size is loaded once and kept.
    """

    def __init__(self, native=None, folder=None):
        self._native = native
        self._folder = folder  # (root, options) for folders loaded at the model's input size
        self._by_shape = {}

    # ---- constructors ----

    @classmethod
    def from_numpy(cls, x, y, classes=None):
        """x: (N, C, H, W) float32 in [0, 1], or uint8 (N, H, W, C) / (N, H, W); y: (N,) integers.
        The data is copied. ``classes``: names (their count is the number of classes)."""
        x = np.asarray(x)
        y = np.ascontiguousarray(np.asarray(y), dtype=np.int32)
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError("y must be a vector with one label per image: x has %d images, y has shape %s" % (len(x), y.shape))
        if len(y) == 0:
            raise ValueError("the dataset is empty")
        num_classes = len(classes) if classes is not None else int(y.max()) + 1
        labels = y.ctypes.data_as(_lib.c_int32_p)
        if x.dtype == np.uint8:
            if x.ndim == 3:
                x = x[..., None]
            if x.ndim != 4:
                raise ValueError("uint8 images must be (N, H, W, C) or (N, H, W), not %s" % (x.shape,))
            x = np.ascontiguousarray(x)
            n, h, w, c = x.shape
            native = _new(lib.cnn_dataset_from_uint8, x.ctypes.data_as(_lib.c_uint8_p), labels, n, c, h, w, num_classes)
        else:
            if x.ndim != 4:
                raise ValueError("float images must be (N, C, H, W), not %s" % (x.shape,))
            if x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
                raise ValueError("float images must be (N, C, H, W); these look like (N, H, W, C) %s: use "
                                 "x.transpose(0, 3, 1, 2), or pass uint8 (N, H, W, C)" % (x.shape,))
            x = np.ascontiguousarray(x, dtype=np.float32)
            n, c, h, w = x.shape
            native = _new(lib.cnn_dataset_from_float, x.ctypes.data_as(_lib.c_float_p), labels, n, c, h, w, num_classes)
        d = cls(native)
        if classes is not None:
            d._set_classes(classes)
        return d

    @classmethod
    def from_idx(cls, images, labels=None):
        """IDX files (MNIST / Fashion-MNIST), plain or gzip; labels found beside the images by default."""
        return cls(_new(lib.cnn_dataset_from_idx, os.fsencode(images), os.fsencode(labels) if labels else None))

    @classmethod
    def from_folder(cls, root, shape=None, fit="crop", strict=False, exif=True, max_pixels=None,
                    max_scans=None, cache_bytes=None):
        """``root/<class name>/<image>.jpg``. ``shape`` (C, H, W) loads now; without it the images
        are loaded at the input size of the model that uses the dataset. Files that cannot be decoded
        are skipped and listed in ``skipped`` (``strict=True``: an error)."""
        if fit not in _FITS:
            raise ValueError("fit must be one of %s, not %r" % (sorted(_FITS), fit))
        options = _lib.FolderOptions()
        lib.cnn_folder_options_default(ctypes.byref(options))
        options.fit = _FITS[fit]
        options.strict = int(bool(strict))
        options.apply_exif_orientation = int(bool(exif))
        if max_pixels is not None:
            options.max_pixels = int(max_pixels)
        if max_scans is not None:
            options.max_scans = int(max_scans)
        if cache_bytes is not None:
            options.cache_bytes = int(cache_bytes)
        d = cls(folder=(os.fsencode(root), options))
        if shape is not None:
            d._native = d._load(tuple(shape))
        elif not os.path.isdir(root):
            raise _lib.errors.CNNIOError("%s: not a directory" % root, 3)
        return d

    def _load(self, shape):
        if len(shape) != 3:
            raise ValueError("shape must be (channels, height, width), not %s" % (shape,))
        if shape not in self._by_shape:
            root, options = self._folder
            self._by_shape[shape] = _new(lib.cnn_dataset_from_folder, root, *shape, ctypes.byref(options))
        return self._by_shape[shape]

    def _for(self, model):
        """The native dataset to use with ``model``."""
        if self._native is not None:
            return self._native.pointer()
        return self._load(model.input_shape).pointer()

    def _any(self):
        if self._native is not None:
            return self._native.pointer()
        if self._by_shape:
            return next(iter(self._by_shape.values())).pointer()
        raise ValueError("this folder dataset is loaded at a model's input size: use it with a model first, "
                         "or open it with from_folder(root, shape=(C, H, W))")

    # ---- properties ----

    def _shape(self):
        n, c, h, w, k = (ctypes.c_int32() for _ in range(5))
        check(lib.cnn_dataset_shape(self._any(), *(ctypes.byref(v) for v in (n, c, h, w, k))))
        return n.value, c.value, h.value, w.value, k.value

    def __len__(self) -> int:
        return self._shape()[0]

    def __repr__(self) -> str:
        if self._native is None and not self._by_shape:
            return "Dataset(folder %r, loaded at a model's input size)" % os.fsdecode(self._folder[0])
        n, c, h, w, k = self._shape()
        where = " from %r" % os.fsdecode(self._folder[0]) if self._folder else ""
        names = self.classes
        shown = ", ".join(names[:6]) + (", ... (%d)" % k if k > 6 else "")
        return "Dataset(%d images of %dx%dx%d, %d classes [%s]%s)" % (n, c, h, w, k, shown, where)

    @property
    def classes(self) -> List[str]:
        """The class names, in label order ("0", "1", ... when nothing names them)."""
        native, names = self._any(), []
        for i in range(self.num_classes):
            out = ctypes.c_char_p()
            check(lib.cnn_dataset_class_name(native, i, ctypes.byref(out)))
            names.append(out.value.decode("utf-8", "replace"))
        return names

    def path(self, index: int) -> Optional[str]:
        """The file sample ``index`` was decoded from (folder datasets), else None."""
        out = ctypes.c_char_p()
        check(lib.cnn_dataset_sample_path(self._any(), int(index), ctypes.byref(out)))
        return None if out.value is None else os.fsdecode(out.value)

    @property
    def paths(self) -> Optional[List[str]]:
        """Every sample's file (folder datasets), else None."""
        first = self.path(0)
        return None if first is None else [self.path(i) for i in range(len(self))]

    def map_classes(self, model) -> "Dataset":
        """This data with labels renumbered to the model's classes of the same names (a test set
        that lacks some classes or orders them otherwise)."""
        out = ctypes.c_void_p()
        check(lib.cnn_dataset_map_classes(self._for(model), model._native.pointer(), ctypes.byref(out)))
        return Dataset(_Native(out.value))

    @property
    def shape(self):
        """(N, C, H, W)."""
        return self._shape()[:4]

    @property
    def num_classes(self):
        return self._shape()[4]

    @property
    def skipped(self):
        """Files that could not be loaded: a list of (path, reason)."""
        native = self._any()
        count = ctypes.c_int32()
        check(lib.cnn_dataset_skipped_count(native, ctypes.byref(count)))
        out = []
        for i in range(count.value):
            path, reason = ctypes.c_char_p(), ctypes.c_char_p()
            check(lib.cnn_dataset_skipped_file(native, i, ctypes.byref(path), ctypes.byref(reason)))
            out.append((path.value.decode("utf-8", "replace"), reason.value.decode("utf-8", "replace")))
        return out

    def _set_classes(self, names):
        encoded = [str(n).encode() for n in names]
        array = (ctypes.c_char_p * len(encoded))(*encoded)
        check(lib.cnn_dataset_set_class_names(self._any(), array, len(encoded)))

    def images(self, first=0, count=None):
        """Images first..first+count as a (count, C, H, W) float32 array in [0, 1], and their labels."""
        n, c, h, w, _ = self._shape()
        count = n - first if count is None else count
        x = np.empty((count, c, h, w), dtype=np.float32)
        y = np.empty(count, dtype=np.int32)
        check(lib.cnn_dataset_get(self._any(), first, count, x.ctypes.data_as(_lib.c_float_p), y.ctypes.data_as(_lib.c_int32_p)))
        return x, y

    def split(self, fraction, seed=1):
        """A seeded split: (rest, held-out fraction)."""
        a, b = ctypes.c_void_p(), ctypes.c_void_p()
        check(lib.cnn_dataset_split(self._any(), float(fraction), int(seed), ctypes.byref(a), ctypes.byref(b)))
        return Dataset(_Native(a.value)), Dataset(_Native(b.value))

    def close(self):
        """Frees the data now."""
        if self._native is not None:
            self._native.close()
        for d in self._by_shape.values():
            d.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
