#!/usr/bin/env bash
# Which kernels of OLD.cubin compile to different SASS in NEW.cubin (addresses and encodings stripped); prints each one
# that differs and a count. How sessions 15–16 checked that a change left the measured kernels as they were.
#   usage: PATH=…/nvidia/cu13/bin:$PATH scripts/gpu/sass_same.sh OLD.cubin NEW.cubin
set -euo pipefail
sass() { cuobjdump -sass -fun "$1" "$2" | sed -E 's#/\*[0-9a-f]+\*/##; s#/\* 0x[0-9a-f]+ \*/##'; }
differ=0 total=0
for f in $(cuobjdump -res-usage "$1" | grep -o "Function [A-Za-z_0-9]*" | awk '{print $2}'); do
    total=$((total + 1))
    if [ "$(sass $f "$1" | md5sum)" != "$(sass $f "$2" | md5sum)" ]; then echo "differs: $f"; differ=$((differ + 1)); fi
done
echo "$differ of $total kernels differ"
