#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s54:    session 29's defaults checked and A/B'd against f7af7b4's binary (.device/moe-base.xz): the shared-address code
#           and scale loads (run 99: −0.8 to −1.9% at 1088–1407, −0.2 / −0.3% at 512, level at 2048) and the hand-over on
#           at 65–76 rows an expert (run 99 on gpt-oss-20b: −1.7 / −1.8% at 544, −1.2 / −0.9% at 576). Predicted: the
#           same signs and sizes within the call-to-call spread; then the EP checks and both benches.
#           MOE_CUDA_ROUTER_BLOCKS=512 / 1024 (session 29, host-side): the router's K split for about that many blocks
#           instead of 256; at 2048 tokens S = 2 → 4 / 8 (each block 45 → 22 / 11 of H's 90 steps). Run 99's trace has
#           the router ending 14.8 µs into the layer at 1024 and 22.1 at 2048. Predicted: the router's span −3 to −10 µs
#           at 1024–4096, the layer −0.3 to −1%; level at 512 (S 8 → 11). Checked under the EP checks too (the split
#           moves the logits' last bits; both paths must move together).
# Earlier parts ran as runs 45–99 (runs 92, 94, 97, 98 and 100 were direct device-check.sh steps) (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s44) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8, s42 at 3d048b9, s43 at a7f5ccc, s44 at c474e18, s45 at fb27d54, s46 at 74aac56, s47 at fe11cc5, s49 at 8317dfc, s50 at 58c18d3, s51 at 3e43dd2, s52 at a257bbd, s53 at 1142318; s48 was folded into s49), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s54 [SECONDS]
set -u
part=${1:-s54}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s54)
        bash $D info check
        AB_REPEAT=2 AB_TOKENS=512,1088,1280,2048 bash $D abbin
        AB_REPEAT=2 AB_PRESET=gpt-oss-20b AB_TOKENS=544,576 bash $D abbin
        bash $D epcheck
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_ROUTER_BLOCKS=512@1024,2048,4096 MOE_CUDA_ROUTER_BLOCKS=1024@512,1024,2048,4096" bash $D abenv
        MOE_CUDA_ROUTER_BLOCKS=1024 TRACE_TOKENS=1024,2048,4096 bash $D trace
        MOE_CUDA_ROUTER_BLOCKS=1024 bash $D epcheck
        BENCH_TOKENS=1,8,32,128,256,512,1024,1088,1280,1407,1536,2048,2560,3072,4096,8192,16384,32768 bash $D bench
        bash $D bench20b
        ;;
    *) echo "pending.sh: no part \"$part\" pending (see the header)" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
