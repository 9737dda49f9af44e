"""Each fact of the API lives in one place (include/cnn.h or the library); the binding's copies are
checked against it here: status codes, enum values, training defaults, the version."""
import inspect
import os
import re

import cnn
from cnn import _lib, errors
from cnn.model import _LOSSES, _OPTIMIZERS, _SCHEDULES
from conftest import ROOT

HEADER = open(os.path.join(ROOT, "include", "cnn.h")).read()


def header_constants(prefix):
    """{NAME: value} of the header's enum members CNN_<prefix>NAME = value."""
    return {name: int(value) for name, value in re.findall(r"\bCNN_%s([A-Z0-9_]+) = (\d+)" % prefix, HEADER)}


def test_error_classes_carry_the_header_status_codes():
    codes = {name: value for name, value in header_constants("").items()
             if name in ("OK", "INVALID_ARGUMENT", "PARSE_ERROR", "IO_ERROR", "BAD_FORMAT", "SHAPE_MISMATCH",
                         "OUT_OF_MEMORY", "DIVERGED", "CANCELLED", "BUSY", "INTERNAL")}
    assert len(codes) == 11, codes
    classes = {"INVALID_ARGUMENT": errors.InvalidArgumentError, "PARSE_ERROR": errors.ParseError,
               "IO_ERROR": errors.CNNIOError, "BAD_FORMAT": errors.BadFormatError,
               "SHAPE_MISMATCH": errors.ShapeMismatchError, "OUT_OF_MEMORY": errors.CNNMemoryError,
               "DIVERGED": errors.DivergedError, "CANCELLED": errors.CancelledError, "BUSY": errors.BusyError,
               "INTERNAL": errors.InternalError}
    for name, cls in classes.items():
        assert cls.status == codes[name], (name, cls.status, codes[name])
    # Every status the header names has its own text in the library, and none other does.
    texts = {cnn.lib.cnn_status_string(code).decode() for code in codes.values()}
    assert len(texts) == len(codes) and "unknown status" not in texts
    assert cnn.lib.cnn_status_string(max(codes.values()) + 1).decode() == "unknown status"


def test_enums_match_the_header():
    assert {k: v for k, v in _OPTIMIZERS.items()} == {k.lower(): v for k, v in header_constants("OPTIMIZER_").items()}
    assert _SCHEDULES == {k.lower(): v for k, v in header_constants("SCHEDULE_").items()}
    loss = header_constants("LOSS_")
    assert _LOSSES["cross-entropy"] == _LOSSES["cross_entropy"] == loss["CROSS_ENTROPY"] and _LOSSES["mse"] == loss["MSE"]
    assert cnn.training._MONITORS == {k.lower(): v for k, v in header_constants("MONITOR_").items()}
    # The ctypes structs are the header's size (cnn_train_params_default writes struct_size).
    p = _lib.TrainParams()
    cnn.lib.cnn_train_params_default(p)
    assert p.struct_size == _lib.ctypes.sizeof(_lib.TrainParams)


def test_fit_takes_its_defaults_from_the_library():
    # fit's settings default to None: the values come from cnn_train_params_default.
    signature = inspect.signature(cnn.Model.fit)
    defaults = cnn.train_defaults()
    for name in defaults:
        if name in signature.parameters:
            assert signature.parameters[name].default is None, name
        else:   # a keyword of **settings, converted by one table
            assert name in cnn.training._SETTINGS, name
    assert defaults["epochs"] == 1 and defaults["batch_size"] == 64 and defaults["optimizer"] == "sgd"


def test_header_comments_state_the_library_defaults():
    # The "default X" comments of cnn_train_params against cnn_train_params_default.
    body = HEADER[HEADER.index("typedef struct cnn_train_params"):]
    body = body[:body.index("} cnn_train_params;")]
    p = _lib.TrainParams()
    cnn.lib.cnn_train_params_default(p)
    checked = 0
    for field, value in re.findall(r"\b(\w+);\s*/\*[^*]*?\bdefault (-?[0-9.e-]+)\b", body):
        assert abs(getattr(p, field) - float(value)) <= 1e-6 * max(1, abs(float(value))), (field, value, getattr(p, field))
        checked += 1
    assert checked >= 8, checked


def test_version_is_the_header_version():
    parts = tuple(int(re.search(r"#define CNN_VERSION_%s (\d+)" % p, HEADER).group(1)) for p in ("MAJOR", "MINOR", "PATCH"))
    assert _lib.VERSION == parts
    assert cnn.__version__ == "%d.%d.%d" % parts == cnn.library_version()


def test_runtime_info_names_the_kernels():
    info = cnn.runtime_info()
    assert re.match(r"kernels: (avx512|avx2|baseline); cpu: (avx512|avx2|baseline); threads: \d+$", info), info
