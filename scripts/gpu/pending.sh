#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s29:    (not yet run) the 96-token kernel as the default at 1281–2048 tokens (run 70: −1.6 / −1.7% at 1536, −4.2 / −5.4%
#           at 2048 against the 128-token kernel; +8.5 / +8.9% at 3072): the defaults' check and bench, then its
#           boundaries A/B'd from both sides (96 at 1280 and 2304–2560, 128 at 1536–2048). Then three kernels built and
#           never run, each checked (conformance, racecheck, memcheck) and A/B'd against the default:
#           - two blocks an SM of two consumer warpgroups (K = 2: registered_1_96_4_2_1_1_2_1_0_0_0_2 and the 64-token
#             registered_1_64_4_2_1_1_2_1_0_2_0_2), so one block's prologue and epilogue run under the other's wgmma:
#             predicted −3 to −8% at 768–2048 (the per-block fixed cost, ~10–15% of a block's time by arithmetic), less
#             or a loss at 3072 (two blocks read each activation chunk where one did);
#           - the 96-token kernel unrolled with n96 for every tile (registered_1_96_4_4_1_1_2_1_0_0_1): predicted ±2% at
#             1536–2048 (fewer control instructions against n96 for tiles of ≤ 64 rows);
#           and the 256-token kernel at 8192–12288 (the 128-token default there): predicted level to −3% (run 62's
#           −0.5% at 8192 was before descriptors by adds).
# Earlier parts ran as runs 45–70 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s28) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s29 [SECONDS]
set -u
part=${1:-s29}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s29)
        bash $D info check
        BENCH_TOKENS=1,8,32,128,512,768,1024,1280,1536,2048,2560,4096,8192,16384,32768 bash $D bench
        bash $D bench20b
        for v in registered_1_96_4_2_1_1_2_1_0_0_0_2 registered_1_64_4_2_1_1_2_1_0_2_0_2 registered_1_96_4_4_1_1_2_1_0_0_1; do
            MOE_CUDA_GEMM=$v bash $D check
            DEBUG_VARIANT=$v RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        done
        DEBUG_VARIANT=registered_1_96_4_2_1_1_2_1_0_0_0_2 DEBUG_TOKENS=100,300,600 bash $D debug20b
        G=MOE_CUDA_GEMM=registered_1
        AB_REPEAT=2 AB_ENVS="${G}_96_4_2_1_1_2_1_0_0_0_2@1536,2048,3072 ${G}_64_4_2_1_1_2_1_0_2_0_2@768,1024,1280 ${G}_96_4_4_1_1_2_1@1280,2304,2560 ${G}_128_4_4_1_1_2_1@1536,2048 ${G}_96_4_4_1_1_2_1_0_0_1@1536,2048 ${G}_256_4_2_1_1_2_1@8192,12288" bash $D abenv
        ;;
    *) echo "usage: pending.sh s29 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
