# SwiftCNN build wrapper. The two commands README.md gives:
#   make demo    train the reference network on Fashion-MNIST and evaluate it
#   make test    every test: the Swift suites and the command-line tests
#
# The default build runs on every x86-64 CPU from x86-64-v2 (SSE4.2) up: the engine is compiled
# once per kernel level (AVX-512, AVX2 + FMA, baseline; see Package.swift) and the level is chosen
# at run time (CNN_CPU=avx512|avx2|baseline caps it). TARGET_CPU=native (or any CPU name) compiles
# every copy for that CPU instead: a build for the machine that builds, and for no other.

TARGET_CPU ?= portable
SWIFT ?= swift
ifeq ($(TARGET_CPU),portable)
  RELEASE_FLAGS = -c release
else
  RELEASE_FLAGS = -c release -Xswiftc -target-cpu -Xswiftc $(TARGET_CPU) -Xcc -march=$(TARGET_CPU)
endif
BIN = $(LIB_BUILD)/release
VENV = build/venv
# module=distribution, for the test dependencies whose names differ
PY_TEST_DEPS = numpy safetensors pytest PIL=pillow onnx onnxruntime onnxscript
TORCH_CPU = 2.13.0+cpu

# The library's version is the header's.
MAJOR := $(shell awk '/define CNN_VERSION_MAJOR/ {print $$3}' include/cnn.h)
MINOR := $(shell awk '/define CNN_VERSION_MINOR/ {print $$3}' include/cnn.h)
PATCH := $(shell awk '/define CNN_VERSION_PATCH/ {print $$3}' include/cnn.h)
VERSION = $(MAJOR).$(MINOR).$(PATCH)
PREFIX ?= /usr/local
# libcnn.so is self-contained: the Swift runtime is linked in statically, only the cnn_* symbols
# are exported (version script, linked with lld, which keeps no other dynamic symbol), the soname
# carries the ABI version, and -z nodelete keeps the runtime's state alive across a dlclose.
# The tool is built with the same flags in the same scratch path (the version script and soname
# change nothing in an executable), so the engine is compiled once for both.
LIB_BUILD ?= .build
LIB_OUT ?= build/lib
LINK_FLAGS = $(RELEASE_FLAGS) --scratch-path $(LIB_BUILD) -Xswiftc -static-stdlib \
	-Xswiftc -use-ld=lld -Xlinker --version-script=$(CURDIR)/bindings/c/libcnn.map \
	-Xlinker -soname=libcnn.so.$(MAJOR) -Xlinker -z -Xlinker nodelete
LIB_FLAGS = $(LINK_FLAGS) --product CNNC
CFLAGS_C = -std=c99 -O2 -Wall -Wextra -Werror -Iinclude
LINK_C = -Lbuild/lib -lcnn -Wl,-rpath,$(CURDIR)/build/lib -lpthread -lm

.PHONY: all build lib wheel example demo fashion-best test test-swift test-kernels test-cli test-c test-c-checks test-c-valgrind test-portable test-wheel test-faults test-soak test-mpi test-python \
	fuzz sanitize install bench clean

all: build lib

