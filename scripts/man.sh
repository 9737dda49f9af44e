#!/usr/bin/env bash
# Writes the cnn(1) manual page to stdout, made from the tool's own --help texts, so the manual
# and `cnn COMMAND --help` cannot disagree.
#   scripts/man.sh .build/release/cnn > cnn.1
set -euo pipefail
CNN=${1:-.build/release/cnn}
version=$("$CNN" --version | awk '{print $2}')
# roff: backslashes escaped, lines starting with . or ' protected.
roff() { sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/"; }
cat <<HEAD
.TH CNN 1 "" "SwiftCNN $version" "User Commands"
.SH NAME
cnn \- train, evaluate and run convolutional networks (SwiftCNN)
.SH SYNOPSIS
.B cnn
.I command
[\fIoptions\fR]
.SH DESCRIPTION
.nf
HEAD
"$CNN" --help | roff
for command in train eval predict summary export import idx2jpeg; do
    echo ".fi"
    echo ".SH \"CNN $(echo $command | tr a-z A-Z)\""
    echo ".nf"
    "$CNN" help "$command" | roff
done
cat <<TAIL
.fi
.SH ENVIRONMENT
.TP
.B CNN_NUM_THREADS
Worker threads when --threads is not given (default: every CPU the process may use).
.TP
.B CNN_MEMORY_LIMIT
The most memory one step may allocate (default: half the physical memory).
.TP
.B CNN_CPU
Caps the kernel level: avx512, avx2 or baseline.
.SH SEE ALSO
README.md and include/cnn.h of SwiftCNN.
TAIL
