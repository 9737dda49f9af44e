#!/usr/bin/env bash
# The wheel as a user gets it: a platform tag, a bundled libcnn.so that needs only the C and C++
# runtimes, and README's Python snippet run from a fresh venv (no system packages, CNN_LIBRARY
# unset, outside the repository).
#   Tests/wheel/run.sh WHEEL
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WHEEL=$(realpath "$1")
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
name=$(basename "$WHEEL")
[[ $name =~ ^swiftcnn-[0-9]+\.[0-9]+\.[0-9]+-py3-none-(linux|manylinux[0-9_]*)_x86_64\.whl$ ]] \
    || { echo "FAIL wheel name/tag: $name"; exit 1; }
echo "ok   tag: $name ($(du -h "$WHEEL" | cut -f1))"
python3 -m zipfile -e "$WHEEL" "$T/unpacked"
[[ -n $(find "$T/unpacked" -path "*/swiftcnn-*.dist-info/*" -name "LICENSE*") ]] || { echo "FAIL the wheel carries no LICENSE"; exit 1; }
[[ -e $(echo "$T"/unpacked/cnn/libcnn.so) ]] || { echo "FAIL no cnn/libcnn.so at the wheel's root (platlib)"; exit 1; }
grep -q "^# SwiftCNN for Python" "$T/unpacked"/swiftcnn-*.dist-info/METADATA || { echo "FAIL the README is not the description"; exit 1; }
scripts=$ROOT/scripts
"$scripts/check-symbols.sh" "$T/unpacked/cnn/libcnn.so" "$ROOT/include/cnn.h" >/dev/null \
    || { "$scripts/check-symbols.sh" "$T/unpacked/cnn/libcnn.so" "$ROOT/include/cnn.h"; exit 1; }
echo "ok   bundled library: exports the header's functions; ldd: $(ldd "$T/unpacked/cnn/libcnn.so" | awk '{print $1}' | grep -v vdso | tr '\n' ' ')"
python3 -m venv "$T/venv"
"$T/venv/bin/python" -m pip install -q --disable-pip-version-check "$WHEEL"
# README's snippet, in a folder holding only the data it reads.
mkdir "$T/user" && ln -s "$ROOT/data" "$T/user/data"
python3 - "$ROOT/README.md" "$T/user/snippet.py" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
snippet = re.search(r"```python\n(import cnn\n.*?)```", text, re.S).group(1)
open(sys.argv[2], "w").write(snippet + "print('runtime:', cnn.runtime_info(), 'library:', cnn.library_path)\n")
PY
(cd "$T/user" && env -u CNN_LIBRARY "$T/venv/bin/python" snippet.py >out 2>&1) || { cat "$T/user/out"; echo "FAIL README's snippet"; exit 1; }
grep -q "library: $T/venv/lib/python3[0-9.]*/site-packages/cnn/libcnn.so" "$T/user/out" \
    || { cat "$T/user/out"; echo "FAIL the snippet did not use the bundled library"; exit 1; }
echo "ok   README's snippet in a fresh venv: $(grep -c . "$T/user/out") lines, $(grep runtime: "$T/user/out" | sed 's/ library:.*//')"
