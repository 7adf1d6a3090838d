#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
# Earlier parts ran as runs 45–118 (runs 92, 94, 97, 98 and 100 were direct device-check.sh steps) (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s64) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8, s42 at 3d048b9, s43 at a7f5ccc, s44 at c474e18, s45 at fb27d54, s46 at 74aac56, s47 at fe11cc5, s49 at 8317dfc, s50 at 58c18d3, s51 at 3e43dd2, s52 at a257bbd, s53 at 1142318, s54 at abd7bb4, s55 at e43af17, s57 at f41bd80, s58 at 22e13f8, s59 at 23acc8e, s60 at 68253eb, s61 at 70ca1d4, s62 at 51a89a1, s63 at c42460e, s64 at 94a7b71, s65 at 30b02f0, s66 at 2d36d76, s67 at 7151c8a, s68 and s69 at cd9eddd (their part of run 117 typed into the call), s70 at 79af720, s71 and s72 at c9d7d5c; s48 was folded into s49; s56 was never committed: its steps are the commands run 103 printed, docs/cuda-runs/session30/run103/run.log), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
# once it has run.
#   usage (device): bash .device/pending.sh PART [SECONDS]
set -u
part=${1:-}
export DEADLINE=$(( $(date +%s) + ${2:-570} ))
D=.device/device-check.sh
for f in device-check.sh ep-check.sh pending.sh; do
    cmp -s .device/$f scripts/gpu/$f || echo "WARNING: .device/$f differs from scripts/gpu/$f: stale bundle (run scripts/gpu/bundle.sh)"
done
# Whether moe forward's tensors (outputs, top-k ids and weights) are the same bits with the settings SWITCHES as
# without, at each token count (gpt-oss-20b's shapes, one layer; printed to the run log as "=== same bits T=…").
same_bits() {  # same_bits "VAR=V [VAR2=V2]" TOKENS...
    local switches=$1 L=${OUT:-/tmp/moekit-out}/run.log; shift
    F=/tmp/bits; rm -rf $F; mkdir -p $F
    timeout 120 /tmp/moe init --preset gpt-oss-20b --out $F/model --layers 1 > /dev/null
    for T in "$@"; do
        python3 - $F/in-$T.safetensors $T <<'PY'
import json, random, struct, sys
T, H = int(sys.argv[2]), 2880
rng = random.Random(T)
data = b"".join(struct.pack("<f", rng.gauss(0, 1)) for _ in range(T * H))
header = json.dumps({"hidden_states": {"dtype": "F32", "shape": [T, H], "data_offsets": [0, len(data)]}}).encode()
header += b" " * (-len(header) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(header)) + header + data)
PY
        c="forward --model $F/model --layer 0 --input $F/in-$T.safetensors --backend cuda"
        timeout 120 /tmp/moe $c --output $F/base.safetensors > /dev/null 2>&1
        env $switches timeout 120 /tmp/moe $c --output $F/new.safetensors > /dev/null 2>&1
        python3 - $F/base.safetensors $F/new.safetensors "T=$T" <<'PY' 2>&1 | tee -a $L
