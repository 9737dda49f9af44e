"""Loading libcnn.so and the ctypes declarations of every function of include/cnn.h.

One table (``_FUNCTIONS``) gives each function's argument and result types: a function without a
declared ``restype`` would have its 64-bit pointers silently truncated to ``int``.
"""
import ctypes
import ctypes.util
import os

from . import errors

# The version of cnn.h this binding was written for (setup.py and test_api_facts.py check it
# against include/cnn.h; the distribution's version is this one).
VERSION = (0, 4, 0)
VERSION_NUMBER = VERSION[0] * 10000 + VERSION[1] * 100 + VERSION[2]

c_float_p = ctypes.POINTER(ctypes.c_float)
c_int32_p = ctypes.POINTER(ctypes.c_int32)
c_int64_p = ctypes.POINTER(ctypes.c_int64)
c_uint8_p = ctypes.POINTER(ctypes.c_uint8)
c_char_pp = ctypes.POINTER(ctypes.c_char_p)
handle = ctypes.c_void_p
handle_p = ctypes.POINTER(ctypes.c_void_p)
status = ctypes.c_int32


class Progress(ctypes.Structure):
    _fields_ = [
        ("epoch", ctypes.c_int32), ("epochs", ctypes.c_int32),
        ("batch", ctypes.c_int32), ("batches", ctypes.c_int32),
        ("loss", ctypes.c_float), ("accuracy", ctypes.c_float),
        ("images_per_second", ctypes.c_float), ("learning_rate", ctypes.c_float),
        ("epoch_end", ctypes.c_int32), ("has_validation", ctypes.c_int32),
        ("val_loss", ctypes.c_float), ("val_accuracy", ctypes.c_float),
        ("best", ctypes.c_int32), ("stops_early", ctypes.c_int32),
    ]


PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.POINTER(Progress), ctypes.c_void_p)


class TrainParams(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32), ("epochs", ctypes.c_int32), ("batch_size", ctypes.c_int32),
        ("optimizer", ctypes.c_int32), ("learning_rate", ctypes.c_float), ("momentum", ctypes.c_float),
        ("nesterov", ctypes.c_int32), ("weight_decay", ctypes.c_float), ("beta1", ctypes.c_float),
        ("beta2", ctypes.c_float), ("alpha", ctypes.c_float), ("eps", ctypes.c_float),
        ("schedule", ctypes.c_int32), ("step_epochs", ctypes.c_int32), ("gamma", ctypes.c_float),
        ("warmup_epochs", ctypes.c_float), ("loss", ctypes.c_int32), ("label_smoothing", ctypes.c_float),
        ("seed", ctypes.c_uint64), ("threads", ctypes.c_int32), ("validation", ctypes.c_void_p),
        ("progress", PROGRESS_FN), ("user_data", ctypes.c_void_p),
        ("augment_flip", ctypes.c_int32), ("augment_translate", ctypes.c_int32),
        ("augment_brightness", ctypes.c_float), ("augment_contrast", ctypes.c_float),
        ("loader_threads", ctypes.c_int32), ("divergence_factor", ctypes.c_float),
        ("allow_extra_outputs", ctypes.c_int32), ("early_stopping", ctypes.c_int32),
        ("monitor", ctypes.c_int32), ("save_best", ctypes.c_char_p),
        ("decay_bias_and_norm", ctypes.c_int32), ("augment_erase", ctypes.c_float),
        ("freeze_until", ctypes.c_int32), ("distributed", ctypes.c_int32), ("mpi_comm", ctypes.c_void_p),
        ("recompute_blocks", ctypes.c_int32),
    ]


class Evaluation(ctypes.Structure):
    _fields_ = [("count", ctypes.c_int32), ("loss", ctypes.c_float), ("accuracy", ctypes.c_float)]


class FolderOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32), ("fit", ctypes.c_int32), ("strict", ctypes.c_int32),
        ("apply_exif_orientation", ctypes.c_int32), ("max_scans", ctypes.c_int32),
        ("max_pixels", ctypes.c_int64), ("cache_bytes", ctypes.c_int64), ("max_bytes", ctypes.c_int64),
    ]


