#!/usr/bin/env bash
# The device call prepared for the next session; steps are cut at the deadline, most important first.
# Earlier parts ran as runs 45–113 (runs 92, 94, 97, 98 and 100 were direct device-check.sh steps) (policy, stalls, rows, registered, final, next, wide, lean, one, s18 … s64) or were
# folded into those that did (adopt, tensor, tensor2): their step lists are in git history (this file at commit 199af78
# holds policy … s19; s19 is at 11e528f, s20 at 85fa36b, s21 at e993663, s22 at d2242fd, s23 at 1119505, s24 at
# a336472, s25 at 0007b1f, s26 at d728a0a, s27 at 3497789, s28 at 6ce2c43, s29 at a8de53e, s30 at 94c00d5, s31 at c0a5fd8, s32 at 830b98e, s33 at 3af656e, s34 at a0039c7, s35 at 401ab97, s36 at 6272e43, s37 at 23adfca, s38 at b06bac2, s39 at 0ef71e6, s40 at f26db31, s41 at 5e698f8, s42 at 3d048b9, s43 at a7f5ccc, s44 at c474e18, s45 at fb27d54, s46 at 74aac56, s47 at fe11cc5, s49 at 8317dfc, s50 at 58c18d3, s51 at 3e43dd2, s52 at a257bbd, s53 at 1142318, s54 at abd7bb4, s55 at e43af17, s57 at f41bd80, s58 at 22e13f8, s59 at 23acc8e, s60 at 68253eb, s61 at 70ca1d4, s62 at 51a89a1, s63 at c42460e, s64 at 94a7b71, s65 at 30b02f0, s66 at 2d36d76; s48 was folded into s49; s56 was never committed: its steps are the commands run 103 printed, docs/cuda-runs/session30/run103/run.log), their commands, predictions and figures in docs/bench-cuda.md and BENCHMARKS.md. A part leaves this file
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
    s67)  # session 34 (docs/bench-cuda.md Next 0): the bench of the new default (the logits' sum's loads first, run 113),
          # then MOE_CUDA_ROUTER_LOADS_FIRST=1: moe_route_small's router weights asked for first and in before the x
          # slice's wait (ptxas issues most after it: a second round trip before the GEMV), the bias behind them.
          # Predicted −0.3 to −0.8 µs at 1–8 tokens.
        bash $D info
        bash $D bench
        sw="MOE_CUDA_ROUTER_LOADS_FIRST=1"
        if first_check "$sw" 120 cuda-debug --preset gpt-oss-20b --tokens 1,3,8; then
            AB_REPEAT=2 AB_ENVS="$sw@1,2,4,8" bash $D abenv
            env $sw TRACE_TOKENS=1,8 bash $D trace
            TRACE_TOKENS=1,8 bash $D trace
            same_bits "$sw" 1 8
            AB_PRESET=gpt-oss-20b AB_REPEAT=2 AB_ENVS="$sw@1,2,8" bash $D abenv
            env $sw bash $D check
            env $sw MEMCHECK_TOKENS=1,7 bash $D memcheck
            env $sw bash $D epcheck
        fi
        bash $D bench20b
        ;;
    s68)  # session 35 (docs/bench-cuda.md Next 0b, 0a): GEMM 1 at 1 token in two-warp blocks (resident_1_1_1_2_3: compact
          # bulk slots, eleven blocks an SM), so that its 1440 row groups spread 10–11 an SM instead of 12 on 96 SMs and
          # 8 on 36. Predicted 0 to −2 µs at 1 token (the heaviest SMs' work −8%); GEMM 2 stays resident_1_1_2_4_3.
        v=resident_1_1_1_2_3
        sw="MOE_CUDA_GEMM=$v+MOE_CUDA_GEMM2=resident_1_1_2_4_3"
        # Both GEMMs the two-warp kernel, then GEMM 2 the default's.
        if first_check "" 120 cuda-debug --preset gpt-oss-20b --tokens 1,3,8 --variant $v &&
           first_check "MOE_CUDA_GEMM2=resident_1_1_2_4_3" 120 cuda-debug --preset gpt-oss-120b --tokens 1 --variant $v; then
            same_bits "MOE_CUDA_GEMM=$v MOE_CUDA_GEMM2=resident_1_1_2_4_3" 1  # K split in two as resident_1_1_4_2_3: the same sums
            # GEMM 2's 8-warp blocks (71 KB) fit an SM only once ~4 two-warp GEMM 1 blocks have left it (eleven leave
            # 3 KB), where 36 SMs of the default's start with room for one: GEMM 2 also as 4-warp blocks (49 KB) and as
            # the two-warp kernel.
            AB_REPEAT=2 AB_ENVS="$sw@1 MOE_CUDA_GEMM=$v+MOE_CUDA_GEMM2=resident_1_1_2_2_4@1 MOE_CUDA_GEMM=$v@1" bash $D abenv
            # 2–4 tokens: the default's 4-warp whole-K blocks (resident_1_1_4_1_4, four an SM) run GEMM 1 in 1.36 / 2.7
            # waves (720 / 1440 blocks, 528 slots: the last round 36% / 73% full); two-warp blocks (8 / 6 an SM there,
            # the activation rows taking shared memory) come in units of one row group with half-K chains.
            AB_REPEAT=2 AB_ENVS="MOE_CUDA_GEMM=$v@2,4 MOE_CUDA_GEMM=$v+MOE_CUDA_GEMM2=resident_1_1_4_1_4@2,4" bash $D abenv
            env MOE_CUDA_GEMM=$v MOE_CUDA_GEMM2=resident_1_1_2_4_3 TRACE_TOKENS=1 bash $D trace
            TRACE_TOKENS=1 bash $D trace
            AB_PRESET=gpt-oss-20b AB_REPEAT=2 AB_ENVS="$sw@1" bash $D abenv
            DEBUG_VARIANT=$v MEMCHECK_TOKENS=1,7 bash $D memcheck
            RACE_VARIANT=$v bash $D racecheck2
        fi
        # Then MOE_CUDA_ROUTER_PREFETCH=1 (Next 0a): the tensor-core router's blocks ask L2 for GEMM 1's first 24 MB
        # (experts 0–2 of 120b) while DRAM idles under the routing chain. Predicted −3 to −10 µs at 512–2048 tokens
        # (GEMM 1's stream that much shorter where it is DRAM-bound), level at 8192+.
        sw=MOE_CUDA_ROUTER_PREFETCH=1
        if first_check "$sw" 180 cuda-debug --preset gpt-oss-20b --tokens 64,512,2048; then
            same_bits "$sw" 64 512
            AB_REPEAT=2 AB_ENVS="$sw@512,1024,2048 $sw+MOE_CUDA_ROUTER_PREFETCH_MB=40@512,2048" bash $D abenv
            env $sw TRACE_TOKENS=512 bash $D trace
            TRACE_TOKENS=512 bash $D trace
            env $sw MEMCHECK_TOKENS=40,200 bash $D memcheck
        fi
        ;;
    s69)  # session 35 (docs/bench-cuda.md Next 8): MOE_CUDA_GATHER_OVERLAP=1: past the in-place plan GEMM 1 starts once
          # moe_gather_sorted's 24 persistent blocks have started, each GEMM 1 block waiting for its own tile's rows.
          # Predicted (arithmetic on run 99's traces) −15 µs at 2048, −60 at 8192, −250 at 32768; a hang would trap
          # after ~3 s (the waits' bound). The memcheck forces the four-launch plan and no registered hand-over, so that
          # tiny's small batches take the overlap too.
        sw=MOE_CUDA_GATHER_OVERLAP=1
        if first_check "$sw" 240 cuda-debug --preset gpt-oss-20b --tokens 2048,4096 &&
           first_check "$sw" 240 cuda-debug --preset gpt-oss-120b --tokens 2048; then
            same_bits "$sw" 2048
            AB_REPEAT=2 AB_ENVS="$sw@2048,4096,8192,32768 $sw+MOE_CUDA_GATHER_BLOCKS=48@8192,32768" bash $D abenv
            env $sw TRACE_TOKENS=2048,8192 bash $D trace
            TRACE_TOKENS=2048,8192 bash $D trace
            env $sw MOE_CUDA_FUSED_PLAN=0 MOE_CUDA_HANDOVER_REGISTERED=0 MEMCHECK_TOKENS=300,1000 bash $D memcheck
        fi
        ;;
    *) echo "pending.sh: no part \"$part\" pending (see the header)" >&2; exit 2 ;;
esac
grep -hE "^=== (.* rc=|.* skipped: |unknown step )" ${OUT:-/tmp/moekit-out}/run.log
