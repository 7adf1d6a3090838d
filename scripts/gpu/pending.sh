#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
# Earlier parts ran as runs 45–111 (runs 92, 94, 97, 98 and 100 were direct device-check.sh steps) (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s64) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8, s42 at 3d048b9, s43 at a7f5ccc, s44 at c474e18, s45 at fb27d54, s46 at 74aac56, s47 at fe11cc5, s49 at 8317dfc, s50 at 58c18d3, s51 at 3e43dd2, s52 at a257bbd, s53 at 1142318, s54 at abd7bb4, s55 at e43af17, s57 at f41bd80, s58 at 22e13f8, s59 at 23acc8e, s60 at 68253eb, s61 at 70ca1d4, s62 at 51a89a1, s63 at c42460e, s64 at 94a7b71; s48 was folded into s49; s56 was never committed: its steps are the commands run 103 printed, docs/cuda-runs/session30/run103/run.log), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh PART [SECONDS]
set -u
part=${1:-}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s65)  # session 33's open question (docs/bench-cuda.md Next 0): does moe_route_small's last block wait on instruction
          # fetch? 47 KB of its SASS follow the election, cold after each layer's weight stream. Then, from the CSVs:
          #   python3 scripts/gpu/stall_ranges.py route1-sass.csv 'ATOMG' '@!P0 EXIT'   (GEMV | election | tail)
        # First the one-warp plan (MOE_CUDA_COMPACT_ROUTE=1, built at the end of session 33, never run): same outputs,
        # rolled loops, no block barrier; predicted −0.5 to −1.5 µs at 1–8 tokens (more if the tail is fetch-bound).
        bash $D info
        bash $D epcheck  # expert parallelism with activations first (the default since 91ebf7d; run 110 checked it alone)
        L=${OUT:-/tmp/moekit-out}/run.log
        echo "=== first compact-route check: MOE_CUDA_COMPACT_ROUTE=1 moe cuda-debug --preset gpt-oss-20b --tokens 1,3,8" | tee -a $L
        MOE_CUDA_COMPACT_ROUTE=1 timeout 120 /tmp/moe cuda-debug --preset gpt-oss-20b --tokens 1,3,8 > /tmp/first.log 2>&1
        rc=$?
        cat /tmp/first.log >> $L; tail -3 /tmp/first.log
        echo "=== first compact-route check rc=$rc" | tee -a $L
        if [ $rc -eq 0 ]; then
            AB_REPEAT=2 AB_ENVS="MOE_CUDA_COMPACT_ROUTE=1@1,2,4,8" bash $D abenv
            MOE_CUDA_COMPACT_ROUTE=1 TRACE_TOKENS=1,8 bash $D trace
            TRACE_TOKENS=1,8 bash $D trace
            MOE_CUDA_COMPACT_ROUTE=1 bash $D check
            MOE_CUDA_COMPACT_ROUTE=1 MEMCHECK_TOKENS=1,7 bash $D memcheck
            MOE_CUDA_COMPACT_ROUTE=1 bash $D epcheck
        fi
        NCU_KERNEL=moe_route_small_1 NCU_TOKENS=1 NCU_SAMPLING=0 NCU_NAME=route1 bash $D ncusrc
        NCU_KERNEL=moe_route_small_8 NCU_TOKENS=8 NCU_SAMPLING=0 NCU_NAME=route8 bash $D ncusrc
        NCU_KERNEL=moe_route_finish NCU_TOKENS=64 NCU_SAMPLING=0 NCU_NAME=finish64 bash $D ncusrc
        ;;
    *) echo "pending.sh: no part \"$part\" pending (see the header)" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
