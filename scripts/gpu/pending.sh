#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s34:    (not yet run) two changes built after run 75, both aimed at what its ncu samples showed, each checked
#           (conformance, racecheck, memcheck) and A/B'd against the default in the same call:
#           - EMPTY as an mbarrier a slot (E = 1) in each of the four defaults: lane 0 of a consumer warp arrives once a
#             chunk at an address one constant from the FULL wait's, where every consumer thread now works out a named
#             barrier's id and count in 8 instructions a chunk (run 75: 9.3–9.6% of the three GEMMs' stall samples on
#             them; NVRTC 13.0: the loops 6–52 instructions shorter over both decode paths, uniform ones 23–30 → 19–22).
#             Predicted −2 to −5% at 512–4096, −1 to −3% beyond;
#           - six load slots instead of four for the 96-token and two-block 64-token kernels (run 75: 8.5–10% of the
#             stall samples in the FULL wait). Predicted −1 to −4% at 2048 and at 1024.
#           First the defaults' `check --quick`: its first GPU run with the large-block-scales cases (the decode's slow
#           path). Before the A/Bs, `ep-check.sh check`: its first run with the GPU runner's finish barrier before the
#           heaps are freed, and the defaults' bench with the SM clock and power sampled beside it (device-check's
#           with_clocks: does the bench's spread at 8192 tokens follow the clock?).
# Earlier parts ran as runs 45–75 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s33) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s34 [SECONDS]
set -u
part=${1:-s34}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s34)
        bash $D info check
        G=registered_1
        for v in ${G}_64_4_2_1_1_2_1_0_2_0_2_1 ${G}_96_4_4_1_1_2_1_0_0_0_1_1 ${G}_128_4_4_1_1_2_1_0_0_0_1_1 ${G}_256_4_2_1_1_2_1_0_0_0_1_1; do
            MOE_CUDA_GEMM=$v bash $D check
            DEBUG_VARIANT=$v RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        done
        bash $D epcheck  # the GPU runner's new finish barrier at teardown (session 21): every R must still end cleanly
        BENCH_TOKENS=1,8,32,128,288,512,1024,2048,4096,8192,32768 bash $D bench  # the defaults, clocks sampled beside
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=${G}_64_4_2_1_1_2_1_0_2_0_2_1@512,1024 MOE_CUDA_GEMM=${G}_96_4_4_1_1_2_1_0_0_0_1_1@1536,2048 MOE_CUDA_GEMM=${G}_128_4_4_1_1_2_1_0_0_0_1_1@3072 MOE_CUDA_GEMM=${G}_256_4_2_1_1_2_1_0_0_0_1_1@8192,32768 MOE_CUDA_GEMM=${G}_96_6_4_1_1_2_1@2048 MOE_CUDA_GEMM=${G}_64_6_2_1_1_2_1_0_2_0_2@1024" bash $D abenv
        ;;
    *) echo "usage: pending.sh s34 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
