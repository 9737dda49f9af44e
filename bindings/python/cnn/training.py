"""Training runs: the settings as the C struct, the progress callback, and Trainer (steps)."""
import ctypes
import os
import signal
import sys
import threading
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._handle import Handle
from ._lib import check, lib
from .dataset import Dataset
from .errors import CancelledError
from .history import History

# The C API's enums by name (CNN_OPTIMIZER_*, CNN_SCHEDULE_*, CNN_LOSS_*, CNN_MONITOR_*;
# test_api_facts.py checks them against include/cnn.h).
_OPTIMIZERS = {"sgd": 0, "rmsprop": 1, "adam": 2, "adamw": 3}
_SCHEDULES = {"constant": 0, "step": 1, "cosine": 2}
_LOSSES = {"cross-entropy": 0, "cross_entropy": 0, "mse": 1}
_MONITORS = {"val_loss": 0, "val_accuracy": 1}


def _choice(table, what):
    def convert(value):
        if value not in table:
            raise ValueError("%s must be one of %s, not %r" % (what, sorted(table), value))
        return table[value]
    return convert


_flag = lambda v: int(bool(v))  # noqa: E731

# fit's keyword -> (cnn_train_params field, conversion).
_SETTINGS = {
    "epochs": ("epochs", int), "batch_size": ("batch_size", int),
    "optimizer": ("optimizer", _choice(_OPTIMIZERS, "optimizer")), "lr": ("learning_rate", float),
    "momentum": ("momentum", float), "nesterov": ("nesterov", _flag), "weight_decay": ("weight_decay", float),
    "decay_bias_and_norm": ("decay_bias_and_norm", _flag), "erase": ("augment_erase", float),
    "beta1": ("beta1", float), "beta2": ("beta2", float), "eps": ("eps", float), "alpha": ("alpha", float),
    "schedule": ("schedule", _choice(_SCHEDULES, "schedule")), "step_epochs": ("step_epochs", int),
    "gamma": ("gamma", float), "warmup_epochs": ("warmup_epochs", float),
    "loss": ("loss", _choice(_LOSSES, "loss")), "label_smoothing": ("label_smoothing", float),
    "seed": ("seed", int), "threads": ("threads", int), "flip": ("augment_flip", _flag),
    "translate": ("augment_translate", int), "brightness": ("augment_brightness", float),
    "contrast": ("augment_contrast", float), "loader_threads": ("loader_threads", int),
    "divergence_factor": ("divergence_factor", float), "allow_extra_outputs": ("allow_extra_outputs", _flag),
    "early_stopping": ("early_stopping", int), "monitor": ("monitor", _choice(_MONITORS, "monitor")),
    "freeze_until": ("freeze_until", int), "distributed": ("distributed", _flag),
    "mpi_comm": ("mpi_comm", lambda v: v), "recompute_blocks": ("recompute_blocks", _flag),
}


def train_defaults() -> Dict[str, Any]:
    """The library's training defaults (cnn_train_params_default), as fit's argument names."""
    p = _lib.TrainParams()
    lib.cnn_train_params_default(ctypes.byref(p))
    names = {"optimizer": _OPTIMIZERS, "schedule": _SCHEDULES, "loss": _LOSSES, "monitor": _MONITORS}
    out = {}
    for key, (field, convert) in _SETTINGS.items():
        value = getattr(p, field)
        if key in names:
            value = next(k for k, v in names[key].items() if v == value)
        elif convert is _flag:
            value = bool(value)
        out[key] = value
    return out


def _params(settings: Dict[str, Any]) -> _lib.TrainParams:
    p = _lib.TrainParams()
    lib.cnn_train_params_default(ctypes.byref(p))
    for key, value in settings.items():
        if key == "save_best":
            continue
        if key not in _SETTINGS:
            raise TypeError("unknown training setting %r (the settings: %s)" % (key, ", ".join(sorted(_SETTINGS) + ["save_best"])))
        if value is not None:
            field, convert = _SETTINGS[key]
            setattr(p, field, convert(value))
    return p


