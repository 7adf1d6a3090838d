#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s41:    (not yet run) 192-token tiles with three consumer warpgroups (three warps a scheduler where the 256-token
#           kernel has two; two A-fragment buffers at 56 / 152 registers, or one at 88 / 136), each through check,
#           racecheck and memcheck, then A/B'd at 3072 (against the 128-token default) and 4096–8192 (256-token).
#           Predicted −2 to −6% at 4096–6144, level at 8192 (experts of 193–256 rows take two tiles), worse at 3072.
#           Then, as time allows, the defaults' bench (gpt-oss-120b).
# Earlier parts ran as runs 45–83 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s40) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s41 [SECONDS]
set -u
part=${1:-s41}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s41)
        bash $D info
        for v in registered_1_192_4_3_1_1_2_1_0_0_0_1_1 registered_1_192_4_3_1_1_2_1_0_0_0_1_1_1; do
            MOE_CUDA_GEMM=$v bash $D check
            DEBUG_VARIANT=$v RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        done
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_192_4_3_1_1_2_1_0_0_0_1_1@3072,4096,6144,8192 \
MOE_CUDA_GEMM=registered_1_192_4_3_1_1_2_1_0_0_0_1_1_1@3072,4096,6144,8192" bash $D abenv
        BENCH_TOKENS=1,8,32,128,256,512,1024,1536,2048,2560,4096,8192,32768 bash $D bench
        ;;
    *) echo "usage: pending.sh s41 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
