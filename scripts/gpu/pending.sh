#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s51:    (not yet run; nineteen tries in session 27 found no machine) the 64-token kernel's n40 form stage-checked (ahead
#           by 0.3–2.0% at 1088–1407 in run 93; the default once its n40 loop is checked), then session 27's A/Bs:
#           MOE_CUDA_THREAD_OFFSETS=1 (the consumers' code and scale addresses from one per-thread offset: 6 instructions
#           a chunk fewer in the 96-token kernel's n80 / n96 loops, 3–5 in the 32-, 48-, 64- and 128-token kernels';
#           predicted 0 to −2%), the 96-token kernel with eight load slots (by hand 3 instructions a chunk fewer, two chunks more in
#           flight; predicted 0 to −1.5%), MOE_CUDA_PREFETCH_NEXT=1 (each block prefetches into L2 the first chunks of
#           the block a wave later; predicted −1 to −3% at 1536–8192) and all three; checked first (check --quick,
#           cuda-debug stage checks, all switches on); then the defaults benched and checked, and the 96-token kernel's
#           source counters at 2048 with all three.
# Earlier parts ran as runs 45–93 (runs 92 and 94 were direct device-check.sh steps) (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s44) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8, s42 at 3d048b9, s43 at a7f5ccc, s44 at c474e18, s45 at fb27d54, s46 at 74aac56, s47 at fe11cc5, s49 at 8317dfc, s50 at 58c18d3; s48 was folded into s49), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s51 [SECONDS]
set -u
part=${1:-s51}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s51)
        bash $D info
        DEBUG_TOKENS=300,2000 NEW_VARIANTS="registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1" bash $D debugnew
        MOE_CUDA_THREAD_OFFSETS=1 MOE_CUDA_PREFETCH_NEXT=1 bash $D check
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_THREAD_OFFSETS=1@512,1024,1280,2048,2560,2816 MOE_CUDA_PREFETCH_NEXT=1@1536,2048,4096,8192 MOE_CUDA_GEMM=registered_1_96_8_5_1_1_2_1_0_16_0_1_1_1@1536,2048,2560" bash $D abenv
        BENCH_TOKENS=1,8,32,128,256,512,1024,1088,1280,1407,1536,2048,2560,3072,4096,8192,32768 bash $D bench
        MOE_CUDA_THREAD_OFFSETS=1 MOE_CUDA_PREFETCH_NEXT=1 DEBUG_TOKENS=300,2000 NEW_VARIANTS="registered_1_96_8_5_1_1_2_1_0_16_0_1_1_1 registered_1_64_4_3_1_1_2_1_0_40_0_2_1_1" bash $D debugnew
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_THREAD_OFFSETS=1+MOE_CUDA_PREFETCH_NEXT=1+MOE_CUDA_GEMM=registered_1_96_8_5_1_1_2_1_0_16_0_1_1_1@1536,2048,2560 MOE_CUDA_PREFETCH_NEXT=1@512,1024,16384" bash $D abenv
        bash $D check
        MOE_CUDA_THREAD_OFFSETS=1 MOE_CUDA_PREFETCH_NEXT=1 MOE_CUDA_GEMM=registered_1_96_8_5_1_1_2_1_0_16_0_1_1_1 NCU_KERNEL=registered NCU_TOKENS=2048 NCU_SKIP=2 bash $D ncusrc
        ;;
    *) echo "usage: pending.sh s51 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
