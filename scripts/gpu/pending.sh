#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s25:    (not yet run) two kernel changes, checked and A/B'd:
#           - the registered kernels' staged epilogue reads each output row once, before its first barrier, into a row
#             table (run 66's source counters: GEMM 2's store loop, a global index lookup an iteration, held 16% of its
#             stall samples at 32768 tokens), and stores without a division; against the previous binary
#             (.device/moe-base.xz, commit 1119505) at 1024–32768 tokens: predicted GEMM 2 −5 to −10%, the layer −1.5 to
#             −3% from 2048 tokens;
#           - 64-token narrow tiles with their wgmma pipelined (registered_1_64_4_4_0_1_2_1_0_2: n32 or n64) against the
#             default at 640–1280 tokens, and run 66's winner at 768 (registered_1_128_4_4_0_1_2_1_0_2, −4% against the
#             staged kernel) beside it: predicted −3 to −8% at 1024 against the serialised narrow kernel.
# Earlier parts ran as runs 45–66 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s24) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s25 [SECONDS]
set -u
part=${1:-s25}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s25)
        bash $D info check checkfull
        MOE_CUDA_GEMM=registered_1_64_4_4_0_1_2_1_0_2 bash $D check
        DEBUG_VARIANT=registered_1_64_4_4_0_1_2_1_0_2 DEBUG_TOKENS=100,300,600 bash $D debug20b
        DEBUG_VARIANT=registered_1_64_4_4_0_1_2_1_0_2 RACE_TOKENS=40,100 MEMCHECK_TOKENS=40,100 bash $D racedefault memcheck
        DEBUG_VARIANT=registered_1_256_4_2_0_1_2_1 RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        bash $D epcheck
        AB_REPEAT=2 AB_TOKENS=1024,2048,8192,32768 bash $D abbin
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_64_4_4_0_1_2_1_0_2@640,768,1024,1280 \
            MOE_CUDA_GEMM=registered_1_128_4_4_0_1_2_1_0_2@768" bash $D abenv
        TIMING_TOKENS=1024,2048,8192,32768 bash $D timing
        BENCH_TOKENS=1,8,32,128,512,1024,2048,8192,16384,32768 bash $D bench
        bash $D bench20b
        ;;
    *) echo "usage: pending.sh s25 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
