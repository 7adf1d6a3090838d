#!/usr/bin/env bash
# Device calls prepared (policy: run 45 and stalls: run 47, session 12; rows: run 50, session 13; registered: runs 51–52; final: runs 53–55; next, wide, lean: runs 56–58; adopt: not yet run). Steps are cut at the deadline,
# most important first.
#   policy: session 11's default at 2–4 tokens (resident_1_1_4_1_4 for both GEMMs, its ring filled by the copy engine;
#           adopted on one round: 64.6 vs 67.8 µs at 2 tokens, 99.7 vs 117.6 at 4) against the pair it replaced,
#           twice, at 2, 3 and 4 tokens; whether it also wins at 8–16; the bulk switch at 1 token; racecheck and memcheck
#           of the kernel; the stream probe (new: the decode GEMMs' bytes read with no math, per in-flight layout);
#           EP bit-identity; the trace; the default bench; then the symmetric EP layer's kernels inside
#           its graph (MOE_CUDA_EP_TRACE=1, new: never run) at R = 1 and 2; the plan writing the tiles alone
#           (MOE_CUDA_EP_PLAN_TILES=1): bit-identity and launch overheads at R = 1.
#   stalls: (session 12, after run 46) the decode GEMMs' stall reasons at 1, 4 and 8 tokens (ncu, default kernels): run 46
#           showed the 1-token layer barely faster with its weights in L2 (36.3 against 38.6 µs), so GEMM 1's warps wait
#           on their own chains, not DRAM; which stall; then the L2-weights trace at 16–256 tokens beside the plain one.
#   rows:   (session 12; run 50: adopted, so gone from this script: at commit 69cacdc) the kernel chosen by rows an expert (MOE_CUDA_POLICY_ROWS=1) on gpt-oss-20b: run 49's
#           20b bench was 39.0% of floor at 128 tokens and 24.4% at 512, where 120b's token thresholds give it 8-row tiles
#           (16 rows an expert: each weight decoded two or three times) and 32-row tiles (64 rows an expert). Predicted:
#           20b at 128 tokens towards 120b's 512-token figure per row (≈ −30%), at 512 tokens −20% or more; 120b unchanged.
#   registered: (session 13) the large-batch kernel with the decode in the consumers' registers (registered_2_128_6/7:
#           register-A wgmma, a producer warpgroup that only copies, no decoded weights in shared memory) against the
#           default specialized_2_128_4_2 at 1024–32768 tokens; its checks; ncu of both at 8192. Predicted: by shared
#           memory traffic (~100 against ~164 KB a chunk) and no producer decode chain, −15 to −30% at 8192–32768 tokens.
#           Run 51 hung (setmaxnreg); run 52: correct, −4 to −8% at 2048–32768 tokens, +29% at 1024; 7 load slots worse.
#   final:  (session 13) the new defaults' checks and benches (120b, 20b), EP bit-identity, 4 and 5 load slots against
#           6, and where the registered kernel's warps wait (ncu source counters at 2048 tokens, stall reasons at 8192).
#           Runs 53–55: 4 slots fastest (adopted); bench of the 6-slot default; ncu stalls. (registered and final
#           are gone from this script with the 5- and 7-slot variants; their commands are in bench-cuda.md session 13.)
#   next, wide, lean: (sessions 13–14) ran as runs 56, 57 and 58 and are gone from this script (at commit cba9c55):
#           session 13's three variants (refuted), 256-token tiles and the staged epilogue (adopted), the lean producer
#           (adopted); predictions, figures and commands in bench-cuda.md and BENCHMARKS.md "Session 14".
#   adopt:  (session 14, not yet run) the lean default's bench and EP bit-identity; the 256-token lean kernel's full-width
#           tiles checked (cuda-debug, 2000 tokens of gpt-oss-20b) and A/B'd against the lean default directly (adopt it
#           from its crossover); 5 slots for it (3 chunks ahead); ncu of the default at 8192.
#   tensor: (session 15, not yet run) the producer's two new forms, each never run: copies from pointers
#           (registered_2_128_4_2_0_1_2: 90 / 74 instructions a full- / half-width chunk against the default's 121) and
#           tensor copies (…_2_1: the copy engine brings codes and scales, and GEMM 2's activations, from tensor maps;
#           FULL an mbarrier; every slot in flight). Bounded smoke runs first (a protocol error would hang), then
#           check, every stage on gpt-oss-20b at 100 / 300 / 2000 tokens, racecheck and memcheck, A/B against the
#           default at 2048 / 8192 / 32768 (256-token tensor kernel at 16384 / 32768), EP bit-identity with the symmetric
#           layer's GEMM 1 reading its dispatch region by tensor copies, and ncu of the tensor kernel at 8192; and three
#           consumer warpgroups of 64 rows with tensor copies (registered_1_128_4_3_0_1_2_1: run 56's 3-warpgroup kernel
#           waited on its producer), predicted −5 to −15% at 2048–8192 if the producer was what held it back; and GEMM 1's
#           rows gathered into sorted order first (MOE_CUDA_GATHER_ROWS=1: its activations by tensor copies as well, for
#           T·k·H·2 bytes more), predicted 0 to −6% against tensor copies alone; and the persistent form of the
#           three-warpgroup kernel (…_3_0_1_2_1_1: one block an SM, the ring across its tiles), −3 to −8% against it.
#           Predicted: pointers −2 to −6%, tensor copies −5 to −12% (GEMM 2's producer is one thread), most at 2048.
#   tensor2: the rest of it (a second call): the persistent kernel with two blocks (many tiles each) under check,
#           racecheck and memcheck; the gather's checks and A/B; EP bit-identity; the 256-token tensor kernel's A/B; ncu;
#           and (session 16) narrow tiles (…_0_0_1 / …_0_1: wgmma m64n32 for tiles of ≤ 32 rows) at 512–2048 tokens against
#           the staged 32-token kernel (512–1024) and the default (2048): the cp.async form predicted +10 to +40% at 512 (its
#           chunk takes ~1600–1950 cycles at any wgmma width: bench-cuda.md "Session 16"), the tensor-copy forms by their
#           chunk time.
#   one:    (session 16) the most telling steps of tensor, tensor2 and the narrow tiles in one call (loans were scarce).
#           Ran as run 59 (session 18, H100, cut at its deadline after the debug runs): figures in bench-cuda.md.
#   s18:    (session 18, after run 59) the second A/B round of run 59's winners (four consumer warpgroups with GEMM 1's rows
#           gathered; their narrow-tile form at 768–1536 tokens; the persistent kernel at 16384–32768), their checks,
#           racecheck / memcheck, EP bit-identity, and gpt-oss-20b. Ran as run 60: both adopted (GemmVariant.choose).
#   s19:    (not yet run) the new defaults' bench (120b, 20b), full check, EP, trace; then the crossover between narrow and
#           wide four-warpgroup tiles at 1280–1536 tokens; the persistent and 256-token kernels with the gather against
#           the new default at 8192–32768; where the new default's warps wait (ncu stall reasons at 8192). First, GEMM 2
#           in GEMM 1's grid at 1 token (MOE_CUDA_FUSED_DECODE=1, session 18): predicted −3 to −5 µs of ~43 (H100).
#   usage (device): bash .device/pending.sh policy|stalls|adopt|tensor|tensor2|one|s18|s19 [SECONDS]
set -u
part=${1:-policy}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
# smoke SECONDS TOKENS REPLAYS VARIANT...: a bounded bench of each variant never run before (a protocol error would
# hang), adding those that finish to $runnable and keeping their rows in the log; cut at the deadline.
smoke() {
    local limit=$1 tokens=$2 replays=$3 v; shift 3
    for v in "$@"; do
        [ $(( DEADLINE - $(date +%s) )) -lt 40 ] && break
        if timeout $limit env MOE_CUDA_GEMM=$v /tmp/moe bench --backend cuda --preset gpt-oss-120b --tokens $tokens \
            --iterations $replays --warmup 1 > /tmp/smoke.log 2>&1; then
            runnable+=" $v"
            { echo "=== smoke $v ($replays replays: a first look)"; grep -E "^check:|^ *(${tokens//,/|}) " /tmp/smoke.log; } \
                | tee -a ${OUT:-/tmp/moekit-out}/run.log
        else
            { echo "=== $v smoke run failed or hung: left out"; tail -5 /tmp/smoke.log; } | tee -a ${OUT:-/tmp/moekit-out}/run.log
        fi
    done
}
has() { case " $runnable " in *" $1 "*) return 0 ;; esac; return 1; }
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
case $part in
    policy)
        bash $D info check  # `check` (quick) reaches the new default through its T = 2 case
        bash $D stream  # new: how fast any kernel can read the decode GEMMs' bytes, per in-flight layout
        AB_ENVS="MOE_CUDA_GEMM=resident_1_1_4_2_3+MOE_CUDA_GEMM2=resident_1_1_2_4_3@2,3,4 MOE_CUDA_RESIDENT_BULK=1@1" bash $D abenv
        RACE_VARIANT=resident_1_1_4_1_4 MEMCHECK_TOKENS=2,4 bash $D racecheck2 memcheck
        DEBUG_TOKENS=2,3,4 bash $D debug debug20b  # every stage at the new default's sizes
        bash $D epcheck
        AB_REPEAT=1 AB_ENVS="MOE_CUDA_GEMM=resident_1_1_4_1_4@8,16 MOE_CUDA_GEMM2=resident_1_1_4_1_4@1" bash $D abenv
        TRACE_TOKENS=1,2,4,8 bash $D trace
        bash $D bench
        TRACE_TOKENS=1,8,128 bash $D eptrace  # the EP layer's kernels inside its graph at R = 1
        EP_RANKS=2 TRACE_TOKENS=2,16 bash $D eptrace  # two ranks sharing the GPU: the barriers' waits
        MOE_CUDA_EP_PLAN_TILES=1 bash $D epcheck  # plan and tiles in one launch alone: bit-identity
        bash $D eppdl  # R = 1 launch overheads: default, no PDL, three-kernel plan, fused barriers, plan writing tiles
        ;;
    stalls)
        bash $D info check  # session 11's kernels again (the tile-order change reverted)
        for T in 1 4 8; do NCU_TOKENS=$T bash $D ncudecstall; done
        for round in 1 2; do
            TRACE_TOKENS=16,32,64,128,256 bash $D trace
            MOE_CUDA_ALIAS_EXPERTS=1 TRACE_TOKENS=16,32,64,128,256 bash $D trace
        done
        ;;
    adopt)
        bash $D info check bench bench20b epcheck  # the lean default (registered_2_128_4_2_0_1_1): never benched in full
        NEW_VARIANTS=registered_1_256_4_2_0_1_1 DEBUG_TOKENS=2000 bash $D debugnew  # its lean full-width (256-row) tiles
        for v in registered_1_256_5_2_0_1_1 registered_1_256_5; do  # never run: a bounded smoke run each first
            timeout 60 env MOE_CUDA_GEMM=$v /tmp/moe bench --backend cuda --preset gpt-oss-120b --tokens 2048 --iterations 3 \
                --warmup 1 > /dev/null || { echo "=== $v smoke run failed or hung: stopping"; exit 1; }
            MOE_CUDA_GEMM=$v bash $D check
        done
        AB_ENVS="MOE_CUDA_GEMM=registered_1_256_4_2_0_1_1@8192,16384,32768 MOE_CUDA_GEMM=registered_1_256_5_2_0_1_1@16384,32768" bash $D abenv
        RACE_VARIANT=registered_1_256_5_2_0_1_1 MEM_VARIANT=registered_1_256_5_2_0_1_1 bash $D racedecoded memdecoded
        AB_PRESET=gpt-oss-20b AB_ENVS="MOE_CUDA_GEMM=registered_1_256_4_2_0_1_1@2048,4096,8192" bash $D abenv
        NCU_KERNEL=moe_gemm_registered NCU_TOKENS=8192 NCU_SKIP=2 NCU_NAME=lean8192 bash $D ncusrc  # where the default waits now
        ;;
    tensor|tensor2)
        bash $D info
        runnable=""
        # never run: a bounded smoke run each first (150 s: the first one also compiles the kernels with NVRTC)
        smoke 150 2048 3 registered_2_128_4_2_0_1_2 registered_2_128_4_2_0_1_2_1 registered_1_128_4_3_0_1_2_1 \
            registered_1_128_4_3_0_1_2_1_1 registered_1_256_4_2_0_1_2_1
        if [ $part = tensor ]; then for v in $runnable; do MOE_CUDA_GEMM=$v bash $D check; done; fi
        if [ $part = tensor ]; then  # the 128-token kernels against the default, then every stage at 2000 tokens
            specs=""
            for v in $runnable; do case $v in registered_1_256*) ;; *) specs+=" MOE_CUDA_GEMM=$v@2048,8192,32768" ;; esac; done
            AB_ENVS="$specs" bash $D abenv
            [ -n "$runnable" ] && NEW_VARIANTS="$runnable" DEBUG_TOKENS=300,2000 bash $D debugnew
            has registered_2_128_4_2_0_1_2_1 && RACE_VARIANT=registered_2_128_4_2_0_1_2_1 MEM_VARIANT=registered_2_128_4_2_0_1_2_1 \
                bash $D racedecoded memdecoded
        else  # tensor2: the persistent kernel's many-tile checks, the gather, the 256-token kernel, EP, ncu
            if has registered_1_128_4_3_0_1_2_1_1; then  # two blocks: each takes many tiles, even on tiny shapes
                MOE_CUDA_PERSISTENT_BLOCKS=2 MOE_CUDA_GEMM=registered_1_128_4_3_0_1_2_1_1 bash $D check
                MOE_CUDA_PERSISTENT_BLOCKS=2 RACE_VARIANT=registered_1_128_4_3_0_1_2_1_1 MEM_VARIANT=registered_1_128_4_3_0_1_2_1_1 \
                    bash $D racedecoded memdecoded
            fi
            if has registered_2_128_4_2_0_1_2_1; then  # GEMM 1's rows gathered first: its activations by tensor copies too
                MOE_CUDA_GATHER_ROWS=1 MOE_CUDA_GEMM=registered_2_128_4_2_0_1_2_1 bash $D check
                MOE_CUDA_GATHER_ROWS=1 NEW_VARIANTS=registered_2_128_4_2_0_1_2_1 DEBUG_TOKENS=100,2000 bash $D debugnew
                AB_ENVS="MOE_CUDA_GEMM=registered_2_128_4_2_0_1_2_1+MOE_CUDA_GATHER_ROWS=1@2048,8192,32768" bash $D abenv
                MOE_CUDA_GEMM=registered_2_128_4_2_0_1_2_1 bash $D epcheck
            fi
            has registered_1_256_4_2_0_1_2_1 && AB_ENVS="MOE_CUDA_GEMM=registered_1_256_4_2_0_1_2_1@16384,32768" bash $D abenv
            # narrow tiles (session 16, never run): wgmma m64n32 for tiles of ≤ 32 rows, against the staged 32-token
            # kernel at 512–1024 tokens and the default at 2048; a bounded smoke run first (at 512 tokens: narrow tiles)
            wide=$runnable runnable=""
            smoke 120 512 3 registered_2_128_4_2_0_1_1_0_0_1 registered_2_128_4_2_0_1_2_1_0_1
            narrow=$runnable runnable=$wide
            for v in $narrow; do MOE_CUDA_GEMM=$v bash $D check; done
            [ -n "$narrow" ] && NEW_VARIANTS="$narrow" DEBUG_TOKENS=60,100,300 bash $D debugnew  # 20b: 7.5–37.5 rows an expert
            specs=""
            for v in $narrow; do specs+=" MOE_CUDA_GEMM=$v@512,768,1024,2048"; done
            AB_ENVS="$specs" bash $D abenv
            has registered_2_128_4_2_0_1_2_1 && MOE_CUDA_GEMM=registered_2_128_4_2_0_1_2_1 NCU_KERNEL=moe_gemm_registered \
                NCU_TOKENS=8192 NCU_SKIP=2 NCU_NAME=tensor8192 bash $D ncusrc
        fi
        ;;
    one)  # session 16: loans scarce, so the most telling steps of tensor, tensor2 and narrow in one call, one A/B round
          # each first, then second rounds, then the rest as time allows
        bash $D info
        runnable=""
        # the default first, then each variant: 20 replays at 512, 2048 and 8192 tokens (bounded: a protocol error hangs)
        timeout 120 /tmp/moe bench --backend cuda --preset gpt-oss-120b --tokens 512,2048,8192 --iterations 20 --warmup 3 \
            > /tmp/smoke.log 2>&1
        { echo "=== smoke default (20 replays: a first look)"; grep -E "^check:|^ceilings:|^ *(512|2048|8192) " /tmp/smoke.log; } \
            | tee -a ${OUT:-/tmp/moekit-out}/run.log
        smoke 100 512,2048,8192 20 registered_2_128_4_2_0_1_2_1 registered_1_128_4_4_0_1_2_1 registered_1_128_4_3_0_1_2_1 \
            registered_2_128_6_2_0_1_2_1 registered_2_128_4_2_0_1_2_1_0_1 registered_2_128_4_2_0_1_1_0_0_1 \
            registered_1_256_4_2_0_1_2_1 registered_1_128_4_3_0_1_2_1_1 registered_1_128_4_4_0_1_2_1_0_1
        specs=""
        for v in $runnable; do
            case $v in
                *_0_1|*_0_0_1) specs+=" MOE_CUDA_GEMM=$v@512,1024,2048" ;;
                registered_1_256*) specs+=" MOE_CUDA_GEMM=$v@8192,16384,32768" ;;
                *) specs+=" MOE_CUDA_GEMM=$v@2048,8192,32768" ;;
            esac
        done
        AB_REPEAT=1 AB_ENVS="$specs" bash $D abenv  # first round: speed first (smoke runs ruled out hangs)
        # four consumer warpgroups with GEMM 1's rows gathered: one producer thread in both GEMMs
        has registered_1_128_4_4_0_1_2_1 && AB_REPEAT=1 \
            AB_ENVS="MOE_CUDA_GEMM=registered_1_128_4_4_0_1_2_1+MOE_CUDA_GATHER_ROWS=1@2048,8192,32768" bash $D abenv
        for v in $runnable; do MOE_CUDA_GEMM=$v bash $D check; done
        [ -n "$runnable" ] && NEW_VARIANTS="$runnable" DEBUG_TOKENS=60,300,2000 bash $D debugnew
        for v in registered_2_128_4_2_0_1_2_1 registered_1_128_4_4_0_1_2_1; do
            has $v && RACE_VARIANT=$v MEM_VARIANT=$v bash $D racedecoded memdecoded
        done
        has registered_1_128_4_4_0_1_2_1 && MOE_CUDA_GATHER_ROWS=1 MOE_CUDA_GEMM=registered_1_128_4_4_0_1_2_1 bash $D check
        if has registered_1_128_4_3_0_1_2_1_1; then
            MOE_CUDA_PERSISTENT_BLOCKS=2 MOE_CUDA_GEMM=registered_1_128_4_3_0_1_2_1_1 bash $D check
            MOE_CUDA_PERSISTENT_BLOCKS=2 RACE_VARIANT=registered_1_128_4_3_0_1_2_1_1 MEM_VARIANT=registered_1_128_4_3_0_1_2_1_1 \
                bash $D racedecoded memdecoded
        fi
        AB_REPEAT=1 AB_ENVS="$specs" bash $D abenv  # second round
        for v in registered_2_128_4_2_0_1_2_1 registered_1_128_4_4_0_1_2_1; do has $v && MOE_CUDA_GEMM=$v bash $D epcheck; done
        if has registered_2_128_4_2_0_1_2_1; then
            MOE_CUDA_GATHER_ROWS=1 MOE_CUDA_GEMM=registered_2_128_4_2_0_1_2_1 bash $D check
            AB_REPEAT=1 AB_ENVS="MOE_CUDA_GEMM=registered_2_128_4_2_0_1_2_1+MOE_CUDA_GATHER_ROWS=1@2048,8192,32768" bash $D abenv
        fi
        bash $D bench
        ;;
    s18)  # session 18, after run 59 (`one`): the winners' second A/B round and their checks, most important first
        W4=registered_1_128_4_4_0_1_2_1 N4=registered_1_128_4_4_0_1_2_1_0_1
        bash $D info
        MOE_CUDA_GATHER_ROWS=1 MOE_CUDA_GEMM=$W4 bash $D check
        MOE_CUDA_GEMM=$N4 bash $D check
        AB_REPEAT=1 AB_ENVS="MOE_CUDA_GEMM=$W4+MOE_CUDA_GATHER_ROWS=1@2048,8192,32768 MOE_CUDA_GEMM=$N4@768,1024,1536 \
            MOE_CUDA_GEMM=$N4+MOE_CUDA_GATHER_ROWS=1@1024,2048 MOE_CUDA_GEMM=registered_1_128_4_3_0_1_2_1_1@16384,32768" bash $D abenv
        MOE_CUDA_GATHER_ROWS=1 NEW_VARIANTS="$W4 $N4" DEBUG_TOKENS=60,300,2000 bash $D debugnew
        MOE_CUDA_GATHER_ROWS=1 RACE_VARIANT=$W4 MEM_VARIANT=$W4 bash $D racedecoded memdecoded
        MOE_CUDA_GEMM=$W4 bash $D epcheck
        AB_PRESET=gpt-oss-20b AB_REPEAT=1 AB_ENVS="MOE_CUDA_GEMM=$W4+MOE_CUDA_GATHER_ROWS=1@2048,8192 MOE_CUDA_GEMM=$N4@256,512" bash $D abenv
        RACE_VARIANT=$N4 MEM_VARIANT=$N4 bash $D racedecoded memdecoded
        ;;
    s19)  # session 18's defaults (four consumer warpgroups with tensor copies and the gather; narrow tiles at 769–1024)
        bash $D info check
        # GEMM 2 in GEMM 1's grid at 1 token (MOE_CUDA_FUSED_DECODE=1, never run): a bounded smoke run first (a tile wait
        # that never ends traps after ~2 s), then every stage on gpt-oss-20b (tiny's grids differ: not fused there),
        # two A/B rounds and the trace; its sanitizer runs come last (gpt-oss-20b under racecheck may be slow)
        fused=0
        if timeout 90 env MOE_CUDA_FUSED_DECODE=1 /tmp/moe bench --backend cuda --preset gpt-oss-120b --tokens 1 --iterations 20 \
            --warmup 3 > /tmp/smoke.log 2>&1; then
            fused=1
            { echo "=== smoke MOE_CUDA_FUSED_DECODE=1"; grep -E "^check:|^ +1 " /tmp/smoke.log; } | tee -a ${OUT:-/tmp/moekit-out}/run.log
            # engaged? the per-kernel timing then has no GEMM 2 row (one kernel ran both)
            { echo "=== timing MOE_CUDA_FUSED_DECODE=1"; MOE_CUDA_FUSED_DECODE=1 timeout 60 /tmp/moe cuda-debug --preset gpt-oss-120b \
                --timing --tokens 1 2>&1 | tail -12; } | tee -a ${OUT:-/tmp/moekit-out}/run.log
            MOE_CUDA_FUSED_DECODE=1 DEBUG_TOKENS=1 bash $D debug20b
            AB_REPEAT=2 AB_ENVS="MOE_CUDA_FUSED_DECODE=1@1" bash $D abenv
            MOE_CUDA_FUSED_DECODE=1 TRACE_TOKENS=1 bash $D trace
        else
            { echo "=== MOE_CUDA_FUSED_DECODE=1 smoke run failed or hung"; tail -5 /tmp/smoke.log; } | tee -a ${OUT:-/tmp/moekit-out}/run.log
        fi
        bash $D bench bench20b epcheck
        MOE_CUDA_GEMM=registered_1_128_4_4_0_1_2_1_0_1 bash $D epcheck  # narrow tiles in the EP layer: never run there
        TRACE_TOKENS=1,8,128,1024,2048,8192 bash $D trace
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=registered_1_128_4_4_0_1_2_1_0_1@1280,1536" bash $D abenv  # the policy's crossover
        AB_REPEAT=1 AB_ENVS="MOE_CUDA_GEMM=registered_1_128_4_3_0_1_2_1_1@8192,32768 \
            MOE_CUDA_GEMM=registered_1_256_4_2_0_1_2_1@16384,32768" bash $D abenv  # a first look with the gather
        NCU_TOKENS=8192 bash $D ncustall
        [ $fused = 1 ] && MOE_CUDA_FUSED_DECODE=1 SAN_TOKENS=1 bash $D race20b mem20b
        bash $D checkfull
        ;;
    *) echo "usage: pending.sh policy|stalls|adopt|tensor|tensor2|one|s18|s19 [SECONDS]" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
