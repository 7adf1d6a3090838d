#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s19:    (not yet run) first GEMM 2 in GEMM 1's grid at 1 token (MOE_CUDA_FUSED_DECODE=1, session 18: predicted −3 to
#           −5 µs of ~43 on an H100); then session 18's new defaults' bench (120b, 20b), EP bit-identity (the narrow form
#           too), trace; the crossover between narrow and wide four-warpgroup tiles at 1280–1536 tokens; the persistent
#           and 256-token kernels with the gather against the new default at 8192–32768; where the new default's warps
#           wait (ncu stall reasons at 8192); the fused kernel's sanitizers; the full check.
# Earlier parts ran as runs 45–60 (policy, stalls, rows, registered, final, next, wide, lean, one, s18) or were folded
# into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78 holds
# policy … s19), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this
# file once it has run.
#   usage (device): bash .device/pending.sh s19 [SECONDS]
set -u
part=${1:-s19}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s19)  # session 18's defaults (four consumer warpgroups with tensor copies and the gather; narrow tiles at 769–1024)
        bash $D info check
        # GEMM 2 in GEMM 1's grid at 1 token (MOE_CUDA_FUSED_DECODE=1, never run): a bounded smoke run first (a tile wait
        # that never ends traps after ~2 s), then every stage on gpt-oss-20b (tiny's grids differ: not fused there),
        # two A/B rounds and the trace; its sanitizer runs come last (gpt-oss-20b under racecheck may be slow)
        fused=0
        if timeout 90 env MOE_CUDA_FUSED_DECODE=1 /tmp/moe bench --backend cuda --preset gpt-oss-120b --tokens 1 --iterations 20 \
            --warmup 3 > /tmp/smoke.log 2>&1; then
            fused=1
            { echo "=== smoke MOE_CUDA_FUSED_DECODE=1"; grep -E "^check:|^ +1 " /tmp/smoke.log; } | tee -a ${OUT:-/tmp/moekit-out}/run.log
            # engaged? the per-kernel timing then has no GEMM 2 row (one kernel ran both)
            { echo "=== timing MOE_CUDA_FUSED_DECODE=1"; MOE_CUDA_FUSED_DECODE=1 timeout 60 /tmp/moe cuda-debug --preset gpt-oss-120b \
                --timing --tokens 1 2>&1 | tail -12; } | tee -a ${OUT:-/tmp/moekit-out}/run.log
            MOE_CUDA_FUSED_DECODE=1 DEBUG_TOKENS=1 bash $D debug20b
            AB_REPEAT=2 AB_ENVS="MOE_CUDA_FUSED_DECODE=1@1" bash $D abenv
            MOE_CUDA_FUSED_DECODE=1 TRACE_TOKENS=1 bash $D trace
        else
            { echo "=== MOE_CUDA_FUSED_DECODE=1 smoke run failed or hung"; tail -5 /tmp/smoke.log; } | tee -a ${OUT:-/tmp/moekit-out}/run.log
        fi
        bash $D bench bench20b epcheck
        MOE_CUDA_GEMM=registered_1_128_4_4_0_1_2_1_0_1 bash $D epcheck  # narrow tiles in the EP layer: never run there
        TRACE_TOKENS=1,8,128,1024,2048,8192 bash $D trace
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_128_4_4_0_1_2_1_0_1@1280,1536" bash $D abenv  # the policy's crossover
        AB_REPEAT=1 AB_ENVS="MOE_CUDA_GEMM=registered_1_128_4_3_0_1_2_1_1@8192,32768 \
            MOE_CUDA_GEMM=registered_1_256_4_2_0_1_2_1@16384,32768" bash $D abenv  # a first look with the gather
        NCU_TOKENS=8192 bash $D ncustall
        [ $fused = 1 ] && MOE_CUDA_FUSED_DECODE=1 SAN_PRESET=gpt-oss-20b RACE_TOKENS=1 MEMCHECK_TOKENS=1 bash $D racedefault memcheck
        bash $D checkfull
        ;;
    *) echo "usage: pending.sh s19 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
