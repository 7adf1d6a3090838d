#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s40:    (not yet run) after run 82 (s39), which put the 96/128-token crossover between 2560 and 2816 (96-token tiles
#           now to 2687):
#           - the defaults' `check --quick`;
#           - 32-token tiles as seven consumer warpgroups and one block an SM (seven consumer warps a scheduler, 64
#             registers) through check, racecheck and memcheck, then A/B'd at 256–768 against the three-warpgroup,
#             two-block default. Predicted −2 to +2%: one more warp a scheduler against 8.9% of GEMM 2's rows past H and
#             no second block to cover each block's prologue and epilogue;
#           - the defaults' bench, gpt-oss-120b (the final defaults, with 2560 and 2688).
# Earlier parts ran as runs 45–79 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s36) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s40 [SECONDS]
set -u
part=${1:-s40}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s40)
        bash $D info check
        v=registered_1_32_4_7_1_1_2_1_0_0_0_1_1
        MOE_CUDA_GEMM=$v bash $D check
        DEBUG_VARIANT=$v RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=$v@256,384,512,768" bash $D abenv
        BENCH_TOKENS=1,8,32,128,256,384,512,768,1024,1088,1280,1408,1536,1792,2048,2304,2560,2688,4096,8192,16384,32768 bash $D bench
        ;;
    *) echo "usage: pending.sh s40 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
