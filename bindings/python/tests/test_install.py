"""`pip install ./bindings/python` into a fresh virtual environment bundles libcnn.so, and README's
Python snippet runs there as written, with no CNN_LIBRARY set."""
import os
import shutil
import subprocess
import sys

from conftest import ROOT


def test_pip_install_in_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("CNN_LIBRARY", "PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    source = tmp_path / "source"   # a copy, so the build leaves nothing in the repository
    shutil.copytree(os.path.join(ROOT, "bindings", "python"), source / "bindings" / "python",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env["CNN_LIBRARY"] = os.path.join(ROOT, "build", "lib", "libcnn.so")   # what setup.py bundles
    result = subprocess.run([python, "-m", "pip", "install", "-q", str(source / "bindings" / "python")],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    del env["CNN_LIBRARY"]
    readme = open(os.path.join(ROOT, "README.md")).read()
    code = readme.split("## Python", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    os.symlink(os.path.join(ROOT, "data"), tmp_path / "data")
    check = "import cnn, os; assert os.path.dirname(cnn.library_path) == os.path.dirname(cnn.__file__), cnn.library_path\n"
    result = subprocess.run([python, "-c", check + code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accuracy" in result.stdout