def _as_dataset(x, y, classes, what):
    if isinstance(x, Dataset):
        if y is not None:
            raise TypeError("%s is a Dataset: its labels are in it (leave y out)" % what)
        return x
    if y is None:
        raise TypeError("%s must be a cnn.Dataset, or an image array with its labels y, not %s alone" % (what, type(x).__name__))
    return Dataset.from_numpy(x, y, classes=classes)


def _training_data(x, y, classes, validation, validation_split, seed):
    """(train, validation) Datasets from fit's arguments."""
    train = _as_dataset(x, y, classes, "x")
    val = None
    if validation is not None:
        if isinstance(validation, tuple):
            if len(validation) != 2:
                raise ValueError("validation_data must be a Dataset or an (x, y) pair")
            val = _as_dataset(validation[0], validation[1], classes, "validation_data")
        else:
            val = _as_dataset(validation, None, None, "validation_data")
    if validation_split is not None:
        if val is not None:
            raise ValueError("validation_split and validation_data exclude each other")
        if not 0 < float(validation_split) < 1:
            raise ValueError("validation_split must be between 0 and 1, not %r" % (validation_split,))
        train, val = train.split(float(validation_split), seed=1 if seed is None else int(seed))
    return train, val


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
        self.close()
        if self.verbose:
            line = "epoch %d/%d: loss %.4f accuracy %.4f" % (p.epoch + 1, p.epochs, p.loss, p.accuracy)
            if p.has_validation:
                line += " | val loss %.4f val accuracy %.4f" % (p.val_loss, p.val_accuracy)
            line += " | %.0f images/s" % p.images_per_second
            print(line, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


_BATCH_KEYS = ("epoch", "epochs", "batch", "batches", "loss", "accuracy", "images_per_second", "learning_rate")


class _Run:
    """One training call's C parameters and callback; keeps what C points to alive."""

    def __init__(self, model, train, validation, settings, callback, verbose):
        self.model = model
        self.train = train
        self.validation = validation
        self.p = _params(settings)
        self.save_best = settings.get("save_best")
        if self.save_best is not None:
            self._save_best = os.fsencode(self.save_best)
            self.p.save_best = self._save_best
        if validation is not None:
            self.p.validation = validation._for(model).value
        self.history = History()
        self.reporter = _Reporter(verbose)
        self.callback = callback
        self.raised = []
        self.interrupted = False
        self.p.progress = _lib.PROGRESS_FN(self._on_progress)

    def _catch_ctrl_c(self):
        """While the C call runs, Ctrl-C (SIGINT, with Python's default handler) only sets a flag
        that the next progress callback turns into a cancellation, and KeyboardInterrupt is raised
        once the call has returned. Python's own handler raises wherever the main thread next runs
        Python code, which can be the entry of a ctypes callback, before any try: ctypes prints
        such an exception and drops it, and training would go on. Returns the handler to restore."""
        if threading.current_thread() is not threading.main_thread():
            return None
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None

        def interrupted(signum, frame):
            self.interrupted = True
        return signal.signal(signal.SIGINT, interrupted)

    def _on_progress(self, progress_pointer, _):
        # Runs inside the C call, with the GIL. An exception here (Ctrl-C included) cancels
        # training and is raised again once the C call has returned.
        try:
            if self.interrupted:
                raise KeyboardInterrupt
            pr = progress_pointer.contents
            info = {k: getattr(pr, k) for k in _BATCH_KEYS}
            if pr.epoch_end:
                entry = {"epoch": pr.epoch + 1, "loss": pr.loss, "accuracy": pr.accuracy,
                         "images_per_second": pr.images_per_second}
                info = dict(info, epoch_end=True)
                if pr.has_validation:
                    entry["val_loss"], entry["val_accuracy"] = pr.val_loss, pr.val_accuracy
                    info.update(val_loss=pr.val_loss, val_accuracy=pr.val_accuracy, best=bool(pr.best))
                self.history.epochs.append(entry)
                self.reporter.epoch(pr)
            else:
                self.reporter.batch(pr)
            if self.callback is not None and self.callback(info):
                return 1
            return 0
        except BaseException as e:  # noqa: B902 - KeyboardInterrupt must cancel too
            self.raised.append(e)
            return 1

    def call(self, fn):
        """Runs fn(params pointer), the C training call; returns the history."""
        previous = self._catch_ctrl_c()
        try:
            code = fn(ctypes.byref(self.p))
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self.reporter.close()
        if self.raised:
            raise self.raised[0]
        if self.interrupted:
            raise KeyboardInterrupt
        if code == CancelledError.status and self.callback is not None:
            return self.history  # stopped by the callback's True
        check(code)
        return self.history


class _NativeTrainer(Handle):
    _free = staticmethod(lambda pointer: lib.cnn_trainer_free(pointer))
    _kind = "trainer"


class Trainer:
    """A training run kept between calls: ``run(epochs)`` trains that many more epochs, and
    ``save_checkpoint`` / ``resume`` continue it exactly (the same bytes as one ``fit`` call with
    the same arguments). ``Trainer(model, x, y=None, **fit_arguments)`` takes fit's arguments;
    ``epochs`` is the whole run's length (what a schedule spans). The model predicts and evaluates
    between runs; other training of it is refused while the trainer lives."""

    def __init__(self, model, x: Union[Dataset, np.ndarray], y: Optional[np.ndarray] = None, *,
                 validation_data: Union[Dataset, Tuple[np.ndarray, np.ndarray], None] = None,
                 validation_split: Optional[float] = None, callback: Optional[Callable[[dict], Any]] = None,
                 verbose: int = 1, classes: Optional[Sequence[str]] = None, **settings: Any):
        train, val = _training_data(x, y, classes, validation_data, validation_split, settings.get("seed"))
        self.model = model
        self._run = _Run(model, train, val, settings, callback, verbose)
        out = ctypes.c_void_p()
        check(lib.cnn_trainer_create(model._native.pointer(), train._for(model), ctypes.byref(self._run.p), ctypes.byref(out)))
        self._native = _NativeTrainer(out.value)

    @property
    def history(self) -> History:
        """Every epoch trained by this trainer's runs."""
        return self._run.history

    def run(self, epochs: int = 1) -> History:
        """Trains up to ``epochs`` more epochs (fewer at the run's end or when early stopping ends
        it). A run stopped by the callback or Ctrl-C goes on from the next batch at the next call."""
        self._run.raised = []
        return self._run.call(lambda p: lib.cnn_trainer_run(self._native.pointer(), int(epochs)))

    @property
    def progress(self) -> Tuple[int, int, bool]:
        """(epochs completed, batches completed in the epoch under way, finished)."""
        e, b, f = ctypes.c_int32(), ctypes.c_int32(), ctypes.c_int32()
        check(lib.cnn_trainer_progress(self._native.pointer(), ctypes.byref(e), ctypes.byref(b), ctypes.byref(f)))
        return e.value, b.value, bool(f.value)

    def save_checkpoint(self, path: Union[str, os.PathLike]) -> None:
        """Saves the model with the run's state, atomically (``cnn train --resume`` reads it too)."""
        check(lib.cnn_trainer_save_checkpoint(self._native.pointer(), os.fsencode(path)))

    def resume(self, path: Union[str, os.PathLike]) -> None:
        """Loads a checkpoint into the trainer and its model; its settings must be this trainer's
        (epochs may differ): a difference raises InvalidArgumentError naming it."""
        check(lib.cnn_trainer_resume(self._native.pointer(), os.fsencode(path)))

    def close(self) -> None:
        """Frees the trainer (the model stays)."""
        self._native.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
