#!/usr/bin/env bash
# The registered kernels' producer loop in SASS: instructions from its copy wait (the last `DEPBAR.LE SB0, 0x1`, the
# loop's first) to its commit (the next `LDGDEPBAR`), and the cp.async copies (LDGSTS) among them, per kernel. Session
# 14's lean-producer counts (113 against 159 a chunk, 149 against 191) came from it.
#   usage: scripts/gpu/producer_loop.sh CUBIN KERNEL...
#          CUBIN from scripts/gpu/nvrtc_compile.py; cuobjdump on PATH (pip's nvidia-cuda-cuobjdump)
set -euo pipefail
cubin=$1; shift
for kernel in "$@"; do
    cuobjdump -sass -fun "$kernel" "$cubin" | grep -E '^\s+/\*[0-9a-f]+\*/' | awk -v name="$kernel" '
        { line[NR] = $0 }
        /DEPBAR\.LE SB0, 0x1/ { start = NR }
        END {
            for (i = start + 1; i <= NR; i++) if (line[i] ~ /LDGDEPBAR/) { stop = i; break }
            copies = 0
            for (i = start; i <= stop; i++) if (line[i] ~ /LDGSTS/) copies++
            printf "%s: %d instructions, %d LDGSTS\n", name, stop - start, copies
        }'
done
