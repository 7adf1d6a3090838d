#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s59:    the final defaults of session 30: the plan in place (moe_topk, moe_plan_place) up to MOE_PLAN_IN_PLACE_COUNTS,
#           the four launches past it (moe_topk_scan removed: run 105 had it 0.3% behind them at 2048–4096 tokens).
#           Checks (`check`, stage by stage on 20b at 300 / 2000 tokens, memcheck) and both benches; then the in-place
#           bound past 4096 histogram ints (MOE_CUDA_PLAN_IN_PLACE_COUNTS=8192 / 16384: 2048 / 4096 tokens of 120b in
#           place, 32 / 64 KB of histograms a placement block), stage-checked on 20b at 8192 tokens (8192 ints) and
#           A/B'd. Predicted: −0 to −0.5% at 2048, level or worse at 4096 (768 / 1536 blocks each copying the histograms).
# Earlier parts ran as runs 45–105 (runs 92, 94, 97, 98 and 100 were direct device-check.sh steps) (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s58) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8, s42 at 3d048b9, s43 at a7f5ccc, s44 at c474e18, s45 at fb27d54, s46 at 74aac56, s47 at fe11cc5, s49 at 8317dfc, s50 at 58c18d3, s51 at 3e43dd2, s52 at a257bbd, s53 at 1142318, s54 at abd7bb4, s55 at e43af17, s57 at f41bd80, s58 at 22e13f8; s48 was folded into s49; s56 was never committed: its steps are the commands run 103 printed, docs/cuda-runs/session30/run103/run.log), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s59 [SECONDS]
set -u
part=${1:-s59}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s59)
        bash $D info check
        NEW_VARIANTS=registered_1_32_4_3_1_1_2_1_0_24_0_2_1 DEBUG_TOKENS=300,2000 bash $D debugnew
        DEBUG_VARIANT=registered_1_32_4_3_1_1_2_1_0_24_0_2_1 MEMCHECK_TOKENS=200,300 bash $D memcheck
        BENCH_TOKENS=1,8,32,128,256,512,1024,1088,1280,1407,1536,2048,2560,3072,4096,8192,16384,32768 bash $D bench
        bash $D bench20b
        MOE_CUDA_PLAN_IN_PLACE_COUNTS=16384 NEW_VARIANTS=registered_1_192_4_3_1_1_2_1_0_16_0_1_1 DEBUG_TOKENS=8192 bash $D debugnew
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_PLAN_IN_PLACE_COUNTS=8192@2048 MOE_CUDA_PLAN_IN_PLACE_COUNTS=16384@2048,4096" bash $D abenv
        ;;
    *) echo "pending.sh: no part \"$part\" pending (see the header)" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
