#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s23:    (not yet run) measurements, nothing to adopt: where the large-batch GEMMs wait (ncu stall reasons and
#           source counters): GEMM 1 at 1024 tokens (narrow tiles: a 64-k chunk takes ~0.66 µs with a quarter of
#           n128's tensor work, so what else sets its pace?) and 2048 (42% of the floor); GEMM 1 and GEMM 2 at 32768
#           (the 256-token kernel: 641 against 545 TFLOP/s in run 64); the wide router at 8192; then the full bench.
#           Two A/Bs first, both built in session 19 and never run:
#           - the narrow-tile kernel with its wgmma pipelined (registered_1_128_4_4_0_1_2_1_0_2: n32 or n128; the
#             default narrow kernel, n32/n64/n128, has every wgmma serialised by ptxas, C7511), against the default at
#             512 / 768 / 1024 tokens, and the wide kernel at 1024 (never measured there): predicted −5 to −15% at
#             768–1024 for the pipelined one, where most tiles take n32;
#           - the wide router's ring 12 stages deep (MOE_CUDA_DEEP_ROUTER=1, a kernel build switch): predicted −15 to
#             −25 µs at 8192 tokens and −60 to −90 at 32768 (run 62: 48 KB in flight an SM moved 2.3 TB/s from L2, the
#             narrow router's ~120 KB 3.6).
# Earlier parts ran as runs 45–64 (policy, stalls, rows, registered, final, next, wide, lean, one, s18, s19, s20, s21, s22) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd), their commands, predictions and figures in docs/bench-cuda.md and
# BENCHMARKS.md. A part leaves this file once it has run.
#   usage (device): bash .device/pending.sh s23 [SECONDS]
set -u
part=${1:-s23}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s23)
        bash $D info check
        # the pipelined narrow kernel: the conformance suite, every stage on gpt-oss-20b (tiles of ≤ 32 and 33–64 rows
        # at 300 tokens), the sanitizers on tiny (20 and 50 rows an expert), then the A/B
        MOE_CUDA_GEMM=registered_1_128_4_4_0_1_2_1_0_2 bash $D check
        DEBUG_VARIANT=registered_1_128_4_4_0_1_2_1_0_2 DEBUG_TOKENS=100,300,600 bash $D debug20b
        DEBUG_VARIANT=registered_1_128_4_4_0_1_2_1_0_2 RACE_TOKENS=40,100 MEMCHECK_TOKENS=40,100 bash $D racedefault memcheck
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_128_4_4_0_1_2_1_0_2@512,768,1024 \
            MOE_CUDA_GEMM=registered_1_128_4_4_0_1_2_1@1024" bash $D abenv
        # the deep wide router: checked (forced everywhere, its split-K sum under the sanitizers), timed, A/B'd
        MOE_CUDA_DEEP_ROUTER=1 MOE_CUDA_ROUTER=wide bash $D check
        MOE_CUDA_DEEP_ROUTER=1 MOE_CUDA_ROUTER=wide DEBUG_VARIANT=resident_1_1_8_1_3 SAN_PRESET=gpt-oss-20b RACE_TOKENS=40 \
            MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        MOE_CUDA_DEEP_ROUTER=1 TIMING_TOKENS=8192,32768 bash $D timing
        TIMING_TOKENS=8192,32768 bash $D timing
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_DEEP_ROUTER=1@8192,32768" bash $D abenv
        # GEMM 1 is the third launch of its kernel in a one-iteration bench (the check's GEMM 1 and GEMM 2 come first)
        NCU_TOKENS=2048 bash $D ncustall
        NCU_KERNEL=moe_gemm_registered_1_128_4_4_0_1_2_1_0_1 NCU_TOKENS=1024 NCU_SKIP=2 NCU_NAME=g1-1024 bash $D ncusrc
        NCU_KERNEL=moe_gemm_registered_1_128_4_4_0_1_2_1 NCU_TOKENS=2048 NCU_SKIP=2 NCU_NAME=g1-2048 bash $D ncusrc
        NCU_KERNEL=moe_gemm_registered_1_256_4_2_0_1_2_1 NCU_TOKENS=32768 NCU_SKIP=2 NCU_NAME=g1-32768 bash $D ncusrc
        NCU_KERNEL=moe_gemm_registered_1_256_4_2_0_1_2_1 NCU_TOKENS=32768 NCU_SKIP=3 NCU_NAME=g2-32768 bash $D ncusrc
        NCU_KERNEL=moe_router_mma_wide NCU_TOKENS=8192 NCU_SKIP=1 NCU_NAME=router-8192 bash $D ncusrc
        BENCH_TOKENS=1,8,32,128,512,1024,2048,8192,16384,32768 bash $D bench
        bash $D bench20b
        ;;
    *) echo "usage: pending.sh s23 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