import json, struct, sys
def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    return {k: raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in header.items() if k != "__metadata__"}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
same = a.keys() == b.keys() and all(a[k] == b[k] for k in a) and len(a) > 0
print(f"=== same bits {sys.argv[3]}: {'bit-identical' if same else 'DIFFERENT'} ({', '.join(sorted(a))})")
PY
    done
}
# The first check of a setting: `moe ARGS` (stage checks) with the settings SWITCHES, logged; its status is the check's.
first_check() {  # first_check "VAR=V [VAR2=V2]" SECONDS moe-arguments...
    local switches=$1 limit=$2 L=${OUT:-/tmp/moekit-out}/run.log; shift 2
    echo "=== first check: $switches moe $*" | tee -a $L
    env $switches timeout $limit /tmp/moe "$@" > /tmp/first.log 2>&1
    local rc=$?
    cat /tmp/first.log >> $L; tail -3 /tmp/first.log
    echo "=== first check rc=$rc" | tee -a $L
    return $rc
}
case $part in
    s73)  # session 36 (docs/bench-cuda.md Next 0c): at 2–4 tokens GEMM 1's bulk 4-warp blocks run in more than one wave
          # (run 118's trace at 2 tokens: 8 live tiles × 90 blocks, four an SM by shared memory, so 720 blocks in 528
          # places; most SMs' last block past its wait at 27–29 µs). resident_1_1_8_1_3 (45 blocks a tile, three an SM)
          # is one wave there and was last compared at 2–4 tokens in session 11. No build: kernels the binary has.
          # Next 0b, also no build: at 1 token GEMM 1 on fewer SMs so that more of GEMM 2's blocks start early (run
          # 118: those on GEMM 1's 12 idle SMs start at 8.4 µs and fill their rings under GEMM 1): resident_1_1_8_1_3
          # (180 blocks, three an SM: 60 SMs) or resident_1_1_4_1_4 (360 four-warp blocks, four an SM: 90 SMs) for
          # GEMM 1, GEMM 2 the default's; and GEMM 2 as resident_1_1_2_2_4 (four ring slots a warp: more of an early block's
          # weights in flight before its wait), alone and with the 60-SM GEMM 1; and both GEMMs in 180 blocks (GEMM 2 as
          # resident_1_1_4_2_3: every GEMM 2 block fits the 72 SMs GEMM 1 leaves, three an SM, by arithmetic).
        bash $D info
        AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=resident_1_1_8_1_3@2,3,4 MOE_CUDA_GEMM=resident_1_1_8_1_3+MOE_CUDA_GEMM2=resident_1_1_4_1_4@2,4 MOE_CUDA_GEMM=resident_1_1_8_1_3+MOE_CUDA_GEMM2=resident_1_1_2_4_3@1 MOE_CUDA_GEMM=resident_1_1_4_1_4+MOE_CUDA_GEMM2=resident_1_1_2_4_3@1 MOE_CUDA_GEMM2=resident_1_1_2_2_4@1 MOE_CUDA_GEMM=resident_1_1_8_1_3+MOE_CUDA_GEMM2=resident_1_1_2_2_4@1 MOE_CUDA_GEMM=resident_1_1_8_1_3+MOE_CUDA_GEMM2=resident_1_1_4_2_3@1" bash $D abenv
        TRACE_TOKENS=1,2,4 bash $D trace
        env MOE_CUDA_GEMM=resident_1_1_8_1_3 TRACE_TOKENS=2,4 bash $D trace
        env MOE_CUDA_GEMM=resident_1_1_8_1_3 MOE_CUDA_GEMM2=resident_1_1_2_4_3 TRACE_TOKENS=1 bash $D trace
        AB_PRESET=gpt-oss-20b AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=resident_1_1_8_1_3@2,4 MOE_CUDA_GEMM=resident_1_1_8_1_3+MOE_CUDA_GEMM2=resident_1_1_2_4_3@1" bash $D abenv
        ;;
    s74)  # session 37: MOE_CUDA_RING_WHOLE=1: at 1 token GEMM 2's warps (resident_1_1_2_4_3: K split in four, three
          # groups a warp, three ring slots) ask for their whole share before the tile wait instead of two groups, so the
          # blocks resident early hold all their weights when GEMM 1's tile lands. Alone and with s73's GEMM 1 on fewer SMs
          # (more GEMM 2 blocks early), and with bulk copies (lane 0 asks the copy engine for the three groups; run 43 had
          # bulk level at 1 token). Unlike run 43's resident_1_1_2_4_4 (+5.8 µs: four slots, so two blocks an SM and a
          # second wave) the ring keeps three slots and the blocks' shared memory. Predicted −0.3 to −1 µs alone; more with
          # the 60-SM GEMM 1 if that one does not lose.
        # (MOE_CUDA_GEMM forces both GEMMs; MOE_CUDA_GEMM2 then puts GEMM 2 back to the 1-token default.)
        sw=MOE_CUDA_RING_WHOLE=1
        if first_check "$sw" 120 cuda-debug --preset gpt-oss-20b --tokens 1,2; then
            same_bits "$sw" 1 2
            AB_REPEAT=2 AB_ENVS="$sw@1 $sw+MOE_CUDA_GEMM=resident_1_1_8_1_3+MOE_CUDA_GEMM2=resident_1_1_2_4_3@1 $sw+MOE_CUDA_GEMM=resident_1_1_4_1_4+MOE_CUDA_GEMM2=resident_1_1_2_4_3@1 $sw+MOE_CUDA_RESIDENT_BULK=1@1 $sw+MOE_CUDA_RESIDENT_BULK=1+MOE_CUDA_GEMM=resident_1_1_8_1_3+MOE_CUDA_GEMM2=resident_1_1_2_4_3@1" bash $D abenv
            env $sw TRACE_TOKENS=1 bash $D trace
            env $sw MOE_CUDA_GEMM=resident_1_1_8_1_3 MOE_CUDA_GEMM2=resident_1_1_2_4_3 TRACE_TOKENS=1 bash $D trace
            AB_PRESET=gpt-oss-20b AB_REPEAT=2 AB_ENVS="$sw@1" bash $D abenv
            env $sw MEMCHECK_TOKENS=1,2,7 bash $D memcheck
            env $sw RACE_TOKENS=1,7 bash $D racedefault
        fi
        ;;
    s75)  # session 37: MOE_CUDA_WIDE_ROUTER_HALF_BLOCKS=1: the wide router (8192 tokens of 120b on) in 8-warp blocks of
          # 32 tokens × 32 experts a warp, two an SM. By arithmetic on run 72's 56.7 µs at 8192 tokens (one wave: one block's
          # 90 steps of 32 k, ~1250 cycles a step at 1.98 GHz), the 16-warp block spends its steps in lockstep (ldmatrix
          # for all warps, then the HMMAs, then the barrier), and it asks shared memory for 3 x4 loads a 4 MMAs where
          # 32-token warps ask 4 for 8. The same sums in the same order, so the same bits (moe_router_mma_wide's default
          # SASS is unchanged but for register names in its split-K sum, which an unforced wide router never runs).
          # Predicted: the router −20 to −40% from 8192 (−11 to −23 µs at 8192, −44 to −87 at 32768: −0.4 to −0.8% of
          # the layer); a loss at 8192 if the block scheduler packs two blocks on 64 SMs (the trace's SM count says).
        sw=MOE_CUDA_WIDE_ROUTER_HALF_BLOCKS=1
        # Stage checks with one GEMM variant (every variant's host references at these sizes would not fit the step);
        # the same bits as the narrow router with K split (40, 300, 2000 tokens) and unsplit (8192).
        if first_check "$sw MOE_CUDA_ROUTER=wide" 150 cuda-debug --preset gpt-oss-20b --tokens 40,300 --variant resident_1_1_8_1_3; then
            same_bits "$sw MOE_CUDA_ROUTER=wide" 40 300 2000 8192
            TIMING_TOKENS=2048,8192,32768 bash $D timing
            env $sw TIMING_TOKENS=8192,32768 bash $D timing
            AB_REPEAT=2 AB_ENVS="$sw@8192,16384,32768 $sw+MOE_CUDA_ROUTER=wide@2048,4096" bash $D abenv
            env $sw TRACE_TOKENS=8192 bash $D trace
            env $sw MOE_CUDA_ROUTER=wide MEMCHECK_TOKENS=7,40 bash $D memcheck
            env $sw MOE_CUDA_ROUTER=wide RACE_TOKENS=7,40 bash $D racedefault
            # Where each form's warps wait (the lockstep reading): stall samples of the router alone at 8192 tokens.
            NCU_KERNEL=moe_router_mma_wide NCU_TOKENS=8192 NCU_NAME=router-wide NCU_SAMPLING=2 bash $D ncusrc
            env $sw NCU_KERNEL=moe_router_mma_wide NCU_TOKENS=8192 NCU_NAME=router-half NCU_SAMPLING=2 bash $D ncusrc
        fi
        ;;
    s76)  # session 37: MOE_CUDA_ROUTER_TOPK=1: the unsplit wide router (8192 tokens of 120b on) does moe_topk's work for
          # its 64-token tile (logits in its stages' shared memory, a warp a token, the two token blocks' histograms) and
          # no moe_topk is launched. By arithmetic: moe_topk took 16.4 µs at 8192 and 68.4 at 32768 (run 64); the tile's
          # top-k adds ~2–4 µs a router block (4 tokens a warp, ~1500 cycles a token by count: four rounds of two redux, lane 0's exps, the ids read back) over 1 and 3.9 waves. Predicted −10 to −15 µs at 8192
          # (−0.3 to −0.5%), −40 to −60 at 32768 (−0.4 to −0.6%); with s75's half blocks if those win.
        sw=MOE_CUDA_ROUTER_TOPK=1
        # Bits against the default path (narrow router + moe_topk on 20b): fused at 8192 (unsplit), not at 2000 (split).
        same_bits "$sw MOE_CUDA_ROUTER=wide" 2000 8192
        if grep "same bits T=8192" ${OUT:-/tmp/moekit-out}/run.log | tail -1 | grep -q bit-identical; then
            # and below the wide router's threshold, forced (32–64 blocks, run 62: +9.3 µs at 2048 alone), where the
            # top-k it takes on (11 µs at 2048, run 64) may pay for it.
            AB_REPEAT=2 AB_ENVS="$sw@8192,16384,32768 $sw+MOE_CUDA_WIDE_ROUTER_HALF_BLOCKS=1@8192,32768 $sw+MOE_CUDA_ROUTER=wide@2048,4096 $sw+MOE_CUDA_ROUTER=wide+MOE_CUDA_WIDE_ROUTER_HALF_BLOCKS=1@2048,4096" bash $D abenv
            env $sw TIMING_TOKENS=8192,32768 bash $D timing
            env $sw MOE_CUDA_ROUTER=wide MEMCHECK_TOKENS=40,300 bash $D memcheck
            env $sw MOE_CUDA_ROUTER=wide RACE_TOKENS=40,300 bash $D racedefault
        fi
        ;;
    *) echo "pending.sh: no part \"$part\" pending (see the header)" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
