#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
#   s28:    (not yet run) the defaults adopted after the session's last call, checked where run 69 did not: descriptors by
#           adds (B = 1) on the three large-batch kernels. Run 69 ran `check --quick` and racecheck with each forced and
#           the bench's own check in every A/B row; this adds the full check, memcheck, the EP layer's bit-identity
#           check (its first run with B = 1) and the bench with the defaults (predicted: run 67/68's figures −1 to −3%
#           from 768 tokens).
#           Then, built and never run: 96-token tiles (registered_1_96_4_4_1_1_2_1: n64 up to 64 rows, n96 beyond, where
#           the 128-token default takes n128; activation boxes of 32 rows), checked (conformance, every stage on
#           gpt-oss-20b at 100–600 tokens, the sanitizers) and A/B'd against the default at 1536–4096: predicted −2 to
#           −6% at 1536–2048, level to +3% at 3072–4096 (experts past 96 rows take two tiles).
#           Then the 64-token kernel with its chunk loop unrolled by the ring depth and one wgmma
#           width (registered_1_64_4_4_1_1_2_1_0_0_1: n64 for every tile; 15 uniform instructions a chunk against 29),
#           checked and A/B'd against the default at 768–1280: predicted −1 to −3% at 1024–1280, −1 to +2% at 768 (where
#           most tiles lose n32's halving).
# Earlier parts ran as runs 45–69 (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s27) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh s28 [SECONDS]
set -u
part=${1:-s28}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    s28)
        bash $D info check checkfull
        DEBUG_VARIANT=registered_1_64_4_4_1_1_2_1_0_2 MEMCHECK_TOKENS=40,100 bash $D memcheck
        DEBUG_VARIANT=registered_1_256_4_2_1_1_2_1 MEMCHECK_TOKENS=40,300 bash $D memcheck
        DEBUG_VARIANT=registered_1_64_4_4_1_1_2_1_0_2 DEBUG_TOKENS=100,300,600 bash $D debug20b
        bash $D epcheck
        BENCH_TOKENS=1,8,32,128,512,768,1024,1280,2048,8192,16384,32768 bash $D bench
        bash $D bench20b
        MOE_CUDA_GEMM=registered_1_96_4_4_1_1_2_1 bash $D check
        DEBUG_VARIANT=registered_1_96_4_4_1_1_2_1 DEBUG_TOKENS=100,300,600 bash $D debug20b
        DEBUG_VARIANT=registered_1_96_4_4_1_1_2_1 RACE_TOKENS=40,300 MEMCHECK_TOKENS=40,300 bash $D racedefault memcheck
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_96_4_4_1_1_2_1@1536,2048,3072,4096" bash $D abenv
        MOE_CUDA_GEMM=registered_1_64_4_4_1_1_2_1_0_0_1 bash $D check
        DEBUG_VARIANT=registered_1_64_4_4_1_1_2_1_0_0_1 RACE_TOKENS=40,300 bash $D racedefault
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_64_4_4_1_1_2_1_0_0_1@768,1024,1280" bash $D abenv
        ;;
    *) echo "usage: pending.sh s28 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
