#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s39:    (not yet run) after runs 80–81 (s37, s38), which made 64-token tiles with one A-fragment buffer (three consumer
#           warpgroups, two blocks an SM) the default at 1088–1407 tokens and 96-token tiles with five consumer
#           warpgroups and one block an SM at 1408–2559:
#           - the new defaults' `check --quick` and `ep-check.sh check`;
#           - the crossovers, each side forced against the default on the other: the 96-token kernel at 1280 (against the
#             64-token one) and 2560–2816 (128-token); the 64-token kernel at 1024 (48-token) and 1408–1536 (96); the
#             48-token kernel at 1088; the 128-token kernel at 2304–2432. Predicted: each default within 1% of the
#             forced kernel next to its edge (run 81 put the 64/96 crossover between 1280 and 1536, the 96/128 one
#             between 2304 and 3072, the 48/64 one between 1024 and 1152);
#           - the defaults' bench, gpt-oss-120b (with 1088, 1408, 1792, 2560) and 20b.
# Earlier parts ran as runs 45–79 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s36) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s39 [SECONDS]
set -u
part=${1:-s39}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s39)
        bash $D info check epcheck
        G=registered_1
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=${G}_96_4_5_1_1_2_1_0_0_0_1_1_1@1280,2560,2816 \
MOE_CUDA_GEMM=${G}_64_4_3_1_1_2_1_0_2_0_2_1_1@1024,1408,1536 MOE_CUDA_GEMM=${G}_48_4_3_1_1_2_1_0_0_0_2_1@1088 \
MOE_CUDA_GEMM=${G}_128_4_4_1_1_2_1_0_0_0_1_1@2304,2432" bash $D abenv
        BENCH_TOKENS=1,8,32,128,256,384,512,768,1024,1088,1280,1408,1536,1792,2048,2304,2560,4096,8192,16384,32768 bash $D bench bench20b
        ;;
    *) echo "usage: pending.sh s39 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