_FUNCTIONS = {
    "cnn_version_number": (ctypes.c_int32, []),
    "cnn_version_string": (ctypes.c_char_p, []),
    "cnn_runtime_info": (ctypes.c_char_p, []),
    "cnn_status_string": (ctypes.c_char_p, [status]),
    "cnn_last_error": (ctypes.c_char_p, []),
    "cnn_set_num_threads": (status, [ctypes.c_int32]),
    "cnn_get_num_threads": (ctypes.c_int32, []),
    "cnn_set_memory_limit": (status, [ctypes.c_int64]),
    "cnn_get_memory_limit": (ctypes.c_int64, []),
    "cnn_dataset_from_float": (status, [c_float_p, c_int32_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                        ctypes.c_int32, ctypes.c_int32, handle_p]),
    "cnn_dataset_from_uint8": (status, [c_uint8_p, c_int32_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                        ctypes.c_int32, ctypes.c_int32, handle_p]),
    "cnn_dataset_from_idx": (status, [ctypes.c_char_p, ctypes.c_char_p, handle_p]),
    "cnn_folder_options_default": (None, [ctypes.POINTER(FolderOptions)]),
    "cnn_dataset_from_folder": (status, [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                         ctypes.POINTER(FolderOptions), handle_p]),
    "cnn_dataset_skipped_count": (status, [handle, c_int32_p]),
    "cnn_dataset_skipped_file": (status, [handle, ctypes.c_int32, c_char_pp, c_char_pp]),
    "cnn_dataset_split": (status, [handle, ctypes.c_float, ctypes.c_uint64, handle_p, handle_p]),
    "cnn_dataset_free": (None, [handle]),
    "cnn_dataset_shape": (status, [handle, c_int32_p, c_int32_p, c_int32_p, c_int32_p, c_int32_p]),
    "cnn_dataset_get": (status, [handle, ctypes.c_int32, ctypes.c_int32, c_float_p, c_int32_p]),
    "cnn_dataset_set_class_names": (status, [handle, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int32]),
    "cnn_dataset_class_name": (status, [handle, ctypes.c_int32, c_char_pp]),
    "cnn_dataset_sample_path": (status, [handle, ctypes.c_int32, c_char_pp]),
    "cnn_dataset_map_classes": (status, [handle, handle, handle_p]),
    "cnn_model_create": (status, [ctypes.c_char_p, ctypes.c_uint64, handle_p]),
    "cnn_model_load": (status, [ctypes.c_char_p, handle_p]),
    "cnn_model_load_flags": (status, [ctypes.c_char_p, ctypes.c_uint32, handle_p]),
    "cnn_model_save": (status, [handle, ctypes.c_char_p]),
    "cnn_model_export_onnx": (status, [handle, ctypes.c_char_p]),
    "cnn_model_new_head": (status, [handle, ctypes.c_int32, ctypes.c_uint64, handle_p]),
    "cnn_model_free": (None, [handle]),
    "cnn_model_input_shape": (status, [handle, c_int32_p, c_int32_p, c_int32_p]),
    "cnn_model_num_classes": (status, [handle, c_int32_p]),
    "cnn_model_class_name": (status, [handle, ctypes.c_int32, c_char_pp]),
    "cnn_model_parameter_count": (status, [handle, c_int64_p]),
    "cnn_model_architecture": (status, [handle, c_char_pp]),
    "cnn_model_summary": (status, [handle, c_char_pp]),
    "cnn_model_summary_timed": (status, [handle, ctypes.c_int32, ctypes.c_int32, c_char_pp]),
    "cnn_train_params_default": (None, [ctypes.POINTER(TrainParams)]),
    "cnn_model_train": (status, [handle, handle, ctypes.POINTER(TrainParams)]),
    "cnn_trainer_create": (status, [handle, handle, ctypes.POINTER(TrainParams), handle_p]),
    "cnn_trainer_run": (status, [handle, ctypes.c_int32]),
    "cnn_trainer_progress": (status, [handle, c_int32_p, c_int32_p, c_int32_p]),
    "cnn_trainer_save_checkpoint": (status, [handle, ctypes.c_char_p]),
    "cnn_trainer_resume": (status, [handle, ctypes.c_char_p]),
    "cnn_trainer_free": (None, [handle]),
    "cnn_model_predict_image": (status, [handle, c_uint8_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                         ctypes.c_int32, c_float_p]),
    "cnn_model_evaluate": (status, [handle, handle, ctypes.POINTER(Evaluation), c_int32_p]),
    "cnn_model_predict": (status, [handle, c_float_p, ctypes.c_int32, c_float_p]),
    "cnn_model_predict_logits": (status, [handle, c_float_p, ctypes.c_int32, c_float_p]),
    "cnn_model_predict_uint8": (status, [handle, c_uint8_p, ctypes.c_int32, c_float_p]),
    "cnn_model_predict_jpeg": (status, [handle, c_uint8_p, ctypes.c_size_t, ctypes.POINTER(FolderOptions), c_float_p]),
    "cnn_model_predict_jpeg_file": (status, [handle, ctypes.c_char_p, ctypes.POINTER(FolderOptions), c_float_p]),
    "cnn_top_k": (status, [c_float_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, c_int32_p, c_float_p]),
}

_HERE = os.path.dirname(os.path.abspath(__file__))


def _candidates():
    """Where libcnn.so is looked for, in order: (description, path or name)."""
    found = []
    env = os.environ.get("CNN_LIBRARY")
    if env:
        found.append(("$CNN_LIBRARY", env))
    for name in sorted(os.listdir(_HERE)):
        if name.startswith("libcnn.so"):
            found.append(("the copy inside the package", os.path.join(_HERE, name)))
            break
    found.append(("the system's library path", "libcnn.so.%d" % VERSION[0]))
    system = ctypes.util.find_library("cnn")
    if system:
        found.append(("the system's library path", system))
    return found


def _load():
    tried = []
    for where, path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s): %s" % (where, path, e))
            if where == "$CNN_LIBRARY":
                break  # an explicit choice that fails is an error, not a reason to look elsewhere
            continue
        for name, (restype, argtypes) in _FUNCTIONS.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        number = lib.cnn_version_number()
        if number // 10000 != VERSION[0] or number < VERSION_NUMBER:
            raise ImportError(
                "libcnn.so at %s is version %s; this binding needs %d.%d.x (at least %d.%d.%d)"
                % (path, lib.cnn_version_string().decode(), VERSION[0], VERSION[1], *VERSION))
        return lib, path
    raise ImportError(
        "cannot load libcnn.so. Looked in:\n  " + "\n  ".join(tried) +
        "\nBuild it with `make lib` at the root of the SwiftCNN repository (it writes build/lib/libcnn.so),"
        " then set CNN_LIBRARY=/path/to/build/lib/libcnn.so, or reinstall this package"
        " (`pip install ./bindings/python` bundles build/lib/libcnn.so when it exists), or install it with"
        " `make install PREFIX=/usr/local`.")


lib, path = _load()


def check(code):
    """Raises the exception for a non-zero status, with the library's message."""
    if code != 0:
        message = lib.cnn_last_error().decode("utf-8", "replace")
        raise errors.for_status(code, message)
