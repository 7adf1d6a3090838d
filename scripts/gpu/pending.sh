#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s50:    (not yet run) session 26's final defaults (fitted tiles for every registered kernel, the rounded 192-token
#           kernel from 3200 tokens; run 91 measured each against the plain 192-token kernel at 5376–32768 but not the
#           whole; the registered hand-over where GEMM 1 runs ≤ 8 waves: gpt-oss-20b at 50–1536 tokens): checked,
#           benched on 120b and 20b, ep-checked; the hand-over forced off on 20b at 64 / 200 / 700 / 1280 (unmeasured
#           sizes; predicted +1 to +4%); the 64-token kernel with n32 / n40 / n48 / n64 against
#           n32 / n48 / n64 (built in session 25, never run; tile_widths.py: 1.11 of the rows against 1.16–1.23;
#           predicted −1 to −3%); the 96-token kernel's GEMM 1 under ncu at 2048 (run 85's tensor pipe 56%).
# Earlier parts ran as runs 45–91 (run 92 was a direct device-check.sh abenv) (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s44) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8, s42 at 3d048b9, s43 at a7f5ccc, s44 at c474e18, s45 at fb27d54, s46 at 74aac56, s47 at fe11cc5, s49 at 8317dfc; s48 was folded into s49), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s50 [SECONDS]
set -u
part=${1:-s50}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s50)
        bash $D info check
        BENCH_TOKENS=1,8,32,128,200,256,512,736,1024,1536,2048,2560,3072,3200,4096,5376,8192,16384,32768 bash $D bench
        bash $D bench20b
        bash $D epcheck
        AB_REPEAT=2 AB_PRESET=gpt-oss-20b AB_ENVS="MOE_CUDA_HANDOVER_REGISTERED=0@64,200,700,1280" bash $D abenv
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1@1088,1280,1407" bash $D abenv
        NCU_KERNEL=registered NCU_VARIANT=registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1 NCU_TOKENS=2048 bash $D ncudecoded
        ;;
    *) echo "usage: pending.sh s50 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
