#!/usr/bin/env bash
# Device calls prepared and not yet run (after session 11). Steps are cut at the deadline, most important first.
#   policy: session 11's default at 2–4 tokens (resident_1_1_4_1_4 for both GEMMs, its ring filled by the copy engine;
#           adopted on one round: 64.6 vs 67.8 µs at 2 tokens, 99.7 vs 117.6 at 4) against the pair it replaced,
#           twice, at 2, 3 and 4 tokens; whether it also wins at 8–16; the bulk switch at 1 token; racecheck and memcheck
#           of the kernel; the stream probe (new: the decode GEMMs' bytes read with no math, per in-flight layout);
#           EP bit-identity; the trace; the default bench; then the symmetric EP layer's kernels inside
#           its graph (MOE_CUDA_EP_TRACE=1, new: never run) at R = 1 and 2; the plan writing the tiles alone
#           (MOE_CUDA_EP_PLAN_TILES=1): bit-identity and launch overheads at R = 1.
#   alias:  (session 12) the 1-token layer with every expert reading expert 0's weights (MOE_CUDA_ALIAS_EXPERTS=1: the
#           decode step's weights in L2, outputs wrong by design) traced against the plain build, twice: how much of the
#           layer the DRAM stream is; the stream probe with a steady-rate size; GEMM 1 with K split 4 at 1 token; the
#           GEMMs' tile loaded together with the tile count (new default) against after it (MOE_CUDA_TILE_AFTER_COUNT=1,
#           session 11's SASS), with check, memcheck and EP bit-identity.
#   usage (device): bash .device/pending.sh policy|alias [SECONDS]
set -u
part=${1:-policy}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    policy)
        bash $D info check  # `check` (quick) reaches the new default through its T = 2 case
        bash $D stream  # new: how fast any kernel can read the decode GEMMs' bytes, per in-flight layout
        AB_ENVS="MOE_CUDA_GEMM=resident_1_1_4_2_3+MOE_CUDA_GEMM2=resident_1_1_2_4_3@2,3,4 MOE_CUDA_RESIDENT_BULK=1@1" bash $D abenv
        RACE_VARIANT=resident_1_1_4_1_4 MEMCHECK_TOKENS=2,4 bash $D racecheck2 memcheck
        DEBUG_TOKENS=2,3,4 bash $D debug debug20b  # every stage at the new default's sizes
        bash $D epcheck
        AB_REPEAT=1 AB_ENVS="MOE_CUDA_GEMM=resident_1_1_4_1_4@8,16 MOE_CUDA_GEMM2=resident_1_1_4_1_4@1" bash $D abenv
        TRACE_TOKENS=1,2,4,8 bash $D trace
        bash $D bench
        TRACE_TOKENS=1,8,128 bash $D eptrace  # the EP layer's kernels inside its graph at R = 1
        EP_RANKS=2 TRACE_TOKENS=2,16 bash $D eptrace  # two ranks sharing the GPU: the barriers' waits
        MOE_CUDA_EP_PLAN_TILES=1 bash $D epcheck  # plan and tiles in one launch alone: bit-identity
        bash $D eppdl  # R = 1 launch overheads: default, no PDL, three-kernel plan, fused barriers, plan writing tiles
        ;;
    alias)
        MEMCHECK_TOKENS=1,7,40 bash $D check memcheck  # the tile loaded with the count (new default)
        AB_ENVS="MOE_CUDA_TILE_AFTER_COUNT=1@1,2,4,8 MOE_CUDA_GEMM=resident_1_1_2_4_3@1" bash $D abenv
        bash $D stream  # with the steady-rate size: the per-launch fixed cost
        for round in 1 2; do
            TRACE_TOKENS=1,2,4,8 bash $D trace
            MOE_CUDA_ALIAS_EXPERTS=1 TRACE_TOKENS=1,2,4,8 bash $D trace  # every expert reads expert 0's weights (L2)
        done
        bash $D epcheck bench
        ;;
    *) echo "usage: pending.sh policy|alias [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
