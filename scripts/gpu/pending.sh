#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s20:    (not yet run) the wide router (moe_router_mma_wide: 128 experts a block at ≥ 8192 tokens of 120b, x read once
#           instead of four times; forced everywhere by MOE_CUDA_ROUTER=wide for the checks), its per-kernel time against
#           the narrow one and the layer A/B; GEMM 2 alone on three consumer warpgroups (2880 = 15 × 192 rows, against
#           11.25 blocks of 256); the 256-token kernel with the gather, second round; per-kernel timing of the defaults.
# Earlier parts ran as runs 45–61 (policy, stalls, rows, registered, final, next, wide, lean, one, s18, s19) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f), their commands, predictions and figures in docs/bench-cuda.md and
# BENCHMARKS.md. A part leaves this file once it has run.
#   usage (device): bash .device/pending.sh s20 [SECONDS]
set -u
part=${1:-s20}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s20)
        bash $D info check
        # the wide router forced everywhere (tiny and odd shapes, its split-K sum at small batches, E = 32 with 96 idle
        # expert rows): the conformance suite, every stage on gpt-oss-20b, EP bit-identity, the sanitizers
        MOE_CUDA_ROUTER=wide bash $D check
        MOE_CUDA_ROUTER=wide DEBUG_TOKENS=40,300,2000 bash $D debug20b
        # its time: the router row of the per-kernel timing, narrow against the default (wide from 8192) and wide forced
        # at 4096 (64 tiles, under the threshold); then the layer
        MOE_CUDA_ROUTER=narrow TIMING_TOKENS=4096,8192,32768 bash $D timing
        TIMING_TOKENS=512,1024,2048,4096,8192,32768 bash $D timing
        MOE_CUDA_ROUTER=wide TIMING_TOKENS=2048,4096 bash $D timing
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_ROUTER=narrow@8192,32768" bash $D abenv
        # GEMM 2 alone on 3 consumer warpgroups (15 column blocks of 192 rows, none partial, against 12 of 256, the last
        # a quarter full); the 256-token kernel with the gather (second round; run 61: −2.1 / −2.9% at 16384 / 32768)
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM2=registered_1_128_4_3_0_1_2_1@2048,8192,32768" bash $D abenv
        AB_REPEAT=1 AB_ENVS="MOE_CUDA_GEMM=registered_1_256_4_2_0_1_2_1@8192,16384,32768" bash $D abenv
        MOE_CUDA_ROUTER=wide bash $D epcheck
        MOE_CUDA_ROUTER=wide RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        MOE_CUDA_GEMM2=registered_1_128_4_3_0_1_2_1 DEBUG_TOKENS=300,2000 bash $D debug20b
        bash $D bench
        ;;
    *) echo "usage: pending.sh s20 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
