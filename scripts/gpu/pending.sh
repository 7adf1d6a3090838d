#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s22:    (not yet run) top-k at two blocks an SM with a shared-memory histogram: the conformance suite, memcheck and
#           racecheck through it (tiny, 300 tokens), EP bit-identity, per-kernel timing at 2048–32768, the large rows.
# Earlier parts ran as runs 45–63 (policy, stalls, rows, registered, final, next, wide, lean, one, s18, s19, s20, s21) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663), their commands, predictions and figures in docs/bench-cuda.md and
# BENCHMARKS.md. A part leaves this file once it has run.
#   usage (device): bash .device/pending.sh s22 [SECONDS]
set -u
part=${1:-s22}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s22)
        bash $D info check
        DEBUG_VARIANT=registered_1_128_4_4_0_1_2_1 RACE_TOKENS=300 MEMCHECK_TOKENS=300 bash $D racedefault memcheck
        bash $D epcheck
        TIMING_TOKENS=2048,8192,32768 bash $D timing
        BENCH_TOKENS=2048,8192,16384,32768 bash $D bench
        ;;
    *) echo "usage: pending.sh s22 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
