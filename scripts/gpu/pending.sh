#!/usr/bin/env bash
# The device calls that sessions 8 and 9 prepared and never got (no machine was lent), in two parts of ~5 minutes each
# (session 7's step times; steps are cut at the deadline, most important first):
#   kernels: the opt-in kernels' stage checks, conformance checks and A/B against the defaults (the one-fence
#            arrivals, MOE_CUDA_ONE_FENCE=1, among them), compute-sanitizer, the default's bench;
#   ep:      EP bit-identity and serving, the fused EP barriers (MOE_CUDA_EP_FUSED=1: bit-identity, and their
#            launch-overhead A/B in eppdl), stall metrics of the split kernels.
#   prefetch: session 10's L2 prefetch of GEMM 2's weights (opt-in): checks, A/B at 1–8 tokens, trace, ncu at T = 1.
#   usage (device): bash .device/pending.sh kernels|ep|prefetch [SECONDS]
set -u
part=${1:-kernels}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
P=persistent_1_1_8_1_3; S=specialized_2_128_4_2_1; S2=specialized_2_128_4_2_2; S64=specialized_2_64_6_2_2; D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    kernels)
        bash $D info check debug
        NEW_VARIANTS="$S2 $S $P $S64" bash $D debugnew
        for v in $S2 $S $P $S64; do MOE_CUDA_GEMM=$v bash $D check; done
        # Three persistent blocks: every block walks many items, on the small shapes' one-group K too (session 9's fix).
        MOE_CUDA_PERSISTENT_BLOCKS=3 MOE_CUDA_GEMM=$P bash $D check
        # The sanitizers before the A/B (3–4 min): if the deadline bites, speed is what gets cut, not correctness.
        RACE_VARIANT=$S2 MEM_VARIANT=$P bash $D racedecoded memdecoded
        RACE_VARIANT=$S MEM_VARIANT=$S2 bash $D racedecoded memdecoded
        RACE_VARIANT=$P bash $D racedecoded racecheck2
        MOE_CUDA_ONE_FENCE=1 bash $D check racecheck2
        AB_ENVS="MOE_CUDA_GEMM=$S2@2048,8192,32768 MOE_CUDA_GEMM=$S@2048,8192,32768 MOE_CUDA_GEMM=$P@32,128,512 MOE_CUDA_GEMM=$S64@1024,2048 MOE_CUDA_ONE_FENCE=1@1,2,8" bash $D abenv
        bash $D bench
        ;;
    ep)
        bash $D info epcheck epserve epforward
        MOE_CUDA_EP_FUSED=1 bash $D epcheck
        MOE_CUDA_EP_FUSED=1 MOE_CUDA_ONE_FENCE=1 bash $D epcheck
        bash $D eppdl
        NCU_VARIANT=$S2 bash $D ncustall
        NCU_VARIANT=$S bash $D ncustall
        bash $D epbig  # gpt-oss-20b shapes at R = 2, 3: a rank's own experts on real shapes (last: cut first)
        ;;
    prefetch)
        # Session 10: GEMM 1's blocks prefetch GEMM 2's weights of their expert into L2 (MOE_CUDA_PREFETCH_DOWN=1, =2
        # with evict_last). Correctness first, then the A/B at decode sizes, then where T = 1's time goes.
        bash $D info
        MOE_CUDA_PREFETCH_DOWN=2 bash $D check
        AB_ENVS="MOE_CUDA_PREFETCH_DOWN=1@1,2,4,8 MOE_CUDA_PREFETCH_DOWN=2@1,2,4,8" bash $D abenv
        MOE_CUDA_PREFETCH_DOWN=2 bash $D memcheck
        MOE_CUDA_PREFETCH_DOWN=1 bash $D check
        TRACE_TOKENS=1,2,8 bash $D trace
        TRACE_TOKENS=1,2,8 MOE_CUDA_PREFETCH_DOWN=2 bash $D trace
        bash $D ncu1
        ;;
    *) echo "usage: pending.sh kernels|ep|prefetch [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
