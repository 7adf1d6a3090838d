#!/usr/bin/env bash
# Which kernels of OLD.cubin compile to different SASS in NEW.cubin (addresses and encodings stripped); prints each one
# that differs, each one only OLD has, and a count. How sessions 15–16 checked that a change left the measured kernels as
# they were. DIFF=1 also prints the differing lines of each kernel that differs (session 22: the E = 1 kernels differ
# from their session 21 forms only in the epilogue barrier's id).
#   usage: PATH=…/nvidia/cu13/bin:$PATH [DIFF=1] [PARAMS=1] scripts/gpu/sass_same.sh OLD.cubin NEW.cubin
set -euo pipefail
# PARAMS=1: constant-bank operands c[0x0][…] compared without their offsets (a field added to a parameter struct moves
# them; session 30 checked the routing kernels that way after MoERoutingParams gained `gathered`).
sass() {
    cuobjdump -sass -fun "$1" "$2" | sed -E 's#/\*[0-9a-f]+\*/##; s#/\* 0x[0-9a-f]+ \*/##' \
        | if [ "${PARAMS:-0}" = 1 ]; then sed -E 's#c\[0x0\]\[0x[0-9a-f]+\]#c[0x0][P]#g'; else cat; fi
}
kernels() { cuobjdump -res-usage "$1" | grep -o "Function [A-Za-z_0-9]*" | awk '{print $2}'; }
new=$(kernels "$2")
differ=0 total=0 gone=0
for f in $(kernels "$1"); do
    if ! grep -qx "$f" <<< "$new"; then echo "only in OLD: $f"; gone=$((gone + 1)); continue; fi
    total=$((total + 1))
    old=$(sass $f "$1") newer=$(sass $f "$2")  # each kernel disassembled once, compared and diffed from these
    if [ "$old" != "$newer" ]; then
        echo "differs: $f"; differ=$((differ + 1))
        if [ "${DIFF:-0}" = 1 ]; then diff <(echo "$old") <(echo "$newer") | grep '^[<>]' | tr -s ' ' || true; fi
    fi
done
echo "$differ of $total kernels differ; $gone only in OLD"
