#!/usr/bin/env bash
# The kernels' vector lane moves stay inline: no engine function calls the standard library's
# SIMD half accessors (evenHalf, oddHalf, lowHalf, highHalf) or its generic SIMD conversions.
# They are generic library code that the inliner may leave as calls when they gain callers
# elsewhere, and a call per vector in a hot loop cost ResNet-20's batch-1 inference 18 % once
# (the engine uses unzipLanes, zipLanes, pairHalves and widened instead).
set -euo pipefail
LIB=${1:-build/lib/libcnn.so}
calls=$(objdump -d --no-show-raw-insn "$LIB" |
    awk '/^[0-9a-f]+ <.*>:$/ {fn = $2} /call/ && fn ~ /^<\$s(3CNN|7CNNAVX2|9CNNAVX512)/ {print fn, $NF}' |
    grep -E '\$ss[0-9]+SIMD[0-9]+V[0-9]*(evenHalf|oddHalf|lowHalf|highHalf)|\$ss[0-9]+SIMD[0-9]+VsSBRzrlEyAByx' || true)
if [[ -n "$calls" ]]; then
    echo "engine functions call SIMD lane accessors out of line:"
    echo "$calls" | sort | uniq -c | head -20
    exit 1
fi
echo "no out-of-line SIMD lane moves in $LIB"
