#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s44:    (not yet run) the gather and the reduce with each token's row indices read before its rows
#           (MOE_CUDA_GATHER_HOISTED=1, MOE_CUDA_REDUCE_HOISTED=1): checked, then A/B'd at 2048–32768. Run 85's trace had
#           them at 790 and 757 µs at 32768 tokens (944 MB each, 40% of the copy rate); the plain gather's SASS loads
#           each row index after the previous row's store (LDG, STG, LDG, STG …), the plain reduce's loads are already
#           ahead of its sums. Predicted: the gather −300 to −450 µs at 32768 (−3 to −4% of the layer), −1 to −2% at
#           8192; the reduce level. Then both kernels' ncu sections at 32768, the bench (on whatever card comes: an
#           H200 would be the targets' card), gpt-oss-20b at 384–640 with the 64-token kernel (two blocks an SM) forced
#           against the 96-token default (its GEMM 1 is 4.4 waves at 512; predicted −3 to −8% at 512, level at 384).
# Earlier parts ran as runs 45–83 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s40) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8, s42 at 3d048b9, s43 at a7f5ccc), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s44 [SECONDS]
set -u
part=${1:-s44}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s44)
        bash $D info check
        MOE_CUDA_GATHER_HOISTED=1 MOE_CUDA_REDUCE_HOISTED=1 bash $D check
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GATHER_HOISTED=1@2048,8192,32768 MOE_CUDA_REDUCE_HOISTED=1@2048,8192,32768" bash $D abenv
        bash $D ncurows
        MOE_CUDA_GATHER_HOISTED=1 MOE_CUDA_REDUCE_HOISTED=1 bash $D ncurows
        BENCH_TOKENS=1,8,32,128,256,512,1024,1536,2048,2560,3072,4096,8192,16384,32768 bash $D bench
        AB_REPEAT=2 AB_PRESET=gpt-oss-20b AB_ENVS="MOE_CUDA_GEMM=registered_1_64_4_3_1_1_2_1_0_2_0_2_1_1@384,512,640" bash $D abenv
        ;;
    *) echo "usage: pending.sh s44 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