# libjpeg-turbo, libpng and zlib are linked in statically, from the .a files of Debian's -dev packages:
# build/static-deps holds copies of those archives and pkg-config files that point at them (SwiftPM
# would otherwise put the system folder, with its .so files, first). Debian's libjpeg.a is not
# entirely position-independent: its default message printer reads `stderr` directly, which a shared
# library cannot link, so that reference is renamed to a pointer the JPEG shim provides (libjpeg never
# prints through it: the shims replace the printers; libpng's default handlers, which print, are
# replaced too). Their DWARF 5 debug information, which
# valgrind 3.19 cannot read, is left out. libcnn.so then needs nothing but libc, libm,
# libstdc++ and libgcc_s (scripts/check-symbols.sh).
STATIC_DEPS = build/static-deps
$(STATIC_DEPS)/ready: Makefile
	rm -rf $(STATIC_DEPS) && mkdir -p $(STATIC_DEPS)/jpeg $(STATIC_DEPS)/png
	objcopy --strip-debug $$(pkg-config --variable=libdir zlib)/libz.a $(STATIC_DEPS)/libz.a
	cd $(STATIC_DEPS)/jpeg && ar x $$(pkg-config --variable=libdir libjpeg)/libjpeg.a \
		&& for o in *.o; do objcopy --strip-debug --redefine-sym stderr=cnnjpeg_stderr $$o; done && ar rcs ../libjpeg.a *.o
	cd $(STATIC_DEPS)/png && ar x $$(pkg-config --variable=libdir libpng)/libpng16.a \
		&& for o in *.o; do objcopy --strip-debug --redefine-sym stderr=cnnjpeg_stderr $$o; done && ar rcs ../libpng16.a *.o
	for pc in libjpeg:jpeg zlib:z libpng:png16; do \
		printf 'Name: %s\nDescription: %s, static (linked into libcnn.so)\nVersion: %s\nLibs: -L%s -l%s\nCflags: %s\n' \
			$${pc%%:*} $${pc%%:*} $$(pkg-config --modversion $${pc%%:*}) $(CURDIR)/$(STATIC_DEPS) $${pc#*:} "$$(pkg-config --cflags $${pc%%:*})" \
			> $(STATIC_DEPS)/$${pc%%:*}.pc; done
	touch $@

lib: $(STATIC_DEPS)/ready
	PKG_CONFIG_PATH=$(CURDIR)/$(STATIC_DEPS) $(SWIFT) build $(LIB_FLAGS)
	mkdir -p $(LIB_OUT)
	# A new file renamed over the old one: a process that has the library loaded (a test running
	# beside this build, a Python session) keeps its pages; copying over it in place makes them
	# vanish (SIGBUS).
	cp $(LIB_BUILD)/release/libCNNC.so $(LIB_OUT)/libcnn.so.$(VERSION).new
	mv -f $(LIB_OUT)/libcnn.so.$(VERSION).new $(LIB_OUT)/libcnn.so.$(VERSION)
	ln -sf libcnn.so.$(VERSION) $(LIB_OUT)/libcnn.so.$(MAJOR)
	ln -sf libcnn.so.$(MAJOR) $(LIB_OUT)/libcnn.so

example: lib
	mkdir -p build/bin
	cc $(CFLAGS_C) bindings/c/example.c $(LINK_C) -o build/bin/example

# The library, its header and pkg-config file, the tool and its manual page (made from its --help
# texts by scripts/man.sh, so the two cannot disagree).
install: lib build
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(BIN)/cnn $(DESTDIR)$(PREFIX)/bin/cnn
	scripts/man.sh $(BIN)/cnn > $(DESTDIR)$(PREFIX)/share/man/man1/cnn.1
	install -m 755 build/lib/libcnn.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/   # (install replaces, never overwrites in place)
	ln -sf libcnn.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libcnn.so.$(MAJOR)
	ln -sf libcnn.so.$(MAJOR) $(DESTDIR)$(PREFIX)/lib/libcnn.so
	install -m 644 include/cnn.h $(DESTDIR)$(PREFIX)/include/cnn.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' bindings/c/cnn.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/cnn.pc

# The tool links the Swift runtime, Foundation, libjpeg-turbo, libpng and zlib statically (about
# 90 MB): it runs, and installs, without a Swift toolchain or the -dev packages.
build: $(STATIC_DEPS)/ready
	PKG_CONFIG_PATH=$(CURDIR)/$(STATIC_DEPS) $(SWIFT) build $(LINK_FLAGS) --product cnn

demo: build
	scripts/demo.sh $(BIN)/cnn

# The accuracy recipe (about 15 minutes on 2 cores): Fashion-MNIST's full training set, test accuracy.
fashion-best: build
	scripts/fashion-best.sh $(BIN)/cnn

test: test-swift test-cli test-c test-portable test-faults test-soak test-mpi test-python test-wheel

# Every Swift suite on the optimized build, the code the library runs (bounds and overflow checks
# stay on; -Ounchecked is never used), the kernel and layer suites once per kernel level (CNNTests,
# CNNKernelTestsAVX2, CNNKernelTestsAVX512), each where the CPU has it. The unoptimized build runs
# the training tests some 70 times slower (4 minutes here, against 2 s): `swift test` still works
# for development, and make sanitize runs the suites under the sanitizers. The build is of the
# test product alone (SwiftPM's PACKAGEPackageTests): `swift test` would build the tool three times
# too, which no suite uses.
# The level copies of the kernel and layer suites are built where the CPU runs them
# (CNN_TEST_LEVELS, Package.swift; the flags of x86-64-v3 and v4 in /proc/cpuinfo): without
# AVX-512, the AVX-512 copy would be compiled with its engine and skipped (the test build took
# 451 s with it, 220 s without, on 2 AVX2 cores). The library and the tool compile every level
# wherever they are built.
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
has_flags = $(if $(filter-out $(CPU_FLAGS),$(1)),,yes)
comma := ,
space := $(eval) $(eval)
CNN_TEST_LEVELS ?= $(subst $(space),$(comma),$(strip $(if $(call has_flags,avx2 fma),AVX2) \
	$(if $(call has_flags,avx512f avx512dq avx512cd avx512bw avx512vl),AVX512)))
TEST_FLAGS = $(RELEASE_FLAGS) -Xswiftc -enable-testing --scratch-path .build-tests
SWIFT_TESTS = CNN_TEST_LEVELS=$(CNN_TEST_LEVELS) $(SWIFT)
test-swift:
	$(SWIFT_TESTS) build $(TEST_FLAGS) --product SwiftCNNPackageTests
	$(SWIFT_TESTS) test $(TEST_FLAGS) --skip-build

# The kernel and layer suites alone (every level), while working on a kernel.
test-kernels:
	$(SWIFT_TESTS) build $(TEST_FLAGS) --product SwiftCNNPackageTests
	$(SWIFT_TESTS) test $(TEST_FLAGS) --skip-build --filter "KernelTests|LayerTests"

test-cli: build $(VENV)/ready
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH Tests/cli/run.sh $(BIN)/cnn

# The C tests: built with -Wall -Wextra -Werror (also as C++), run, run again under valgrind; the
# example builds against an installed copy through pkg-config; header and symbols agree; the
# kernels' lane moves are inline (scripts/check-inlined.sh).
test-c: lib example
	cc $(CFLAGS_C) bindings/c/tests.c $(LINK_C) -o build/bin/c-tests
	$(MAKE) --no-print-directory -j2 --output-sync=target test-c-checks test-c-valgrind

# (test-c-valgrind and test-c-checks are test-c's two halves, run side by side after it built the
# tests.) valgrind 3.19 does not decode AVX-512: it checks the AVX2 kernels of the same library. It
# runs the program on one core (about 100 s here), so the other checks run beside it.
test-c-valgrind:
	CNN_CPU=avx2 valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
		--suppressions=bindings/c/valgrind.supp build/bin/c-tests data/fashion-mnist-sample

test-c-checks:
	c++ -x c++ -std=c++11 -Wall -Wextra -Werror -Iinclude -fsyntax-only bindings/c/example.c
	scripts/check-symbols.sh build/lib/libcnn.so include/cnn.h
	scripts/check-inlined.sh build/lib/libcnn.so
	build/bin/c-tests data/fashion-mnist-sample
	cc $(CFLAGS_C) bindings/c/allocs.c $(LINK_C) -o build/bin/allocs
	build/bin/allocs data/fashion-mnist-sample
	cc $(CFLAGS_C) bindings/c/hostile.c $(LINK_C) -o build/bin/hostile
	build/bin/hostile data/fashion-mnist-sample Tests/data/hostile
	rm -rf build/pkgtest && $(MAKE) --no-print-directory install PREFIX=$(CURDIR)/build/pkgtest >/dev/null
	cd build && PKG_CONFIG_PATH=$(CURDIR)/build/pkgtest/lib/pkgconfig \
		cc -Wall -Wextra -Werror ../bindings/c/example.c $$(PKG_CONFIG_PATH=$(CURDIR)/build/pkgtest/lib/pkgconfig pkg-config --cflags --libs cnn) -o pkgtest/example
	cd build && pkgtest/example ../data/fashion-mnist-sample/train-images-idx3-ubyte.gz ../data/fashion-mnist-sample/t10k-images-idx3-ubyte.gz 1 | tail -7
	cd build && pkgtest/example ../data/fashion-mnist-jpeg/train ../data/fashion-mnist-jpeg/test 1 \
		../data/fashion-mnist-jpeg/test/Bag/018.jpg ../data/fashion-mnist-jpeg/test/Sneaker/009.jpg | tail -3

# The default build as an AVX2 and as an SSE4.2 CPU (qemu-user): the C example and `cnn predict`
# run on the level each CPU has and refuse CNN_CPU=avx512 (Tests/portable/run.sh, ~1 min per CPU).
test-portable: build example
	Tests/portable/run.sh build/lib $(BIN)/cnn build/bin/example

# Writes that fail (one write, fsync, close, rename or temporary file, a full tmpfs) keep the file
# already saved; SIGKILL during 100 saves never leaves a torn file (Tests/faults/run.sh).
test-faults: lib
	Tests/faults/run.sh build/lib

# Threads predicting while others train, load, save and free models: same results as alone, and
# between quiet points (every job paused at a quarter, half and the end) no heap bytes left behind
# and no growth of the resident size. SOAK_SECONDS=300 for a long run. The resident size is read at
# the quiet points with glibc's mmap threshold pinned (soak.c says why): the peaks sampled while
# the jobs ran moved by up to 1.39 % with their timing (CI failures at stops 24 and 43); at the
# quiet points it moves by a few KB, and a leak of one 4 KB page per load cycle reads +13 %.
SOAK_SECONDS ?= 30
test-soak: lib
	mkdir -p build/bin
	cc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude bindings/c/soak.c $(LINK_C) -o build/bin/soak
	build/bin/soak data/fashion-mnist-sample $(SOAK_SECONDS)

# libFuzzer + AddressSanitizer harnesses of every parser, FUZZ_SECONDS each (scripts/fuzz.sh).
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

# The Swift suites under AddressSanitizer, the threaded ones under ThreadSanitizer, and the C
# tests against libcnn.so built with each (scripts/sanitize.sh).
sanitize:
	SWIFT=$(SWIFT) scripts/sanitize.sh

# The Python binding's tests, against build/lib/libcnn.so and the cnn tool just built.
# Data-parallel training under Open MPI's mpirun (openmpi-bin): 2 ranks against one process,
# repeatability, checkpoints, errors, a killed rank, the C API and Python (about a minute).
test-mpi: build lib $(VENV)/ready
	PYTHON=$(CURDIR)/$(VENV)/bin/python Tests/mpi/run.sh $(BIN)/cnn build/lib

test-python: build lib $(VENV)/ready
	CNN_LIBRARY=$(CURDIR)/build/lib/libcnn.so CNN_TOOL=$(CURDIR)/$(BIN)/cnn $(VENV)/bin/python -m pytest -q bindings/python/tests

# The Python the tests use: a virtual environment under build/ (made once) that sees the system's
# packages and gets what is missing of numpy, safetensors, pytest, pillow, onnx, onnxruntime and
# onnxscript (torch.onnx.export's default exporter needs it) from PyPI, and PyTorch's CPU build for the parity tests (bindings/python/tests/test_pytorch_parity.py,
# test_onnx.py) from the local wheel pip's find-links offer here (/opt/wheels; about 30 s); where
# there is none they are skipped.
$(VENV)/ready:
	rm -rf $(VENV)
	python3 -m venv --system-site-packages $(VENV) || { echo "make: python3 -m venv failed: install python3-venv (Debian)"; exit 1; }
	missing=$$(for m in $(PY_TEST_DEPS); do $(VENV)/bin/python -c "import $${m%%=*}" 2>/dev/null || echo $${m#*=}; done); \
	if [ -n "$$missing" ]; then $(VENV)/bin/python -m pip install -q --disable-pip-version-check $$missing; fi
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(VENV)/bin/python -m pip install -q --disable-pip-version-check "torch==$(TORCH_CPU)" \
		|| echo "make: torch $(TORCH_CPU) is not available: the PyTorch parity tests will be skipped"
	touch $@

# The Python wheel (distribution swiftcnn): the portable library bundled in a platform wheel, in
# build/dist; test-wheel installs it in a fresh venv and runs README's snippet (Tests/wheel/run.sh).
wheel: lib $(VENV)/ready
	rm -rf build/dist build/wheel-lib bindings/python/build && mkdir -p build/dist build/wheel-lib
	strip --strip-debug -o build/wheel-lib/libcnn.so build/lib/libcnn.so.$(VERSION)   # without debug information: 15 of 24 MB
	CNN_LIBRARY=$(CURDIR)/build/wheel-lib/libcnn.so $(VENV)/bin/python -m pip wheel -q --no-deps --disable-pip-version-check -w build/dist ./bindings/python
	rm -rf bindings/python/build

test-wheel: wheel
	Tests/wheel/run.sh build/dist/swiftcnn-$(VERSION)-*.whl

# Benchmarks (a separate package in Benchmarks/): tables on stdout, JSON in build/bench/.
bench:
	mkdir -p build/bench
	cd Benchmarks && $(SWIFT) build $(RELEASE_FLAGS)
	Benchmarks/.build/release/cnn-bench gemm --out build/bench/gemm.json
	Benchmarks/.build/release/cnn-bench net --out build/bench/net.json
	Benchmarks/.build/release/cnn-bench jpeg --out build/bench/jpeg.json
	@echo "peers: python3 Benchmarks/peers.py build/bench/net.json (pip install torch onnxruntime onnx)"

clean:
	rm -rf .build .build-tests .build-lib .build-lib-avx2 .build-lib-address .build-lib-thread .build-address .build-thread .build-asan .build-tsan build demo-out Benchmarks/.build
