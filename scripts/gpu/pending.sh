#!/usr/bin/env bash
# Device calls prepared and not yet run (sessions 8–9's `kernels` and `ep` parts ran in session 10: docs/bench-cuda.md
# "Session 10"). Steps are cut at the deadline, most important first.
#   prefetch: GEMM 1's resident blocks prefetch GEMM 2's weights of their expert into L2 (MOE_CUDA_PREFETCH_DOWN=1, =2
#             with evict_last; a kernel build switch): checks, the A/B at 1–8 tokens, the trace, ncu at T = 1.
#   large:    where the large-batch kernel's time goes (session 10 refuted "more decoding warps"): ncu's pipe and
#             shared-memory utilisation of the default specialised GEMM at 2048 and 8192 tokens, then the A/B of the
#             staged and 64-token specialised kernels at 2048 tokens (the row furthest from its floor).
#   usage (device): bash .device/pending.sh prefetch|large [SECONDS]
set -u
part=${1:-prefetch}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    prefetch)
        bash $D info epserve  # epserve: the served pass with the timed graph now cached (was captured every pass)
        MOE_CUDA_PREFETCH_DOWN=2 bash $D check
        AB_ENVS="MOE_CUDA_PREFETCH_DOWN=1@1,2,4,8 MOE_CUDA_PREFETCH_DOWN=2@1,2,4,8" bash $D abenv
        MOE_CUDA_PREFETCH_DOWN=2 bash $D memcheck epcheck  # epcheck: the EP layer's GEMM 1 prefetches its rank's experts
        MOE_CUDA_PREFETCH_DOWN=1 bash $D check
        TRACE_TOKENS=1,2,8 bash $D trace
        TRACE_TOKENS=1,2,8 MOE_CUDA_PREFETCH_DOWN=2 bash $D trace
        bash $D ncu1
        ;;
    large)
        bash $D info
        NCU_KERNEL=specialized NCU_VARIANT=specialized_2_128_4_2 NCU_TOKENS=2048 bash $D ncudecoded
        NCU_KERNEL=specialized NCU_VARIANT=specialized_2_128_4_2 NCU_TOKENS=8192 bash $D ncudecoded
        AB_ENVS="MOE_CUDA_GEMM=staged_2_4_8_2@2048 MOE_CUDA_GEMM=specialized_2_64_6_2@2048,4096" bash $D abenv
        ;;
    *) echo "usage: pending.sh prefetch|large [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
