#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s21:    (not yet run) the checks of what runs 61–62 adopted: the 256-token kernel from 16384 tokens (with the
#           gather) and the wide router (forced, with its split-K sum) through every stage, the sanitizers and EP
#           bit-identity; the plan scan split over 8 threads an expert (per-kernel timing at 8192 / 32768); the bench.
# Earlier parts ran as runs 45–62 (policy, stalls, rows, registered, final, next, wide, lean, one, s18, s19, s20) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b), their commands, predictions and figures in docs/bench-cuda.md and
# BENCHMARKS.md. A part leaves this file once it has run.
#   usage (device): bash .device/pending.sh s21 [SECONDS]
set -u
part=${1:-s21}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s21)
        bash $D info check
        # the 256-token kernel and the wide router forced together (its split-K sum at 40 tokens of gpt-oss-20b, S = 11)
        MOE_CUDA_ROUTER=wide DEBUG_VARIANT=registered_1_256_4_2_0_1_2_1 DEBUG_TOKENS=40,300,2000 bash $D debug20b
        # sanitizers: the wide router's split-K sum on gpt-oss-20b at 40 tokens (with a small GEMM), then the 256-token
        # kernel, the wide router unsplit and the new plan scan on tiny at 40 and 300 tokens
        MOE_CUDA_ROUTER=wide DEBUG_VARIANT=resident_1_1_8_1_3 SAN_PRESET=gpt-oss-20b RACE_TOKENS=40 MEMCHECK_TOKENS=40 \
            bash $D racedefault memcheck
        MOE_CUDA_ROUTER=wide DEBUG_VARIANT=registered_1_256_4_2_0_1_2_1 RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 \
            bash $D racedefault memcheck
        MOE_CUDA_GEMM=registered_1_256_4_2_0_1_2_1 bash $D epcheck  # the 256-token kernel in the EP layer: never run there
        TIMING_TOKENS=2048,8192,16384,32768 bash $D timing
        BENCH_TOKENS=1,8,32,128,512,1024,2048,8192,16384,32768 bash $D bench
        bash $D bench20b
        ;;
    *) echo "usage: pending.sh s21 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
