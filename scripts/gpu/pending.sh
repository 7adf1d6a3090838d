#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s38:    (not yet run) after run 80 (s37: 64-token tiles with one A-fragment buffer, three consumer warpgroups and two
#           blocks an SM, −5.2 / −5.0% at 1280, −2.8 / −2.6% at 1536 against the defaults there, level at 1024):
#           - three kernels with five or six consumer warpgroups and one block an SM, setmaxnreg giving the consumers
#             more registers than the launch's 65536 / threads: 96-token tiles with five (one A-fragment buffer, 88
#             registers), 64-token tiles with two buffers and five (88) or six (80); each through check, racecheck and
#             memcheck, then A/B'd against the defaults. Predicted: the 96-token one −2 to −5% at 1792–2304 (five warps
#             a scheduler where the default has four); the 64-token ones −1 to −3% against run 80's one-buffer kernel at
#             1280–1536 (two buffers at five or six warps; GEMM 2 of the six-warpgroup form runs 384-row blocks over
#             2880 rows, 6.7% of its rows past H);
#           - run 80's one-buffer 64-token kernel at 1152 (against the 48-token default) and 1792–2304 (96-token), for
#             its range.
# Earlier parts ran as runs 45–79 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s36) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s38 [SECONDS]
set -u
part=${1:-s38}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s38)
        bash $D info
        G=registered_1
        for v in ${G}_96_4_5_1_1_2_1_0_0_0_1_1_1 ${G}_64_4_5_1_1_2_1_0_2_0_1_1 ${G}_64_4_6_1_1_2_1_0_2_0_1_1; do
            MOE_CUDA_GEMM=$v bash $D check
            DEBUG_VARIANT=$v RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        done
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=${G}_96_4_5_1_1_2_1_0_0_0_1_1_1@1536,1792,2048,2304,3072 \
MOE_CUDA_GEMM=${G}_64_4_3_1_1_2_1_0_2_0_2_1_1@1152,1280,1536,1792,2048,2304 \
MOE_CUDA_GEMM=${G}_64_4_5_1_1_2_1_0_2_0_1_1@1280,1536,1792,2048 \
MOE_CUDA_GEMM=${G}_64_4_6_1_1_2_1_0_2_0_1_1@1280,1536,1792,2048" bash $D abenv
        ;;
    *) echo "usage: pending.sh s38 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
