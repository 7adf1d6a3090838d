#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s33:    (not yet run) where the new defaults wait: per-instruction stall samples (ncu source counters) of the 96-token
#           kernel's GEMM 1 and GEMM 2 at 2048 tokens (43.6–45.6% of the floor in run 74) and of the two-block 64-token
#           kernel's GEMM 1 at 1024. No prediction: readings for the next change.
# Earlier parts ran as runs 45–74 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s32) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s33 [SECONDS]
set -u
part=${1:-s33}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s33)
        for n in "1_96_4_4_1_1_2_1 2048 2 g1-96-2048" "1_96_4_4_1_1_2_1 2048 3 g2-96-2048" "1_64_4_2_1_1_2_1_0_2_0_2 1024 2 g1-64k2-1024"; do
            set -- $n
            NCU_KERNEL=moe_gemm_registered_$1 NCU_TOKENS=$2 NCU_SKIP=$3 NCU_NAME=$4 bash $D ncusrc
        done
        bash $D info
        ;;
    *) echo "usage: pending.sh s33 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
