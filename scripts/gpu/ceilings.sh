#!/usr/bin/env bash
# The measured ceilings' range over the benches of some device-run logs (each bench prints its own copy rate and cuBLAS
# rate): the figures BENCHMARKS.md states beside each session's calls.
#   usage: scripts/gpu/ceilings.sh LOG...
grep -ho "bandwidth [0-9.]* GB/s\|peak [0-9.]* TFLOP/s" "$@" | awk '
    {if (!($1 in lo) || $2 < lo[$1]) lo[$1] = $2; if ($2 > hi[$1]) hi[$1] = $2; n[$1]++}
    END {for (k in lo) print k, lo[k], "–", hi[k], "(" n[k] " benches)"}'
