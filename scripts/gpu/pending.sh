#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s37:    (not yet run) after runs 78–79 (s36 and an abenv at 832–1152), which made 32-token tiles the default at
#           256–799 tokens and 48-token tiles at 800–1183 (both six consumer warps a scheduler):
#           - the final defaults' `check --quick` and `ep-check.sh check` (the 48-token range never ran as a default: its
#             kernel was forced through check, racecheck and memcheck in run 78, and A/B'd there and in run 79);
#           - 64-token tiles with one A-fragment buffer (F = 1) as three consumer warpgroups and two blocks an SM, six
#             consumer warps a scheduler (with two buffers ptxas serialises the wgmma at 64 registers, C7512): checked,
#             then A/B'd at 1024 (against the 48-token kernel), 1280 (64-token) and 1536 (96-token). Predicted −2 to −6%
#             at 1280, level at 1024, worse at 1536 (experts past 64 rows take two tiles);
#           - the defaults' bench, gpt-oss-120b (with 832 and 1152) and 20b; then 2048 and 32768 tokens alone with the
#             clock sampled (run 77: 8192 tokens reached 701 W and a median 1680 MHz).
# Earlier parts ran as runs 45–79 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s36) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s37 [SECONDS]
set -u
part=${1:-s37}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s37)
        bash $D info check epcheck
        G=registered_1
        MOE_CUDA_GEMM=${G}_64_4_3_1_1_2_1_0_2_0_2_1_1 bash $D check
        DEBUG_VARIANT=${G}_64_4_3_1_1_2_1_0_2_0_2_1_1 RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=${G}_64_4_3_1_1_2_1_0_2_0_2_1_1@1024,1280,1536" bash $D abenv
        BENCH_TOKENS=1,8,32,128,256,320,384,512,768,832,1024,1152,1280,1536,2048,2304,4096,8192,16384,32768 bash $D bench bench20b
        for t in 2048 32768; do CLOCK_TOKENS=$t bash $D benchclock; done  # run 77: 8192 tokens ran at 700 W, 1680 MHz
        ;;
    *) echo "usage: pending.sh s37 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
