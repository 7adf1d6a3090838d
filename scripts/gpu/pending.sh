#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s53:    MOE_CUDA_SHARED_LOADS=1 (session 28): the registered consumers' code and scale loads through 32-bit shared
#           addresses, not generic pointers. Fast path a chunk by `wgmma_loops.py` (NVRTC 13.0): the 64-token kernel's n40
#           loop 123 → 112 (the width most experts take at 1088–1280 tokens), its n48 / n64 and the 96-token kernel's n80 /
#           n96 −2, the rest −1. Predicted −1 to −2% at 1088–1280, 0 to −0.5% elsewhere. Checked first (check --quick and
#           the 64- and 96-token kernels' stage checks with the switch), then A/B'd; the rest of the budget benches, then
#           measures the hand-over rule's unmeasured edges on gpt-oss-20b (forced on at 68–76 rows an expert, where the
#           rule has it off; forced off at 100–120, where it is on). Before those, a trace at 128–2048 tokens (session 29):
#           where routing ends and GEMM 1 starts in the overlapped graph, for the routing chain's share at mid sizes.
# Earlier parts ran as runs 45–98 (runs 92, 94, 97 and 98 were direct device-check.sh steps) (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s44) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8, s42 at 3d048b9, s43 at a7f5ccc, s44 at c474e18, s45 at fb27d54, s46 at 74aac56, s47 at fe11cc5, s49 at 8317dfc, s50 at 58c18d3, s51 at 3e43dd2, s52 at a257bbd; s48 was folded into s49), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s53 [SECONDS]
set -u
part=${1:-s53}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s53)
        bash $D info
        MOE_CUDA_SHARED_LOADS=1 bash $D check
        MOE_CUDA_SHARED_LOADS=1 DEBUG_TOKENS=300,2000 NEW_VARIANTS="registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1 registered_1_96_6_5_1_1_2_1_0_16_0_1_1_1" bash $D debugnew
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_SHARED_LOADS=1@512,1088,1152,1280,1407,2048,2560" bash $D abenv
        AB_REPEAT=2 AB_PRESET=gpt-oss-20b AB_ENVS="MOE_CUDA_SHARED_LOADS=1@272,320,512" bash $D abenv
        MOE_CUDA_SHARED_LOADS=1 DEBUG_TOKENS=300,2000 NEW_VARIANTS="registered_1_32_4_3_1_1_2_1_0_24_0_2_1 registered_1_48_4_3_1_1_2_1_0_16_0_2_1 registered_1_128_4_4_1_1_2_1_0_16_0_1_1 registered_1_192_4_3_1_1_2_1_0_16_0_1_1" bash $D debugnew
        BENCH_TOKENS=1,8,32,128,256,512,1024,1088,1280,1407,1536,2048,2560,3072,4096,8192,16384,32768 bash $D bench
        TRACE_TOKENS=128,256,512,1024,2048 bash $D trace
        AB_REPEAT=2 AB_PRESET=gpt-oss-20b AB_ENVS="MOE_CUDA_HANDOVER_REGISTERED=1@544,576,608 MOE_CUDA_HANDOVER_REGISTERED=0@800,896,960" bash $D abenv
        ;;
    *) echo "pending.sh: no part \"$part\" pending (see the header)" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
