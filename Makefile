# SwiftCNN build wrapper. The two commands README.md gives:
#   make demo    train the reference network on Fashion-MNIST and evaluate it
#   make test    every test: the Swift suites and the command-line tests
#
# TARGET_CPU picks the processor the release build is optimized for. The default, native, is the
# machine that builds; set TARGET_CPU=x86-64-v3 (AVX2) or x86-64 for a binary that runs on others.

TARGET_CPU ?= native
SWIFT ?= swift
RELEASE_FLAGS = -c release -Xswiftc -target-cpu -Xswiftc $(TARGET_CPU) -Xcc -march=$(TARGET_CPU)
BIN = .build/release

.PHONY: all build demo test test-swift test-cli clean

all: build

build:
	$(SWIFT) build $(RELEASE_FLAGS) --product cnn

demo: build
	scripts/demo.sh $(BIN)/cnn

test: test-swift test-cli

test-swift:
	$(SWIFT) test

test-cli: build
	Tests/cli/run.sh $(BIN)/cnn

clean:
	rm -rf .build demo-out
