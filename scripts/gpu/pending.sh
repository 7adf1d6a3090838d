#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s32:    (not yet run) the defaults adopted from run 73 (two blocks an SM from 320 tokens): the quick check and the bench;
#           then two blocks an SM at 192–288 tokens (the resident kernel at 192–256, staged at 288).
# Earlier parts ran as runs 45–73 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s31) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s32 [SECONDS]
set -u
part=${1:-s32}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s32)
        bash $D info check
        BENCH_TOKENS=1,8,32,128,256,320,384,512,768,1024,1280,1536,2048,2304,4096,8192,16384,32768 bash $D bench
        bash $D bench20b
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_64_4_2_1_1_2_1_0_2_0_2@192,256,288" bash $D abenv
        ;;
    *) echo "usage: pending.sh s32 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
