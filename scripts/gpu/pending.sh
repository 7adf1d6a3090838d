#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s26:    (not yet run) the adopted defaults checked and benched: 64-token narrow tiles at 577–1280 tokens (run 67), the
#           staged epilogue's row table (run 67: −2.7 / −4.1% at 32768 tokens); the 64-token kernel against the
#           defaults beside its range (512: staged; 1536: the wide 128-token kernel), predicted +0 to +2% at both.
# Earlier parts ran as runs 45–67 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s25) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s26 [SECONDS]
set -u
part=${1:-s26}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s26)
        bash $D info check checkfull
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_64_4_4_0_1_2_1_0_2@512,1536" bash $D abenv
        BENCH_TOKENS=1,8,32,128,512,768,1024,1280,2048,8192,16384,32768 bash $D bench
        bash $D bench20b
        TIMING_TOKENS=768,1024,1280,32768 bash $D timing
        NCU_TOKENS=1024 NCU_KERNEL=registered_1_64_4_4_0_1_2_1_0_2 NCU_VARIANT=registered_1_64_4_4_0_1_2_1_0_2 bash $D ncustall
        ;;
    *) echo "usage: pending.sh s26 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
