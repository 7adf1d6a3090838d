#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s42:    (not yet run) six load slots for the 96-token kernel (five consumer warpgroups) and the 192-token one, each
#           through check, racecheck and memcheck, then A/B'd against the defaults at 1536–2560 and 4096–8192. Predicted
#           −1 to −4% where the layer reads its weights at under 55% of the copy rate (1536–2560), level at 8192. Then
#           the 192-token default's crossovers: forced against the 128-token default at 2816–3584, the 128-token kernel
#           forced at 4096, the 256-token kernel forced at 12288–32768 and on gpt-oss-20b at 1024–8192. Predicted: the
#           192-token kernel within 1% of the 128-token one at 2816–3328 and ahead at 3584 (experts past 128 rows take
#           one tile, not two); the 256-token kernel level or ahead at 32768 (four 256-row tiles an expert against six).
#           Then the bench, the 96-token kernel's ncu sections at 2048 (DRAM and tensor-pipe use), the trace.
# Earlier parts ran as runs 45–83 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s40) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s42 [SECONDS]
set -u
part=${1:-s42}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s42)
        bash $D info check
        G96L6=MOE_CUDA_GEMM=registered_1_96_6_5_1_1_2_1_0_0_0_1_1_1 G192L6=MOE_CUDA_GEMM=registered_1_192_6_3_1_1_2_1_0_0_0_1_1
        for v in registered_1_96_6_5_1_1_2_1_0_0_0_1_1_1 registered_1_192_6_3_1_1_2_1_0_0_0_1_1; do
            MOE_CUDA_GEMM=$v bash $D check
            DEBUG_VARIANT=$v RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        done
        G192=MOE_CUDA_GEMM=registered_1_192_4_3_1_1_2_1_0_0_0_1_1 G128=MOE_CUDA_GEMM=registered_1_128_4_4_1_1_2_1_0_0_0_1_1
        G256=MOE_CUDA_GEMM=registered_1_256_4_2_1_1_2_1_0_0_0_1_1
        AB_REPEAT=2 AB_ENVS="$G96L6@1536,2048,2560 $G192L6@4096,6144,8192 $G192@2816,3328,3584 $G128@4096 \
$G256@12288,16384,32768" bash $D abenv
        BENCH_TOKENS=1,8,32,128,256,512,1024,1536,2048,2560,3072,4096,6144,8192,16384,32768 bash $D bench
        NCU_KERNEL=registered NCU_VARIANT=registered_1_96_4_5_1_1_2_1_0_0_0_1_1_1 NCU_TOKENS=2048 bash $D ncudecoded
        TRACE_TOKENS=2048,8192,32768 bash $D trace
        AB_REPEAT=2 AB_PRESET=gpt-oss-20b AB_ENVS="$G256@1024,2048,8192" bash $D abenv
        ;;
    *) echo "usage: pending.sh s42 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
