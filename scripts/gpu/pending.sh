#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s24:    (not yet run) s23's A/Bs again: run 65 ran them, but its run.log did not come back (the device tool brings
#           back 8 files; the ncu steps wrote 10 beside it; they now go into one archive):
#           - the narrow-tile kernel with its wgmma pipelined (registered_1_128_4_4_0_1_2_1_0_2: n32 or n128) against
#             the default at 384–1024 tokens (the staged kernel up to 768, the serialised narrow kernel at 1024), and
#             the wide kernel at 1024; predicted −5 to −15% at 768–1024; ncu's tensor-pipe activity of both narrow
#             kernels at 1024;
#           - the wide router's ring 12 stages deep (MOE_CUDA_DEEP_ROUTER=1): timed, A/B'd at 8192 and 32768;
#             predicted −15 to −25 µs at 8192 and −60 to −90 at 32768 (run 65 checked it: quick suite and sanitizers);
#           - ncu source counters of GEMM 2 at 32768 (545 against GEMM 1's 641 TFLOP/s) and the wide router at 8192.
# Earlier parts ran as runs 45–64 (policy, stalls, rows, registered, final, next, wide, lean, one, s18, s19, s20, s21, s22) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd), their commands, predictions and figures in docs/bench-cuda.md and
# BENCHMARKS.md. A part leaves this file once it has run.
#   usage (device): bash .device/pending.sh s24 [SECONDS]
set -u
part=${1:-s24}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s24)
        bash $D info
        MOE_CUDA_GEMM=registered_1_128_4_4_0_1_2_1_0_2 bash $D check
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_128_4_4_0_1_2_1_0_2@384,512,640,768,1024 \
            MOE_CUDA_GEMM=registered_1_128_4_4_0_1_2_1@1024" bash $D abenv
        MOE_CUDA_DEEP_ROUTER=1 TIMING_TOKENS=8192,32768 bash $D timing
        TIMING_TOKENS=8192,32768 bash $D timing
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_DEEP_ROUTER=1@8192,32768" bash $D abenv
        NCU_TOKENS=1024 NCU_KERNEL=registered_1_128_4_4_0_1_2_1_0_1 NCU_VARIANT=registered_1_128_4_4_0_1_2_1_0_1 bash $D ncustall
        NCU_TOKENS=1024 NCU_KERNEL=registered_1_128_4_4_0_1_2_1_0_2 NCU_VARIANT=registered_1_128_4_4_0_1_2_1_0_2 bash $D ncustall
        NCU_KERNEL=moe_gemm_registered_1_256_4_2_0_1_2_1 NCU_TOKENS=32768 NCU_SKIP=3 NCU_NAME=g2-32768 bash $D ncusrc
        NCU_KERNEL=moe_router_mma_wide NCU_TOKENS=8192 NCU_SKIP=1 NCU_NAME=router-8192 bash $D ncusrc
        ;;
    *) echo "usage: pending.sh s24 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
