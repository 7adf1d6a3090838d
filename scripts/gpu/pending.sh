#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s36:    (not yet run) after run 77 (s35), which measured 32-token tiles with six consumer warps a scheduler at
#           −5.1 to −9.1% at 256–512 and −1.4 to −2.7% at 768, +14% at 1024; they are now the default at 256–799:
#           - the new defaults' `check --quick` and `ep-check.sh check` (run 77 forced the kernel through check,
#             racecheck and memcheck);
#           - the crossovers: the 32-token kernel at 128–224 (against the resident kernel) and 832–896 (against the
#             64-token one); from the other side, the 64-token kernel at 384 and 768 and the resident one at 256;
#           - 48-token tiles, the same six consumer warps a scheduler (n48, 64 registers, no spills or serialised
#             wgmma), checked, then A/B'd at 768–1280: predicted −3 to −8% at 1024–1280 against the 64-token kernel
#             (experts of 33–48 rows in one tile, as the 32-token kernel could not) and level at 768;
#           - the defaults' bench, gpt-oss-120b and 20b (by rows, 20b's 64–199 tokens take the 32-token kernel).
# Earlier parts ran as runs 45–77 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s35) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s36 [SECONDS]
set -u
part=${1:-s36}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s36)
        bash $D info check epcheck
        G=registered_1
        MOE_CUDA_GEMM=${G}_48_4_3_1_1_2_1_0_0_0_2_1 bash $D check
        DEBUG_VARIANT=${G}_48_4_3_1_1_2_1_0_0_0_2_1 RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=${G}_48_4_3_1_1_2_1_0_0_0_2_1@768,1024,1280" bash $D abenv
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=${G}_32_4_3_1_1_2_1_0_0_0_2_1@128,192,224 MOE_CUDA_GEMM=${G}_32_4_3_1_1_2_1_0_0_0_2_1@832,896 MOE_CUDA_GEMM=${G}_64_4_2_1_1_2_1_0_2_0_2_1@384,768 MOE_CUDA_GEMM=resident_1_1_8_1_3@256" bash $D abenv
        BENCH_TOKENS=1,8,32,128,256,320,384,512,768,1024,1280,1536,2048,2304,4096,8192,16384,32768 bash $D bench bench20b
        ;;
    *) echo "usage: pending.sh s36 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
