#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s30:    (not yet run) the defaults adopted from run 71 (two blocks an SM at 577–1280 tokens, 96-token tiles to 2304,
#           256-token tiles from 8192): the full check, the EP check and the bench. Then the router GEMM with each
#           thread's copy addresses worked out once and every ldmatrix of a step before its MMAs (the same sums in the
#           same order): checked with the wide kernel forced (conformance, racecheck, memcheck), timed (`--timing`)
#           and A/B'd against the previous binary (.device/moe-base.xz, commit e707078): predicted the wide router −30
#           to −50% (58 → 30–40 µs at 8192 tokens, 234 → 120–160 at 32768), the layer −0.5 to −1% from 8192.
#           Then the new boundaries from their other side: two blocks an SM at 512–576 (staged there), the 256-token
#           kernel at 4096–6144 (the 128-token one there), the 128-token kernel at 8192 and four consumer warpgroups of
#           64-token tiles at 768–1024.
# Earlier parts ran as runs 45–71 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s29) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s30 [SECONDS]
set -u
part=${1:-s30}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s30)
        bash $D info check checkfull
        MOE_CUDA_ROUTER=wide bash $D check
        MOE_CUDA_ROUTER=wide RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        bash $D epcheck
        BENCH_TOKENS=1,8,32,128,512,768,1024,1280,1536,2048,2304,4096,8192,16384,32768 bash $D bench
        bash $D bench20b
        TIMING_TOKENS=2048,8192,32768 bash $D timingbin
        AB_REPEAT=2 AB_TOKENS=512,2048,8192,32768 bash $D abbin
        G=MOE_CUDA_GEMM=registered_1
        AB_REPEAT=2 AB_ENVS="${G}_64_4_2_1_1_2_1_0_2_0_2@512,576 ${G}_256_4_2_1_1_2_1@4096,6144 ${G}_128_4_4_1_1_2_1@8192 ${G}_64_4_4_1_1_2_1_0_2@768,1024" bash $D abenv
        ;;
    *) echo "usage: pending.sh s30 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
