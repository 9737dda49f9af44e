"""Models: create, train, evaluate, predict, save and load."""
import ctypes
import os
import sys
import time

import numpy as np

from . import _lib
from ._handle import Handle, free_model
from ._lib import check, lib
from .dataset import Dataset
from .errors import CancelledError
from .history import History

# The C API's enums by name (CNN_OPTIMIZER_*, CNN_SCHEDULE_*, CNN_LOSS_*; test_api_facts.py checks
# them against include/cnn.h).
_OPTIMIZERS = {"sgd": 0, "rmsprop": 1, "adam": 2, "adamw": 3}
_SCHEDULES = {"constant": 0, "step": 1, "cosine": 2}
_LOSSES = {"cross-entropy": 0, "cross_entropy": 0, "mse": 1}


def train_defaults():
    """The library's training defaults (cnn_train_params_default), as fit's argument names."""
    p = _lib.TrainParams()
    lib.cnn_train_params_default(ctypes.byref(p))
    name = lambda table, value: next(k for k, v in table.items() if v == value)
    return {"epochs": p.epochs, "batch_size": p.batch_size, "optimizer": name(_OPTIMIZERS, p.optimizer),
            "lr": p.learning_rate, "momentum": p.momentum, "nesterov": bool(p.nesterov),
            "weight_decay": p.weight_decay, "schedule": name(_SCHEDULES, p.schedule), "step_epochs": p.step_epochs,
            "gamma": p.gamma, "warmup_epochs": p.warmup_epochs, "loss": name(_LOSSES, p.loss),
            "label_smoothing": p.label_smoothing, "seed": p.seed, "threads": p.threads,
            "flip": bool(p.augment_flip), "translate": p.augment_translate, "brightness": p.augment_brightness,
            "contrast": p.augment_contrast, "loader_threads": p.loader_threads, "beta1": p.beta1,
            "beta2": p.beta2, "eps": p.eps, "alpha": p.alpha, "divergence_factor": p.divergence_factor}


class _Native(Handle):
    _free = staticmethod(free_model)
    _kind = "model"


def _text(fn, native, *args):
    native = native.pointer()
    out = ctypes.c_char_p()
    check(fn(native, *args, ctypes.byref(out)))
    return out.value.decode("utf-8", "replace")


