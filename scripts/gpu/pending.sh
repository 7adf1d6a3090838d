#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s48:    (not yet run) session 25's final defaults (rounded widths everywhere but the 192-token kernel past 5375
#           tokens, run 90's crossovers; the plain kernels they replaced removed): checked, benched on gpt-oss-120b (the
#           new crossovers' sizes included) and 20b, the 96-token kernel's GEMM 1 under ncu at 2048 (run 85's tensor
#           pipe 56%), the 64-token kernel with n32 / n40 / n48 / n64 against n32 / n48 / n64 (tensor work 1.11 of the
#           rows against 1.16–1.23 by tile_widths.py), the registered kernels' tile hand-over (built, never run:
#           MOE_CUDA_HANDOVER_REGISTERED=1; predicted −2 to −6% on gpt-oss-20b at 256–1024, where GEMM 1 runs 3.6–7.3
#           waves and GEMM 2 1.8–3.6 by arithmetic, docs/bench-cuda.md "Next" 1a'; −0.5 to +1% on 120b at 512–8192),
#           ep-check.
# Earlier parts ran as runs 45–90 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s44) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8, s42 at 3d048b9, s43 at a7f5ccc, s44 at c474e18, s45 at fb27d54, s46 at 74aac56, s47 at fe11cc5), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s48 [SECONDS]
set -u
part=${1:-s48}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s48)
        bash $D info check
        BENCH_TOKENS=1,8,32,128,200,256,512,736,1024,1536,2048,2560,3072,3200,4096,5376,8192,16384,32768 bash $D bench
        bash $D bench20b
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1@1088,1280,1407" bash $D abenv
        MOE_CUDA_HANDOVER_REGISTERED=1 bash $D check
        AB_REPEAT=2 AB_PRESET=gpt-oss-20b AB_ENVS="MOE_CUDA_HANDOVER_REGISTERED=1@256,512,1024" bash $D abenv
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_HANDOVER_REGISTERED=1@512,2048,8192" bash $D abenv
        NCU_KERNEL=registered NCU_VARIANT=registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1 NCU_TOKENS=2048 bash $D ncudecoded
        bash $D epcheck
        ;;
    *) echo "usage: pending.sh s48 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
