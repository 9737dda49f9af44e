#!/usr/bin/env bash
# Keeps include/cnn.h and libcnn.so in step: every function the header declares is exported, and
# nothing else is; the library's version is the header's.
set -euo pipefail
LIB=${1:-build/lib/libcnn.so}
HEADER=${2:-include/cnn.h}
declared=$(grep -v '^ *\*\|^/\*\|typedef' "$HEADER" | grep -oE '\bcnn_[a-z0-9_]+\(' | tr -d '(' | sort -u)
exported=$(nm -D --defined-only "$LIB" | awk '$2 == "T" || $2 == "D" || $2 == "B" || $2 == "W" {print $3}' | sed 's/@.*//' | sort -u)
others=$(nm -D --defined-only "$LIB" | awk '$2 != "A"' | grep -v ' cnn_' || true)
status=0
if [[ "$declared" != "$exported" ]]; then
    echo "header and library differ:"
    diff <(echo "$declared") <(echo "$exported") | sed 's/^</  declared only:/; s/^>/  exported only:/' | grep only || true
    status=1
fi
if [[ -n "$others" ]]; then
    echo "symbols other than cnn_* are exported:"; echo "$others" | head; status=1
fi
# Self-contained: the Swift runtime, libjpeg and zlib are linked in; only the C and C++ runtimes remain.
others=$(ldd "$LIB" | awk '{print $1}' | grep -vE '^(linux-vdso\.so\.1|/lib64/ld-linux-x86-64\.so\.2|libc\.so\.6|libm\.so\.6|libstdc\+\+\.so\.6|libgcc_s\.so\.1)$' || true)
if [[ -n "$others" ]]; then
    echo "libcnn.so needs libraries besides libc, libm, libstdc++ and libgcc_s:"; echo "$others"; status=1
fi
echo "$(echo "$declared" | wc -l) functions declared, $(echo "$exported" | wc -l) exported"
exit $status
