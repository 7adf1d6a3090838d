#!/usr/bin/env bash
# The device call that session 8 prepared and never got (no machine was lent): the opt-in kernels' checks and A/B
# against the defaults (the one-fence arrivals, MOE_CUDA_ONE_FENCE=1, among them), sanitizers, the default's bench,
# EP checks, the fused EP barriers (MOE_CUDA_EP_FUSED=1: bit-identity, and their launch-overhead A/B in eppdl), stall metrics of
# the split kernels. About 7–9 minutes (session 7's step times).
#   usage (device): bash .device/pending.sh [SECONDS]
export DEADLINE=$(( $(date +%s) + ${1:-570} ))
P=persistent_1_1_8_1_3; S=specialized_2_128_4_2_1; S2=specialized_2_128_4_2_2; S64=specialized_2_64_6_2_2; D=.device/device-check.sh
bash $D info check debug
NEW_VARIANTS="$S2 $S $P $S64" bash $D debugnew
for v in $S2 $S $P $S64; do MOE_CUDA_GEMM=$v bash $D check; done
AB_ENVS="MOE_CUDA_GEMM=$S2@2048,8192,32768 MOE_CUDA_GEMM=$S@2048,8192,32768 MOE_CUDA_GEMM=$P@32,128,512 MOE_CUDA_GEMM=$S64@1024,2048 MOE_CUDA_ONE_FENCE=1@1,2,8" bash $D abenv
RACE_VARIANT=$S2 MEM_VARIANT=$P bash $D racedecoded memdecoded
RACE_VARIANT=$S MEM_VARIANT=$S2 bash $D racedecoded memdecoded
RACE_VARIANT=$P bash $D racedecoded racecheck2 bench epcheck epserve
MOE_CUDA_ONE_FENCE=1 bash $D check racecheck2
MOE_CUDA_EP_FUSED=1 bash $D epcheck
bash $D eppdl
NCU_VARIANT=$S2 bash $D ncustall
NCU_VARIANT=$S bash $D ncustall
grep -h "=== .* rc=" ${OUT:-/tmp/moekit-out}/run.log
