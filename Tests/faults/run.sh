#!/usr/bin/env bash
# Faults during writes (`make test-faults`): a model is saved over an existing file while one
# write, fsync, close, rename or temporary-file creation fails (an LD_PRELOAD library, inject.c),
# on a full file system (a small tmpfs, where mounting one is allowed), and while the saving
# process is killed with SIGKILL at random moments (KILLS times, default 100). The save must report
# the error and the file already there must stay byte for byte what it was; a killed save must
# leave either the old or the new file at the destination, never a torn one.
#
#   Tests/faults/run.sh LIBDIR     (build/lib)
# Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
LIB=${1:-build/lib}
KILLS=${KILLS:-100}
OUT=build/faults
mkdir -p $OUT
T=$(mktemp -d /tmp/cnn-faults-XXXXXX)
trap 'rm -rf "$T"; umount "$T/full" 2>/dev/null || true' EXIT
cc -O2 -Wall -Wextra -Werror -shared -fPIC Tests/faults/inject.c -o $OUT/inject.so -ldl || exit 1
cc -std=c99 -O2 -Wall -Wextra -Werror -Iinclude Tests/faults/save.c -L"$LIB" -lcnn -Wl,-rpath,"$PWD/$LIB" -o $OUT/save || exit 1
passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

$OUT/save 1 "$T/old.ref" && $OUT/save 2 "$T/new.ref" || { echo "cannot save"; exit 1; }
cmp -s "$T/old.ref" "$T/new.ref" && bad "the two models are the same file"

echo "one failing call:"
for fault in write:1 write:2 write:3 write:4 write:5 write:6 write:12 fsync:1 close:1 rename:1 open:1 fsync:2 write:1000; do
    cp "$T/old.ref" "$T/model.safetensors"
    CNN_FAULT=$fault LD_PRELOAD=$PWD/$OUT/inject.so $OUT/save 2 "$T/model.safetensors" 2> "$T/err"
    status=$?
    fired=$(grep -c "^inject:" "$T/err")
    message=$(grep -v "^inject:" "$T/err" | head -1)
    leftovers=$(find "$T" -name 'model.safetensors.tmp-*' | wc -l)
    if [[ $fired -eq 1 && $fault != fsync:2 ]]; then
        # fsync:2 is the folder's, after the rename: the new file is complete and in place.
        [[ $status -eq 1 ]] && ok || bad "$fault: exit status $status"
        [[ $message == *cnn_model_save*"(the destination is unchanged)"* ]] && ok || bad "$fault: message '$message'"
        cmp -s "$T/old.ref" "$T/model.safetensors" && ok || bad "$fault: the existing file changed"
        echo "  $fault: $message"
    else
        [[ $status -eq 0 ]] && ok || bad "$fault: status $status without a failure ($message)"
        cmp -s "$T/new.ref" "$T/model.safetensors" && ok || bad "$fault: the new file is not the model saved"
        echo "  $fault: $([[ $fired -eq 1 ]] && echo "failed after the rename: saved" || echo "not reached: saved")"
    fi
    [[ $leftovers -eq 0 ]] && ok || bad "$fault: $leftovers temporary files left"
done

echo "a full file system:"
mkdir -p "$T/full"
if mount -t tmpfs -o size=2500k tmpfs "$T/full" 2>/dev/null; then
    cp "$T/old.ref" "$T/full/model.safetensors"     # 1.7 MB used, 0.8 MB free: the new one cannot fit
    $OUT/save 2 "$T/full/model.safetensors" 2> "$T/err"
    status=$?
    [[ $status -eq 1 ]] && ok || bad "full disk: exit status $status"
    grep -q "No space left" "$T/err" && ok || bad "full disk: message '$(cat "$T/err")'"
    cmp -s "$T/old.ref" "$T/full/model.safetensors" && ok || bad "full disk: the existing file changed"
    [[ $(find "$T/full" -name '*.tmp-*' | wc -l) -eq 0 ]] && ok || bad "full disk: temporary file left"
    echo "  $(head -1 "$T/err")"
    umount "$T/full"
else
    echo "  skipped: mounting a tmpfs is not allowed here"
fi

echo "SIGKILL at random moments of $KILLS saves:"
cp "$T/old.ref" "$T/model.safetensors"
torn=0
for ((i = 0; i < KILLS; i++)); do
    $OUT/save 1 "$T/model.safetensors" loop 2>/dev/null &
    pid=$!
    sleep "0.0$((RANDOM % 60 + 5))"
    kill -9 $pid
    wait $pid 2>/dev/null
    if ! cmp -s "$T/old.ref" "$T/model.safetensors" && ! cmp -s "$T/new.ref" "$T/model.safetensors"; then
        torn=$((torn + 1))
        cp "$T/model.safetensors" "$T/torn-$i"
    fi
done
left=$(find "$T" -name 'model.safetensors.tmp-*' | wc -l)
[[ $torn -eq 0 ]] && ok || bad "$torn of $KILLS kills left a torn file at the destination"
echo "  $KILLS kills: $torn torn files at the destination; $left temporary files left beside it (a killed process cannot remove its own)"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