class _Reporter:
    """Progress per epoch: a tqdm bar on a terminal when tqdm is installed, plain lines otherwise."""

    def __init__(self, verbose):
        self.verbose = verbose
        self.bar = None
        self.tqdm = None
        if verbose and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.tqdm = tqdm
            except ImportError:
                pass

    def batch(self, p):
        if not self.verbose or not self.tqdm:
            return
        if self.bar is None:
            self.bar = self.tqdm(total=p.batches, desc="epoch %d/%d" % (p.epoch + 1, p.epochs), leave=True)
        self.bar.update(1)
        self.bar.set_postfix(loss="%.4f" % p.loss, acc="%.4f" % p.accuracy, ips="%.0f" % p.images_per_second)

    def epoch(self, p):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.verbose:
            line = "epoch %d/%d: loss %.4f accuracy %.4f" % (p.epoch + 1, p.epochs, p.loss, p.accuracy)
            if p.has_validation:
                line += " | val loss %.4f val accuracy %.4f" % (p.val_loss, p.val_accuracy)
            line += " | %.0f images/s" % p.images_per_second
            print(line, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Model:
    """A network described by the architecture language, e.g.
    ``Model("input(1,28,28) conv(32,3,pad=1) relu maxpool(2) flatten dense(10)", seed=1)``."""

    def __init__(self, architecture, seed=1):
        out = ctypes.c_void_p()
        check(lib.cnn_model_create(str(architecture).encode(), int(seed), ctypes.byref(out)))
        self._native = _Native(out.value)

    @classmethod
    def load(cls, path, allow_non_finite=False):
        """Loads a model file (safetensors). A tensor holding NaN or infinity raises BadFormatError
        naming it, unless ``allow_non_finite``."""
        out = ctypes.c_void_p()
        check(lib.cnn_model_load_flags(os.fsencode(path), 1 if allow_non_finite else 0, ctypes.byref(out)))
        model = cls.__new__(cls)
        model._native = _Native(out.value)
        return model

    def save(self, path):
        """Saves the model as safetensors, atomically."""
        check(lib.cnn_model_save(self._native.pointer(), os.fsencode(path)))

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

    def summary(self):
        """A table of layers with output shapes, parameters and FLOPs."""
        return _text(lib.cnn_model_summary, self._native)

    def __repr__(self):
        if self._native.closed:
            return "Model(closed)"
        return "Model(%r)" % self.architecture

    # ---- training ----

    def fit(self, data, epochs=None, batch_size=None, optimizer=None, lr=None, momentum=None, nesterov=None,
            weight_decay=None, schedule=None, step_epochs=None, gamma=None, warmup_epochs=None,
            loss=None, label_smoothing=None, seed=None, threads=None, validation=None,
            flip=None, translate=None, brightness=None, contrast=None, loader_threads=None,
            beta1=None, beta2=None, eps=None, alpha=None, verbose=1, callback=None, divergence_factor=None):
        """Trains on ``data`` (a Dataset). Returns a History. A setting left as None takes the
        library's default (``cnn.train_defaults()``, from cnn_train_params_default: epochs 1,
        batch_size 64, sgd, lr 0.01, ...). ``callback(progress)`` sees every batch
        (a dict) and may return True to stop. Ctrl-C cancels cleanly: the model keeps its last
        completed update and KeyboardInterrupt is raised. A NaN or infinite loss, gradient or
        weight, or a batch loss over ``divergence_factor`` times the first (0: no such bound),
        raises DivergedError and leaves the model with weights whose loss was finite."""
        if optimizer is not None and optimizer not in _OPTIMIZERS:
            raise ValueError("optimizer must be one of %s, not %r" % (sorted(_OPTIMIZERS), optimizer))
        if schedule is not None and schedule not in _SCHEDULES:
            raise ValueError("schedule must be one of %s, not %r" % (sorted(_SCHEDULES), schedule))
        if loss is not None and loss not in _LOSSES:
            raise ValueError("loss must be 'cross-entropy' or 'mse', not %r" % (loss,))
        if not isinstance(data, Dataset):
            raise TypeError("data must be a cnn.Dataset, not %s" % type(data).__name__)
        p = _lib.TrainParams()
        lib.cnn_train_params_default(ctypes.byref(p))
        flag = lambda v: int(bool(v))
        for field, value, convert in (
                ("epochs", epochs, int), ("batch_size", batch_size, int),
                ("optimizer", optimizer, _OPTIMIZERS.__getitem__), ("learning_rate", lr, float),
                ("momentum", momentum, float), ("nesterov", nesterov, flag), ("weight_decay", weight_decay, float),
                ("beta1", beta1, float), ("beta2", beta2, float), ("eps", eps, float), ("alpha", alpha, float),
                ("schedule", schedule, _SCHEDULES.__getitem__), ("step_epochs", step_epochs, int),
                ("gamma", gamma, float), ("warmup_epochs", warmup_epochs, float),
                ("loss", loss, _LOSSES.__getitem__), ("label_smoothing", label_smoothing, float),
                ("seed", seed, int), ("threads", threads, int), ("augment_flip", flip, flag),
                ("augment_translate", translate, int), ("augment_brightness", brightness, float),
                ("augment_contrast", contrast, float), ("loader_threads", loader_threads, int),
                ("divergence_factor", divergence_factor, float)):
            if value is not None:
                setattr(p, field, convert(value))
        native_data = data._for(self)
        if validation is not None:
            if not isinstance(validation, Dataset):
                raise TypeError("validation must be a cnn.Dataset")
            p.validation = validation._for(self).value

        history = History()
        reporter = _Reporter(verbose)
        raised = []

        def on_progress(progress_pointer, _):
            # Runs inside the C call, with the GIL. An exception here (Ctrl-C included) cancels
            # training and is raised again once the C call has returned.
            try:
                pr = progress_pointer.contents
                if pr.epoch_end:
                    entry = {"epoch": pr.epoch + 1, "loss": pr.loss, "accuracy": pr.accuracy,
                             "images_per_second": pr.images_per_second}
                    if pr.has_validation:
                        entry["val_loss"], entry["val_accuracy"] = pr.val_loss, pr.val_accuracy
                    history.epochs.append(entry)
                    reporter.epoch(pr)
                    return 0
                reporter.batch(pr)
                if callback is not None:
                    info = {k: getattr(pr, k) for k, _ in _lib.Progress._fields_ if k not in ("epoch_end", "has_validation", "val_loss", "val_accuracy")}
                    if callback(info):
                        return 1
                return 0
            except BaseException as e:  # noqa: B902 - KeyboardInterrupt must cancel too
                raised.append(e)
                return 1

        p.progress = _lib.PROGRESS_FN(on_progress)
        try:
            code = lib.cnn_model_train(self._native.pointer(), native_data, ctypes.byref(p))
        finally:
            reporter.close()
        if raised:
            raise raised[0]
        if code == CancelledError.status and callback is not None:
            return history  # stopped by the callback's True
        check(code)
        return history

    # ---- evaluation and inference ----

    def evaluate(self, data):
        """{'loss', 'accuracy', 'count', 'confusion'}: confusion[true, predicted] as an ndarray."""
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
        if x.ndim != 4 or x.shape[1:] != (c, h, w):
            raise ValueError("images must be (N, %d, %d, %d) float32 (NCHW, values in [0, 1]) or uint8 NHWC, not %s %s"
                             % (c, h, w, x.dtype, x.shape))
        if x.dtype.kind not in "fiu":
            raise TypeError("images must be numbers, not %s" % x.dtype)
        return np.ascontiguousarray(x, dtype=np.float32), False

    def predict(self, x, logits=False):
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
