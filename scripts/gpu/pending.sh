#!/usr/bin/env bash
# Device calls prepared and not yet run (sessions 8–9's `kernels` and `ep` parts ran in session 10: docs/bench-cuda.md
# "Session 10"). Steps are cut at the deadline, most important first.
#   prefetch: GEMM 1's resident blocks prefetch GEMM 2's weights of their expert into L2 (MOE_CUDA_PREFETCH_DOWN=1, =2
#             with evict_last; a kernel build switch): checks, the A/B at 1–8 tokens, the trace, ncu at T = 1.
#   usage (device): bash .device/pending.sh prefetch [SECONDS]
set -u
part=${1:-prefetch}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    prefetch)
        bash $D info
        MOE_CUDA_PREFETCH_DOWN=2 bash $D check
        AB_ENVS="MOE_CUDA_PREFETCH_DOWN=1@1,2,4,8 MOE_CUDA_PREFETCH_DOWN=2@1,2,4,8" bash $D abenv
        MOE_CUDA_PREFETCH_DOWN=2 bash $D memcheck
        MOE_CUDA_PREFETCH_DOWN=1 bash $D check
        TRACE_TOKENS=1,2,8 bash $D trace
        TRACE_TOKENS=1,2,8 MOE_CUDA_PREFETCH_DOWN=2 bash $D trace
        bash $D ncu1
        ;;
    *) echo "usage: pending.sh prefetch [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
