#!/usr/bin/env bash
# Device calls prepared and not yet run (session 11). Steps are cut at the deadline, most important first.
#   bulk: the resident GEMMs' weight rings filled by the copy engine (MOE_CUDA_RESIDENT_BULK=1) and GEMM 2's tile count
#         taken off its blocks' critical path (MOE_CUDA_TILE_CONSUME_LATE=1), both kernel build switches: checks with
#         each, the A/B at 1–128 tokens, the sanitizers and EP bit-identity with both, the trace and ncu at T = 1; then
#         each kernel of the EP layer alone under ncu (R = 1, 1 token); GEMM 2 with 4-slot rings (resident_1_1_2_4_4).
#   usage (device): bash .device/pending.sh bulk [SECONDS]
set -u
part=${1:-bulk}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    bulk)
        bash $D info
        MOE_CUDA_RESIDENT_BULK=1 bash $D check
        AB_ENVS="MOE_CUDA_RESIDENT_BULK=1@1,2,4,8,32,128 MOE_CUDA_TILE_CONSUME_LATE=1@1,2,4 MOE_CUDA_RESIDENT_BULK=1+MOE_CUDA_TILE_CONSUME_LATE=1@1,2,4,8" bash $D abenv
        MOE_CUDA_RESIDENT_BULK=1 MOE_CUDA_TILE_CONSUME_LATE=1 bash $D memcheck racecheck2 check debug20b epcheck
        TRACE_TOKENS=1,2,8 MOE_CUDA_RESIDENT_BULK=1 bash $D trace
        MOE_CUDA_RESIDENT_BULK=1 bash $D ncu1
        AB_REPEAT=1 AB_ENVS="MOE_CUDA_GEMM2=resident_1_1_2_4_4@1,2,4 MOE_CUDA_RESIDENT_BULK=1+MOE_CUDA_GEMM2=resident_1_1_2_4_4@1,2,4 MOE_CUDA_RESIDENT_BULK=1+MOE_CUDA_GEMM=resident_1_1_2_2_4@1,2,4 MOE_CUDA_RESIDENT_BULK=1+MOE_CUDA_GEMM=resident_1_1_4_1_4@1,2,4" bash $D abenv
        bash $D ncuep  # where the EP layer's fixed cost at R = 1 goes: each kernel's own duration
        ;;
    *) echo "usage: pending.sh bulk [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
