"""Bundles libcnn.so into the package when it has been built (`make lib` at the repository root
writes build/lib/libcnn.so), or from $CNN_LIBRARY. Without either, the package finds the library
at run time ($CNN_LIBRARY, then the system's library path)."""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        candidates = [os.environ.get("CNN_LIBRARY"), os.path.join(HERE, "..", "..", "build", "lib", "libcnn.so")]
        for candidate in candidates:
            if candidate and os.path.exists(candidate):
                target = os.path.join(self.build_lib, "cnn", "libcnn.so")
                shutil.copyfile(os.path.realpath(candidate), target)
                print("bundled %s into the package" % os.path.realpath(candidate))
                break


setup(cmdclass={"build_py": BuildWithLibrary})
