"""The ctypes layer: the library found and checked, every function declared, structs that match."""
import ctypes
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

import cnn
from cnn import _lib


def test_version_matches():
    assert cnn.library_version() == cnn.__version__
    assert _lib.lib.cnn_version_number() == _lib.VERSION_NUMBER


def test_every_header_function_is_declared():
    header = open(os.path.join(ROOT, "include", "cnn.h")).read()
    declared = set(re.findall(r"^[a-z_0-9 ]+\*?\s*\*?(cnn_[a-z0-9_]+)\(", header, re.M))
    assert declared == set(_lib._FUNCTIONS), (declared ^ set(_lib._FUNCTIONS))
    for name, (restype, _) in _lib._FUNCTIONS.items():
        assert getattr(_lib.lib, name).restype == restype, name


def test_struct_layouts_match_the_library():
    params = _lib.TrainParams()
    _lib.lib.cnn_train_params_default(ctypes.byref(params))
    assert params.struct_size == ctypes.sizeof(_lib.TrainParams)
    assert (params.epochs, params.batch_size, params.seed, params.loader_threads) == (1, 64, 1, 1)
    options = _lib.FolderOptions()
    _lib.lib.cnn_folder_options_default(ctypes.byref(options))
    assert options.struct_size == ctypes.sizeof(_lib.FolderOptions)
    assert (options.max_scans, options.max_pixels, options.apply_exif_orientation) == (100, 64000000, 1)


def test_missing_library_says_where_it_looked():
    env = dict(os.environ, CNN_LIBRARY="/nonexistent/libcnn.so", PYTHONPATH=os.path.join(ROOT, "bindings", "python"))
    result = subprocess.run([sys.executable, "-c", "import cnn"], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "CNN_LIBRARY" in result.stderr and "make lib" in result.stderr


def test_threads_setting():
    cnn.set_num_threads(2)
    assert cnn.get_num_threads() == 2
    cnn.set_num_threads(1)
    with pytest.raises(cnn.InvalidArgumentError, match="threads"):
        cnn.set_num_threads(0)
