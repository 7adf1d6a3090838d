#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s49:    (not yet run) session 25's final defaults checked and benched (s48's steps, never run), and session 26's
#           fitted tiles (MOE_CUDA_FIT_TILES=1: an expert's tiles keep their count but take the widths that sum least;
#           RoutingPlan.tileSizes): checked (check --quick, cuda-debug's stage checks at 20b sizes where experts span
#           several tiles), then with the rounded 192-token kernel against the plain one past 5375 tokens (tensor work
#           by tile_widths.py --fitted: 1.062 / 1.033 / 1.016 of the rows against 1.121 / 1.067 / 1.032 at 8192 /
#           16384 / 32768; predicted −1.5 to −3%, −1 to −1.6%, −0.5 to −0.8%), and on gpt-oss-20b (2048: 1.059 against
#           1.117; the 96-token kernel at 768 / 1024: 1.083 / 1.059 against the defaults' 1.156 / 1.102), and on 120b
#           the 96-token kernel fitted against the 128-token default at 2688 / 3072 (1.082 / 1.078 against 1.176 /
#           1.151, but more tiles). Then s48's hand-over, and the ring counters build (MOE_CUDA_RING_COUNTERS=1: 1–3 of
#           ~100 instructions a chunk fewer; predicted 0 to −1%).
# Earlier parts ran as runs 45–90 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s44) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8, s42 at 3d048b9, s43 at a7f5ccc, s44 at c474e18, s45 at fb27d54, s46 at 74aac56, s47 at fe11cc5), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s49 [SECONDS]
set -u
part=${1:-s49}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s49)
        bash $D info check
        MOE_CUDA_FIT_TILES=1 bash $D check
        MOE_CUDA_FIT_TILES=1 DEBUG_TOKENS=700,2000 NEW_VARIANTS="registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1 registered_1_192_4_3_1_1_2_1_0_16_0_1_1 registered_1_192_4_3_1_1_2_1_0_0_0_1_1" bash $D debugnew
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_FIT_TILES=1+MOE_CUDA_GEMM=registered_1_192_4_3_1_1_2_1_0_16_0_1_1@5376,8192,16384,32768" bash $D abenv
        AB_REPEAT=2 AB_PRESET=gpt-oss-20b AB_ENVS="MOE_CUDA_FIT_TILES=1+MOE_CUDA_GEMM=registered_1_192_4_3_1_1_2_1_0_16_0_1_1@1344,2048,4096,8192 MOE_CUDA_FIT_TILES=1+MOE_CUDA_GEMM=registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1@768,1024" bash $D abenv
        BENCH_TOKENS=1,8,32,128,200,256,512,736,1024,1536,2048,2560,3072,3200,4096,5376,8192,16384,32768 bash $D bench
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_FIT_TILES=1+MOE_CUDA_GEMM=registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1@2688,3072" bash $D abenv
        MOE_CUDA_FIT_TILES=1 bash $D epcheck
        MOE_CUDA_HANDOVER_REGISTERED=1 bash $D check
        AB_REPEAT=2 AB_PRESET=gpt-oss-20b AB_ENVS="MOE_CUDA_HANDOVER_REGISTERED=1@256,512,1024" bash $D abenv
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_RING_COUNTERS=1@1024,2048,8192" bash $D abenv
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1@1088,1280,1407" bash $D abenv
        bash $D bench20b
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_HANDOVER_REGISTERED=1@512,2048,8192" bash $D abenv
        NCU_KERNEL=registered NCU_VARIANT=registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1 NCU_TOKENS=2048 bash $D ncudecoded
        bash $D epcheck
        ;;
    *) echo "usage: pending.sh s49 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
