"""Hostile files through Python, each in a child process whose address space may grow by at most
1 GiB: every one must raise the right error, quickly, without the process being killed."""
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT

HOSTILE = os.path.join(ROOT, "Tests", "data", "hostile")

CHILD = r"""
import os, resource, sys, time
import cnn
pages = int(open("/proc/self/statm").read().split()[0])
limit = pages * os.sysconf("SC_PAGE_SIZE") + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
case, hostile = sys.argv[1], sys.argv[2]
start = time.monotonic()
try:
    if case == "idx":
        cnn.Dataset.from_idx(os.path.join(hostile, "declares-4gib-images-idx3-ubyte.gz"),
                             os.path.join(hostile, "declares-4gib-labels-idx1-ubyte.gz"))
    elif case == "architecture":
        cnn.Model("input(1,128,128) flatten dense(16383) dense(16384)")
    elif case == "model":
        cnn.Model.load(os.path.join(hostile, "huge-architecture.safetensors"))
    elif case == "jpeg":
        cnn.Model("input(3,32,32) flatten dense(2)").predict_jpeg(os.path.join(hostile, "cmyk-progressive-8000x8000.jpg"))
    elif case == "refused":
        cnn.set_memory_limit(64 << 30)
        cnn.Model("input(1,128,128) flatten dense(16000)")
    print("no error")
except cnn.CNNError as e:
    print(type(e).__name__, time.monotonic() - start, str(e)[:200])
"""


@pytest.mark.parametrize("case, error", [
    ("idx", "BadFormatError"), ("architecture", "InvalidArgumentError"), ("model", "BadFormatError"),
    ("jpeg", "CNNMemoryError"), ("refused", "CNNMemoryError"),
])
def test_hostile_files_fail_fast_under_a_memory_cap(case, error):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "bindings", "python"))
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-c", CHILD, case, HOSTILE], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    words = run.stdout.split()
    assert words and words[0] == error, run.stdout + run.stderr[-2000:]
    assert float(words[1]) < 1.0, run.stdout
    assert time.monotonic() - start < 30
