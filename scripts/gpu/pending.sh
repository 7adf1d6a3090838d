#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s61:    the persistent 96-token kernel (registered_1_96_6_5_1_1_2_1_1_16_0_1_1_1, gemm_registered_persistent; forced by
#           MOE_CUDA_GEMM): one block an SM takes the work items in turn, the load ring running on across them. First a
#           short stage check with three blocks (each block takes many items: a slip in the ring's protocol hangs, so it
#           runs under a 90 s timeout and stops the part), then `check --quick` with the variant forced, the A/B on 120b at
#           1408–2687 tokens (its range), stage checks at 300 / 2000 tokens of 20b, the A/B on 20b at 352–640, memcheck,
#           `check --quick` with three blocks, racecheck with two, the 2048-token traces of both, the EP checks forced.
#           Predicted −2 to −5% at 1408–2687 (session 15's persistent kernel against its twin: 2 to 5 points).
# Earlier parts ran as runs 45–107 (runs 92, 94, 97, 98 and 100 were direct device-check.sh steps) (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s60) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8, s42 at 3d048b9, s43 at a7f5ccc, s44 at c474e18, s45 at fb27d54, s46 at 74aac56, s47 at fe11cc5, s49 at 8317dfc, s50 at 58c18d3, s51 at 3e43dd2, s52 at a257bbd, s53 at 1142318, s54 at abd7bb4, s55 at e43af17, s57 at f41bd80, s58 at 22e13f8, s59 at 23acc8e, s60 at 68253eb; s48 was folded into s49; s56 was never committed: its steps are the commands run 103 printed, docs/cuda-runs/session30/run103/run.log), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh PART [SECONDS]
set -u
part=${1:-s61}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s61)
        P=registered_1_96_6_5_1_1_2_1_1_16_0_1_1_1
        bash $D info
        L=${OUT:-/tmp/moekit-out}/run.log
        echo "=== first persistent check: MOE_CUDA_PERSISTENT_BLOCKS=3 moe cuda-debug --preset gpt-oss-20b --tokens 8,300 --variant $P" | tee -a $L
        MOE_CUDA_PERSISTENT_BLOCKS=3 timeout 90 /tmp/moe cuda-debug --preset gpt-oss-20b --tokens 8,300 --variant $P > /tmp/first.log 2>&1
        rc=$?
        cat /tmp/first.log >> $L; tail -4 /tmp/first.log
        echo "=== first persistent check rc=$rc" | tee -a $L
        if [ $rc -eq 0 ]; then
            MOE_CUDA_GEMM=$P bash $D check
            AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=$P@1408,1536,1792,2048,2304,2560,2687" bash $D abenv
            NEW_VARIANTS=$P DEBUG_TOKENS=300,2000 bash $D debugnew
            AB_PRESET=gpt-oss-20b AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=$P@352,448,512,576,640" bash $D abenv
            MOE_CUDA_PERSISTENT_BLOCKS=2 DEBUG_VARIANT=$P MEMCHECK_TOKENS=7,300 bash $D memcheck
            MOE_CUDA_PERSISTENT_BLOCKS=3 MOE_CUDA_GEMM=$P bash $D check
            MOE_CUDA_PERSISTENT_BLOCKS=2 RACE_VARIANT=$P bash $D racecheck
            TRACE_TOKENS=2048 bash $D trace
            MOE_CUDA_GEMM=$P TRACE_TOKENS=2048 bash $D trace
            MOE_CUDA_GEMM=$P bash $D epcheck
        fi
        ;;
    *) echo "pending.sh: no part \"$part\" pending (see the header)" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
