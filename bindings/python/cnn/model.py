"""Models: create, train, evaluate, predict, save and load."""
import ctypes
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._handle import Handle, free_model
from ._lib import check, lib
from .dataset import Dataset
from .history import History
from .training import _LOSSES, _OPTIMIZERS, _SCHEDULES, Trainer, _Run, _training_data, train_defaults  # noqa: F401

class _Native(Handle):
    _free = staticmethod(free_model)
    _kind = "model"


def _text(fn, native, *args):
    native = native.pointer()
    out = ctypes.c_char_p()
    check(fn(native, *args, ctypes.byref(out)))
    return out.value.decode("utf-8", "replace")


class Model:
    """A network described by the architecture language, e.g.
    ``Model("input(1,28,28) conv(32,3,pad=1) relu maxpool(2) flatten dense(10)", seed=1)``."""

    def __init__(self, architecture: str, seed: int = 1) -> None:
        out = ctypes.c_void_p()
        check(lib.cnn_model_create(str(architecture).encode(), int(seed), ctypes.byref(out)))
        self._native = _Native(out.value)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], allow_non_finite: bool = False) -> "Model":
        """Loads a model file (safetensors), or imports an ONNX model (a path ending in ``.onnx``:
        what ``torch.onnx.export`` or ``export_onnx`` writes). A tensor holding NaN or infinity
        raises BadFormatError naming it, unless ``allow_non_finite``."""
        out = ctypes.c_void_p()
        check(lib.cnn_model_load_flags(os.fsencode(path), 1 if allow_non_finite else 0, ctypes.byref(out)))
        model = cls.__new__(cls)
        model._native = _Native(out.value)
        return model

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Saves the model as safetensors, atomically (also allowed from fit's epoch-end callback)."""
        check(lib.cnn_model_save(self._native.pointer(), os.fsencode(path)))

    def new_head(self, classes: int, seed: int = 1) -> "Model":
        """Fine-tuning: a new model with the last layer (a dense layer) replaced by a new one for
        ``classes`` outputs, initialized from ``seed``; every other tensor, the normalization and
        the image fit are kept. Train it with ``freeze_until`` to keep the layers before."""
        out = ctypes.c_void_p()
        check(lib.cnn_model_new_head(self._native.pointer(), int(classes), int(seed), ctypes.byref(out)))
        model = Model.__new__(Model)
        model._native = _Native(out.value)
        return model

    def export_onnx(self, path: Union[str, os.PathLike]) -> None:
        """Writes the model as ONNX (opset 17), atomically: input ``pixels`` (batch, C, H, W) in
        [0, 1], as ``predict`` takes it; outputs ``logits`` and ``probabilities``."""
        check(lib.cnn_model_export_onnx(self._native.pointer(), os.fsencode(path)))

    def close(self):
        """Frees the model now (later uses raise ValueError)."""
        self._native.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- properties ----

    # The architecture never changes: its shapes are asked of the library once and kept, which
    # saves two calls per prediction.
    @property
    def input_shape(self):
        """(C, H, W) of one image."""
        native = self._native.pointer()
        if getattr(self, "_input_shape", None) is None:
            c, h, w = ctypes.c_int32(), ctypes.c_int32(), ctypes.c_int32()
            check(lib.cnn_model_input_shape(native, ctypes.byref(c), ctypes.byref(h), ctypes.byref(w)))
            self._input_shape = (c.value, h.value, w.value)
        return self._input_shape

    @property
    def num_classes(self):
        native = self._native.pointer()
        if getattr(self, "_num_classes", None) is None:
            k = ctypes.c_int32()
            check(lib.cnn_model_num_classes(native, ctypes.byref(k)))
            self._num_classes = k.value
        return self._num_classes

    @property
    def classes(self):
        """Class names in output order."""
        return [_text(lib.cnn_model_class_name, self._native, i) for i in range(self.num_classes)]

    @property
    def parameter_count(self):
        n = ctypes.c_int64()
        check(lib.cnn_model_parameter_count(self._native.pointer(), ctypes.byref(n)))
        return n.value

    @property
    def architecture(self):
        return _text(lib.cnn_model_architecture, self._native)

    def summary(self, time=False, batch=1, rounds=100):
        """A table of layers with output shapes, parameters and FLOPs. With time=True, also each
        layer's forward time per prediction (ms) and its share, over `rounds` predictions of `batch`
        random images on the threads set_num_threads set (cnn summary --time)."""
        if not time:
            return _text(lib.cnn_model_summary, self._native)
        for name, value, most in (("batch", batch, 4096), ("rounds", rounds, 1000000)):
            if not isinstance(value, int) or not 1 <= value <= most:
                raise _lib.errors.InvalidArgumentError("summary: %s must be an integer from 1 to %d, not %r" % (name, most, value), 1)
        return _text(lib.cnn_model_summary_timed, self._native, batch, rounds)

    def __repr__(self):
        if self._native.closed:
            return "Model(closed)"
        return "Model(%r)" % self.architecture

    # ---- training ----

    def fit(self, x: Union[Dataset, np.ndarray], y: Optional[np.ndarray] = None, *, epochs: Optional[int] = None,
            batch_size: Optional[int] = None, validation_data: Union[Dataset, Tuple[np.ndarray, np.ndarray], None] = None,
            validation_split: Optional[float] = None, validation: Optional[Dataset] = None,
            callback: Optional[Callable[[dict], Any]] = None, verbose: int = 1, classes: Optional[Sequence[str]] = None,
            **settings: Any) -> History:
        """Trains the model and returns a History (one dict per epoch).

        Args:
            x: a Dataset, or images as a numpy array: (N, C, H, W) float32 in [0, 1], or uint8
                (N, H, W, C) / (N, H, W).
            y: the labels (N,) when ``x`` is an array; None when it is a Dataset.
            epochs: epochs to train (default 1).
            batch_size: images per update (default 64).
            validation_data: a Dataset or an (x, y) pair, evaluated after every epoch.
            validation_split: hold out this fraction of the training data (seeded by ``seed``) for
                validation, when there is no ``validation_data``.
            validation: the same as ``validation_data`` (a Dataset).
            callback: ``callback(progress)`` is called after every batch with a dict (epoch, epochs,
                batch, batches, loss, accuracy, images_per_second, learning_rate) and after every
                epoch with ``epoch_end=True`` and, with validation, ``val_loss``, ``val_accuracy``
                and ``best`` (the monitored metric is the best so far). Returning True stops
                training (fit returns the history so far). The model may be saved from the
                epoch-end call.
            verbose: 0 silent, 1 a line per epoch (a tqdm bar on a terminal when tqdm is installed).
            classes: class names for array data (default: "0", "1", ...).
            **settings: the training settings, each defaulting to the library's value
                (``cnn.train_defaults()``): optimizer ("sgd", "adam", "adamw", "rmsprop"), lr,
                momentum, nesterov, weight_decay, decay_bias_and_norm (False: no weight decay on
                biases and batch norm), beta1, beta2, eps, alpha, schedule ("constant",
                "step", "cosine"), step_epochs, gamma, warmup_epochs, loss ("cross-entropy",
                "mse"), label_smoothing, seed, threads, flip, translate, brightness, contrast,
                erase (random erasing's probability),
                loader_threads, divergence_factor (a batch loss over this multiple of the first
                stops training with DivergedError; 0: no such bound), allow_extra_outputs (accept
                a model with more outputs than the data has classes), early_stopping (patience in
                epochs; needs validation), monitor ("val_loss" or "val_accuracy"), save_best (a
                path: the model is saved there whenever the monitored metric is the best so far),
                freeze_until (fine-tuning: only layers from this index on train; those before run
                as at inference and get no gradients or updates), distributed (True: data-parallel
                training over MPI, run under ``mpirun -np N python script.py``: every rank calls fit
                with the same model, data and settings, batch_size is the global batch; see
                ``cnn.launcher_rank()``), mpi_comm (with distributed: a communicator of the
                program's, ``MPI._handleof(comm)`` with mpi4py; default MPI_COMM_WORLD),
                recompute_blocks (True: less memory for more time, the same results: residual
                and concat blocks keep nothing for backward and run forward again first).

        Ctrl-C stops at the end of the batch: the model keeps its last completed update and
        KeyboardInterrupt is raised. A NaN or infinite loss, gradient or weight raises
        DivergedError and leaves the model with weights whose loss was finite.
        """
        train, val = _training_data(x, y, classes, validation_data if validation_data is not None else validation,
                                    validation_split, settings.get("seed"))
        run = _Run(self, train, val, dict(settings, epochs=epochs, batch_size=batch_size), callback, verbose)
        return run.call(lambda p: lib.cnn_model_train(self._native.pointer(), train._for(self), p))

    def trainer(self, data: Union[Dataset, np.ndarray], y: Optional[np.ndarray] = None, **kwargs: Any) -> "Trainer":
        """A Trainer: the run of ``fit(data, y, **kwargs)`` trained in steps (``run(epochs)``),
        checkpointed and resumed exactly."""
        return Trainer(self, data, y, **kwargs)

    # ---- evaluation and inference ----

    def evaluate(self, data: Union[Dataset, np.ndarray], y: Optional[np.ndarray] = None, *,
                 map_classes: bool = False) -> Dict[str, Any]:
        """Loss and accuracy on ``data`` (a Dataset, or images with labels ``y``):
        {'loss', 'accuracy', 'count', 'confusion'}, confusion[true, predicted] as an ndarray.

        A dataset that names its classes must name them as the model does, in its order
        (ShapeMismatchError naming both lists); ``map_classes=True`` matches them by name."""
        if not isinstance(data, Dataset):
            data = Dataset.from_numpy(data, y)
        if map_classes:
            data = data.map_classes(self)
        k = self.num_classes
        result = _lib.Evaluation()
        confusion = np.zeros((k, k), dtype=np.int32)
        check(lib.cnn_model_evaluate(self._native.pointer(), data._for(self), ctypes.byref(result), confusion.ctypes.data_as(_lib.c_int32_p)))
        return {"loss": result.loss, "accuracy": result.accuracy, "count": result.count, "confusion": confusion}

    def _images(self, x):
        """Checks and converts an image batch once; returns (array, is_uint8)."""
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        c, h, w = self.input_shape
        if x.dtype == np.uint8:
            if x.ndim == 3 and c == 1 and x.shape[1:] == (h, w):
                x = x[..., None]
            elif x.ndim == 3 and x.shape == (h, w, c):
                x = x[None]
            if x.ndim != 4 or x.shape[1:] != (h, w, c):
                raise ValueError("uint8 images must be (N, %d, %d, %d) (NHWC), not %s" % (h, w, c, x.shape))
            return np.ascontiguousarray(x), True
        if x.ndim == 3:
            x = x[None]
        if x.ndim == 4 and x.shape[1:] == (h, w, c) and x.shape[1:] != (c, h, w):
            raise ValueError("float images must be (N, C, H, W) = (N, %d, %d, %d); these are (N, H, W, C) %s: "
                             "use x.transpose(0, 3, 1, 2), or pass uint8 (N, H, W, C)" % (c, h, w, x.shape))
        if x.ndim != 4 or x.shape[1:] != (c, h, w):
            raise ValueError("images must be (N, %d, %d, %d) float32 (NCHW, values in [0, 1]) or uint8 NHWC, not %s %s"
                             % (c, h, w, x.dtype, x.shape))
        if x.dtype.kind not in "fiu":
            raise TypeError("images must be numbers, not %s" % x.dtype)
        return np.ascontiguousarray(x, dtype=np.float32), False

    def predict(self, x: np.ndarray, logits: bool = False) -> np.ndarray:
        """Class probabilities (N, classes) of images x: (N, C, H, W) float32 in [0, 1] or uint8
        (N, H, W, C). A contiguous float32 array is passed without a copy."""
        x, is_uint8 = self._images(x)
        n, k = x.shape[0], self.num_classes
        if n == 0:
            return np.zeros((0, k), dtype=np.float32)
        out = np.empty((n, k), dtype=np.float32)
        if is_uint8:
            if logits:
                raise ValueError("logits=True takes float32 images")
            check(lib.cnn_model_predict_uint8(self._native.pointer(), x.ctypes.data_as(_lib.c_uint8_p), n, out.ctypes.data_as(_lib.c_float_p)))
        else:
            fn = lib.cnn_model_predict_logits if logits else lib.cnn_model_predict
            check(fn(self._native.pointer(), x.ctypes.data_as(_lib.c_float_p), n, out.ctypes.data_as(_lib.c_float_p)))
        return out

    def predict_image(self, images: Any, top: Optional[int] = None) -> Any:
        """Probabilities of decoded images of any size: a numpy uint8 array (H, W) gray,
        (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA, a PIL image, or a list of them. Each is brought
        to the input as the model's training images were (its fit: crop, stretch or pad; the same
        resampling; gray <-> RGB) and normalized like them. With ``top=k``: (class name,
        probability) pairs per image, most likely first."""
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        out = np.empty((len(items), self.num_classes), dtype=np.float32)
        for i, item in enumerate(items):
            if not isinstance(item, np.ndarray) and hasattr(item, "convert") and hasattr(item, "mode"):
                item = item.convert("L" if item.mode in ("L", "1", "I", "I;16", "F") else "RGB")  # PIL
            a = np.asarray(item)
            if a.dtype != np.uint8:
                raise TypeError("predict_image takes uint8 pixels (H, W[, C]), not %s: use predict for float images" % a.dtype)
            if a.ndim == 2:
                a = a[..., None]
            if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
                raise ValueError("an image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8, not %s" % (a.shape,))
            a = np.ascontiguousarray(a)
            h, w, c = a.shape
            check(lib.cnn_model_predict_image(self._native.pointer(), a.ctypes.data_as(_lib.c_uint8_p), h, w, c, 0,
                                              out[i].ctypes.data_as(_lib.c_float_p)))
        if top is None:
            return out[0] if single else out
        names = self.classes
        ranked = [[(names[j], float(row[j])) for j in top_k(row[None], top)[0][0]] for row in out]
        return ranked[0] if single else ranked

    def predict_jpeg(self, images, top=None):
        """Probabilities of JPEG images, given as file paths or bytes. With ``top=k``: for each
        image a list of k (class name, probability) pairs, most likely first."""
        single = isinstance(images, (str, bytes, os.PathLike))
        items = [images] if single else list(images)
        k = self.num_classes
        out = np.empty((len(items), k), dtype=np.float32)
        for i, item in enumerate(items):
            row = out[i].ctypes.data_as(_lib.c_float_p)
            if isinstance(item, (bytes, bytearray, memoryview)):
                data = np.frombuffer(bytes(item), dtype=np.uint8)
                if len(data) == 0:
                    raise _lib.errors.InvalidArgumentError("JPEG data is empty", 1)
                check(lib.cnn_model_predict_jpeg(self._native.pointer(), data.ctypes.data_as(_lib.c_uint8_p), len(data), None, row))
            else:
                check(lib.cnn_model_predict_jpeg_file(self._native.pointer(), os.fsencode(item), None, row))
        if top is None:
            return out[0] if single else out
        names = self.classes
        ranked = [[(names[j], float(row[j])) for j in top_k(row[None], top)[0][0]] for row in out]
        return ranked[0] if single else ranked


def top_k(scores, k):
    """(indices, values) of the k highest scores of each row of a (N, classes) array."""
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError("scores must be (N, classes)")
    n, c = scores.shape
    indices = np.empty((n, k), dtype=np.int32)
    values = np.empty((n, k), dtype=np.float32)
    check(lib.cnn_top_k(scores.ctypes.data_as(_lib.c_float_p), n, c, int(k), indices.ctypes.data_as(_lib.c_int32_p),
                        values.ctypes.data_as(_lib.c_float_p)))
    return indices, values
