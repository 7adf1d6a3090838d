#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s47:    (not yet run) the rounded widths as defaults (run 89 won at every size but 8192–32768, where the 192-token
#           kernel stays plain): checked and benched, each crossover between tile sizes tried again in two rounds (the
#           kernels moved by different amounts), the 32-token kernel with n16, n24 and n32 (tensor work 1.48 → 1.24 of
#           its rows at 512 by tile_widths.py), gpt-oss-20b with the plain kernels forced, ep-check.
# Earlier parts ran as runs 45–89 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s44) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8, s42 at 3d048b9, s43 at a7f5ccc, s44 at c474e18, s45 at fb27d54, s46 at 74aac56), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s47 [SECONDS]
set -u
part=${1:-s47}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s47)
        bash $D info check
        BENCH_TOKENS=1,8,32,128,256,512,1024,1536,2048,2560,3072,4096,8192,16384,32768 bash $D bench
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_32_4_3_1_1_2_1_0_24_0_2_1@384,512,768 MOE_CUDA_GEMM=registered_1_32_4_3_1_1_2_1_0_16_0_2_1@192,224 MOE_CUDA_GEMM=registered_1_48_4_3_1_1_2_1_0_16_0_2_1@704,768 MOE_CUDA_GEMM=registered_1_64_4_3_1_1_2_1_0_16_0_2_1_1@960,1024 MOE_CUDA_GEMM=registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1@1280,1344 MOE_CUDA_GEMM=registered_1_64_4_3_1_1_2_1_0_16_0_2_1_1@1536,1664 MOE_CUDA_GEMM=registered_1_128_4_4_1_1_2_1_0_16_0_1_1@2304,2560 MOE_CUDA_GEMM=registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1@2816 MOE_CUDA_GEMM=registered_1_192_4_3_1_1_2_1_0_16_0_1_1@2816 MOE_CUDA_GEMM=registered_1_128_4_4_1_1_2_1_0_16_0_1_1@3072,3328 MOE_CUDA_GEMM=registered_1_192_4_3_1_1_2_1_0_0_0_1_1@4608,5120 MOE_CUDA_GEMM=registered_1_192_4_3_1_1_2_1_0_16_0_1_1@5632,6144" bash $D abenv
        AB_REPEAT=2 AB_PRESET=gpt-oss-20b AB_ENVS="MOE_CUDA_GEMM=registered_1_48_4_3_1_1_2_1_0_0_0_2_1@256 MOE_CUDA_GEMM=registered_1_96_6_5_1_1_2_1_0_0_0_1_1_1@448,576 MOE_CUDA_GEMM=registered_1_192_4_3_1_1_2_1_0_0_0_1_1@1024" bash $D abenv
        bash $D epcheck
        ;;
    *) echo "usage: pending.sh s47 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
