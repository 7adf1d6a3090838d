#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s27:    (not yet run) wgmma descriptors by adds (B = 1) on the three large-batch defaults, checked and A/B'd in
#           their ranges: the chunk loop's fast path is 9–17 instructions shorter (of ~141–149), and four consumer warps
#           share each scheduler; predicted −1 to −4% at 768–2048, −0 to −2% at 8192–32768 (level with two consumer
#           warpgroups in run 56).
# Earlier parts ran as runs 45–68 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s26) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s27 [SECONDS]
set -u
part=${1:-s27}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s27)
        bash $D info
        for v in registered_1_64_4_4_1_1_2_1_0_2 registered_1_128_4_4_1_1_2_1 registered_1_256_4_2_1_1_2_1; do
            MOE_CUDA_GEMM=$v bash $D check
            DEBUG_VARIANT=$v RACE_TOKENS=40,300 bash $D racedefault
        done
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_64_4_4_1_1_2_1_0_2@768,1024 \
            MOE_CUDA_GEMM=registered_1_128_4_4_1_1_2_1@2048,8192 MOE_CUDA_GEMM=registered_1_256_4_2_1_1_2_1@32768" bash $D abenv
        ;;
    *) echo "usage: pending.sh s27 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
