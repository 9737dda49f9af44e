"""The `swiftcnn` distribution (import name `cnn`): a platform wheel with libcnn.so inside.

    make wheel        (or: make lib && pip wheel --no-deps -w build/dist bindings/python)

bundles build/lib/libcnn.so (or $CNN_LIBRARY): the portable library, which chooses its kernels at
run time and has the Swift runtime, libjpeg-turbo and zlib linked in, so the wheel installs on any
x86-64 Linux with glibc. Without a library to bundle, the package finds one at run time
($CNN_LIBRARY, then the system's library path). The version is include/cnn.h's."""
import os
import re
import shutil

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")


def library():
    """The libcnn.so to bundle, or None."""
    for candidate in (os.environ.get("CNN_LIBRARY"), os.path.join(ROOT, "build", "lib", "libcnn.so")):
        if candidate and os.path.exists(candidate):
            return os.path.realpath(candidate)
    return None


def version():
    """MAJOR.MINOR.PATCH of include/cnn.h, which must be the binding's own (cnn/_lib.py VERSION)."""
    binding = re.search(r"^VERSION = \((\d+), (\d+), (\d+)\)", open(os.path.join(HERE, "cnn", "_lib.py")).read(), re.M)
    binding = ".".join(binding.groups())
    header = os.path.join(ROOT, "include", "cnn.h")
    if os.path.exists(header):
        text = open(header).read()
        parts = [re.search(r"#define CNN_VERSION_%s (\d+)" % p, text).group(1) for p in ("MAJOR", "MINOR", "PATCH")]
        if ".".join(parts) != binding:
            raise SystemExit("include/cnn.h is version %s but cnn/_lib.py says %s: update VERSION in _lib.py"
                             % (".".join(parts), binding))
    return binding


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        path = library()
        if path:
            shutil.copyfile(path, os.path.join(self.build_lib, "cnn", "libcnn.so"))
            print("bundled %s into the package" % path)


class PlatformWheel(bdist_wheel):
    """A wheel holding a native library is not pure: tag it for the platform (any Python 3, since
    the binding is ctypes). CNN_WHEEL_PLATFORM overrides the tag (e.g. a manylinux tag)."""

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = library() is None

    def get_tag(self):
        if library() is None:
            return super().get_tag()
        return "py3", "none", os.environ.get("CNN_WHEEL_PLATFORM", "linux_x86_64")


class NativeDistribution(Distribution):
    """With a library to bundle, the package goes to platlib (it is not pure Python)."""

    def has_ext_modules(self):
        return library() is not None


setup(version=version(), distclass=NativeDistribution,
      cmdclass={"build_py": BuildWithLibrary, "bdist_wheel": PlatformWheel})
