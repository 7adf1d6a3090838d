#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s35:    (not yet run) after run 76 (s34), which made EMPTY an mbarrier in every registered kernel (E = 1, now the only
#           form):
#           - the E = 1 defaults' `check --quick` (run 76 forced each through check, racecheck and memcheck);
#           - 32-token tiles with six consumer warps a scheduler, where the 64-token kernel has four (run 75: the
#             mid-size GEMMs wait on their own instruction chains: wait 27%, selected 15%, 7.2 cycles an issue): three
#             consumer warpgroups and two blocks an SM, or two and three; n32 only (16 accumulators). NVRTC 13.0: 64 and
#             56 registers, no spills, no serialised wgmma; the loop 253 instructions a chunk against the 64-token
#             kernel's n32 loop's 222. Each checked (conformance, racecheck, memcheck), then A/B'd at 256–1024.
#             Predicted −5 to −15% at 384–768 (if the stalls are latency, 1.5 times the warps hide more of it, less the
#             14% more instructions), level or worse at 1024 (experts past 32 rows take two tiles, each decoding the
#             weights);
#           - the E = 1 kernels' crossovers: 128-token tiles at 2048–2304 (96 default), 256 at 3072–3584 (128), 96 at
#             1024–1280 (64). Run 76's E = 1 gains were 3% for the 128-token kernel and level for the 96 and 256 ones,
#             so the crossovers may move by a few hundred tokens;
#           - the defaults' bench, then 8192 tokens alone for 4 s with the SM clock and power sampled (run 76 sampled
#             the whole bench step: median 1980 MHz, power up to 687 W, so a row's own clock was not seen).
# Earlier parts ran as runs 45–76 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s34) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s35 [SECONDS]
set -u
part=${1:-s35}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s35)
        bash $D info check
        G=registered_1
        for v in ${G}_32_4_3_1_1_2_1_0_0_0_2_1 ${G}_32_4_2_1_1_2_1_0_0_0_3_1; do
            MOE_CUDA_GEMM=$v bash $D check
            DEBUG_VARIANT=$v RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        done
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=${G}_32_4_3_1_1_2_1_0_0_0_2_1@256,384,512 MOE_CUDA_GEMM=${G}_32_4_2_1_1_2_1_0_0_0_3_1@256,384,512 MOE_CUDA_GEMM=${G}_32_4_3_1_1_2_1_0_0_0_2_1@768,1024 MOE_CUDA_GEMM=${G}_32_4_2_1_1_2_1_0_0_0_3_1@768,1024 MOE_CUDA_GEMM=${G}_128_4_4_1_1_2_1_0_0_0_1_1@2048,2304 MOE_CUDA_GEMM=${G}_256_4_2_1_1_2_1_0_0_0_1_1@3072,3584 MOE_CUDA_GEMM=${G}_96_4_4_1_1_2_1_0_0_0_1_1@1024,1280" bash $D abenv
        BENCH_TOKENS=1,8,32,128,256,320,384,512,768,1024,1280,1536,2048,2304,4096,8192,16384,32768 bash $D bench
        CLOCK_TOKENS=8192 bash $D benchclock  # run 76's samples spanned the whole bench (median 1980 MHz, up to 687 W)
        ;;
    *) echo "usage: pending.sh s35 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
