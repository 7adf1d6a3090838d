#!/usr/bin/env bash
# ep-check.sh — GPU expert parallelism on the device machine, in one call: correctness (R = 1..4 rank processes
# sharing the GPU, bit-identical to the single-rank CUDA forward, both comm paths, both routing modes, several
# expert maps), a killed rank, then symmetric vs all-to-all timings at 1, 8, 32, 128, 256 tokens per rank for
# R = 2 and R = 4, a short table last.
#
# Ranks here SHARE ONE GPU (time-sliced contexts, CUDA IPC within the device): the timings measure correctness
# and the paths' overheads (launches, barriers, host synchronisation, copies), not NVLink speed.
#
# The `nccl` step checks the NCCL all-to-all transport as far as one GPU allows: R = 1 with NCCL forced (a
# communicator of one, send/recv to self) bit-identical to the single-rank CUDA forward; forced NCCL with two
# ranks of one node on the one GPU refused at once with the reason; auto picking IPC.
#
# The `nodes` step runs the symmetric path across loopback "nodes" on this machine (N launchers with --nodes N,
# NCCL over sockets on lo between the rails; each node is its own host to NCCL through NCCL_HOSTID, so ranks
# of different nodes may share the GPU): bit-identity for N×L = 2×1, 2×2, 3×1, a rank on node 1 killed and one stalled, and
# symmetric vs all-to-all (NCCL) timings for 2×1. Loopback sockets and a shared GPU: correctness and overheads,
# not InfiniBand or NVLink speed.
#
# The `multigpu` step is the multi-GPU issue's run (one process per GPU); with FAULT_RANKS=<GPUs> the `fault`
# step kills a rank of a job spread over every GPU.
#
#   usage: bash .device-ep/ep-check.sh [steps...]   steps: check checkbig fault bench nccl nodes multigpu pdl serve forward mps (default: check fault bench)
#   env:   MOE (binary, default .device-ep/moe), OUT (logs), PRESET (bench model, default gpt-oss-20b)
set -u
OUT=${OUT:-/tmp/ep-out}
mkdir -p "$OUT"
MOE=${MOE:-./.device-ep/moe}
PRESET=${PRESET:-gpt-oss-20b}
export MOE_KERNEL_CACHE=/tmp/moekit-kernels
LOG="$OUT/ep.log"
SUMMARY=""
FAILED=0

note() { SUMMARY+="$1\n"; }

run() {  # run NAME LIMIT command...: full output to the log, the check lines to stdout
    local name=$1 limit=$2; shift 2
    echo "=== $name: $*" | tee -a "$LOG"
    local t0=$(date +%s%N)
    # --foreground: stay in the step's process group, so a step timeout of device-check.sh ends these runs too.
    timeout --foreground "$limit" "$@" > "$OUT/step.log" 2>&1
    finish_step "$name" $? "$t0"
}

# finish_step NAME RC T0: $OUT/step.log to the log, its check lines to stdout, pass/fail and the summary line.
finish_step() {
    local name=$1 rc=$2 dt=$(( ($(date +%s%N) - $3) / 1000000000 ))
    cat "$OUT/step.log" >> "$LOG"
    grep -E "check R=|differ|error|Error|EPROW|transport:|note:|rank [0-9]+\]: .*(failed|stopped)" "$OUT/step.log" | grep -v "^\s*$" | tail -n "${TAIL:-40}"
    local bad=$(grep -c "values differ" "$OUT/step.log")
    echo "=== $name rc=$rc ($dt s)" | tee -a "$LOG"
    [ "$rc" = 0 ] && [ "$bad" = 0 ] || FAILED=$((FAILED + 1))
    note "$(printf '%-34s rc=%-3s %5ss  %s' "$name" "$rc" "$dt" "$(grep -c 'bit-identical' "$OUT/step.log") bit-identical checks, $bad differing")"
}

# runnodes NAME LIMIT N L args...: N loopback node launchers of L ranks each running `moe args...`; merged output
# counted like `run` (rc: the first failing node's).
runnodes() {
    local name=$1 limit=$2 N=$3 L=$4; shift 4
    echo "=== $name: N=$N L=$L $*" | tee -a "$LOG"
    local port=$((20000 + RANDOM % 20000)) t0=$(date +%s%N) pids=() rc=0
    for node in $(seq 0 $((N - 1))); do
        NCCL_SOCKET_IFNAME=lo NCCL_IB_DISABLE=1 timeout --foreground -s KILL "$limit" $MOE launch --nodes $N --node-rank $node \
            --master 127.0.0.1:$port --ranks $L --timeout 60 --kill-grace 4 -- "$@" > "$OUT/node-$node.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do wait "${pids[$i]}"; local r=$?; [ "$rc" = 0 ] && rc=$r; done
    cat $(for node in $(seq 0 $((N - 1))); do echo "$OUT/node-$node.log"; done) > "$OUT/step.log"
    finish_step "$name" "$rc" "$t0"
}

# Fault helpers: wait (≤ 90 s) for TEXT in LOG, then 1 s more; the pid of rank 1 of the fault bench (tiny, 512-token
# batches); milliseconds from T0 (ns) until rank 0 printed its error (≤ 30 s).
wait_for() { for i in $(seq 1 900); do grep -q "$2" "$1" && break; sleep 0.1; done; sleep 1; }
rank_one_pid() {
    for pid in $(pgrep -f "bench --backend cuda --preset tiny --tokens 512"); do
        if tr '\0' '\n' < /proc/$pid/environ 2>/dev/null | grep -qx "MOE_RANK=1"; then echo $pid; fi
    done | tail -n 1
}
ms_until_rank_zero_error() {
    for i in $(seq 1 300); do grep -q "\[rank 0\] Error" "$1" && break; sleep 0.1; done
    echo $(( ($(date +%s%N) - $2) / 1000000 ))
}

# per_rank_tokens R n…: the global batch sizes that give each of R ranks n tokens, comma-separated.
per_rank_tokens() { local R=$1; shift; local list=""; for n in "$@"; do list+="$((n * R)),"; done; echo "${list%,}"; }

steps=${*:-"check fault bench"}
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader | tee -a "$LOG"
ls /dev/shm | grep -c moe- | sed 's/^/shm segments before: /'

for s in $steps; do
    case $s in
    checkbig)
        # gpt-oss-20b shapes (H = 2880): the router splits K at these batch sizes, so ranks must use the global split.
        for R in 2 3; do
            run "check gpt-oss-20b R=$R" 300 $MOE launch --ranks $R --timeout 60 -- \
                bench --backend cuda --preset gpt-oss-20b --tokens $((8 * R)) --iterations 2 --warmup 0
        done
        ;;
    check)
        # tiny model: every case (padding, 1 token per rank, T=1, router MMA path, skewed layer, both modes), R=1..4.
        for R in 1 2 3 4; do
            run "check tiny R=$R contiguous" 200 $MOE launch --ranks $R --timeout 30 -- \
                bench --backend cuda --preset tiny --tokens $((8 * R)) --iterations 2 --warmup 0
        done
        run "check tiny R=3 round-robin" 200 $MOE launch --ranks 3 --timeout 30 -- \
            bench --backend cuda --preset tiny --expert-map round-robin --tokens 12 --iterations 2 --warmup 0
        run "check tiny R=2 explicit map" 200 $MOE launch --ranks 2 --timeout 30 -- \
            bench --backend cuda --preset tiny --expert-map 1,1,1,0,1,0,1,1 --tokens 8 --iterations 2 --warmup 0
        run "check tiny R=4 explicit map" 200 $MOE launch --ranks 4 --timeout 30 -- \
            bench --backend cuda --preset tiny --expert-map 3,3,0,1,2,3,1,2 --routing softmax-first --tokens 16 --iterations 2 --warmup 0
        # The three-kernel global plan (the one-block plan serves every case above).
        MOE_CUDA_EP_SMALL_PLAN=0 run "check tiny R=3 three-kernel plan" 200 $MOE launch --ranks 3 --timeout 30 -- \
            bench --backend cuda --preset tiny --tokens 24 --iterations 2 --warmup 0
        ;;
    fault)
        # Three faults on R=2 tiny runs, device timeout 8 s (moe launch --timeout):
        #  kill:  rank 1 SIGKILLed mid-run (wherever it is: device or host barrier);
        #  stall: rank 1 stops before a symmetric graph (GPUEP_STALL_RANK=1): rank 0 waits inside a DEVICE barrier
        #         and must stop at the device timeout with an error naming rank 1 and the phase;
        #  stall+kill: the same, then rank 1 is SIGKILLed: the CPU heap's liveness probe must abort rank 0's device
        #         barrier at once (well inside the timeout).
        # (GPUEP_STALL_RANK: a test switch outside the engine's MOE_* settings, which launched ranks inherit.)
        tokens=$(printf '512,%.0s' $(seq 1 8)); tokens=${tokens%,}
        for kind in ${FAULTS:-kill stall stallkill}; do
            echo "=== fault $kind" | tee -a "$LOG"
            stall=""; [ "$kind" != kill ] && stall=1
            GPUEP_STALL_RANK=$stall timeout --foreground -s KILL 90 $MOE launch --ranks ${FAULT_RANKS:-2} --timeout 8 --kill-grace 4 -- \
                bench --backend cuda --preset tiny --tokens "$tokens" --iterations 200 --warmup 0 > "$OUT/fault-$kind.log" 2>&1 &
            launcher=$!
            marker="50 replays"; [ -n "$stall" ] && marker="stalling before"
            wait_for "$OUT/fault-$kind.log" "$marker"
            victim=$(rank_one_pid)
            t0=$(date +%s%N)
            [ "$kind" != stall ] && [ -n "$victim" ] && kill -9 "$victim"
            # rank 0's error line is the end of the wait (the launcher then ends the stalled rank after --kill-grace)
            dt=$(ms_until_rank_zero_error "$OUT/fault-$kind.log" $t0)
            wait $launcher; rc=$?
            cat "$OUT/fault-$kind.log" >> "$LOG"
            grep -E "\[rank 0\] Error" "$OUT/fault-$kind.log" | tail -n 2
            named=$(grep -E "\[rank 0\] Error" "$OUT/fault-$kind.log" | grep -cE "rank 1")
            leftover=$(ls /dev/shm | grep -c moe-)
            echo "=== fault $kind: victim pid ${victim:-none}, launcher rc=$rc, rank 0 stopped ${dt} ms after the kill/stall point, errors naming rank 1: $named, shm segments left: $leftover" | tee -a "$LOG"
            if [ -z "$victim" ] || [ "$rc" = 0 ] || [ "$named" = 0 ] || [ "$leftover" != 0 ]; then FAILED=$((FAILED + 1)); fi
            note "$(printf '%-34s rc=%-3s %6sms  %s' "fault $kind (rank 1)" "$rc" "$dt" "error naming rank 1: $named; shm left: $leftover")"
        done
        ;;
    nccl)
        # 1. R=1, NCCL forced: every check case through the all-to-all baseline over a communicator of one.
        run "nccl R=1 forced, tiny checks" 200 $MOE launch --ranks 1 --timeout 30 -- \
            bench --backend cuda --preset tiny --a2a-transport nccl --tokens 8 --iterations 2 --warmup 0
        t=$(grep -c "transport: .*all-to-all baseline: NCCL grouped ncclSend/ncclRecv .*forced" "$OUT/step.log")
        a=$(grep -c "all-to-all bit-identical" "$OUT/step.log")
        echo "=== nccl R=1: transport line names NCCL: $t; all-to-all bit-identical cases: $a" | tee -a "$LOG"
        if [ "$t" = 0 ] || [ "$a" -lt 14 ]; then FAILED=$((FAILED + 1)); fi
        note "$(printf '%-34s %s' "nccl R=1 transport line" "names NCCL: $t, all-to-all bit-identical: $a (want ≥ 14)")"
        # 2. R=1 timings, NCCL vs IPC for the all-to-all baseline (same binary, same model, one after the other).
        for tr in nccl ipc; do
            TAIL=20 run "nccl R=1 bench $PRESET a2a=$tr" 200 $MOE launch --ranks 1 --timeout 60 -- \
                bench --backend cuda --preset $PRESET --a2a-transport $tr --tokens 1,8,32,128 --iterations 20 --warmup 3
            grep "EPROW" "$OUT/step.log" >> "$OUT/eprows.txt"
        done
        # 3. Forced NCCL, 2 ranks of one node on the one GPU: refused at once (well inside --timeout 30), naming the
        #    reason. (Two loopback NODES sharing the GPU are two hosts to NCCL, NCCL_HOSTID per node: step `nodes`.)
        echo "=== nccl refusal (one node)" | tee -a "$LOG"
        t0=$(date +%s%N)
        timeout --foreground -s KILL 60 $MOE launch --ranks 2 --timeout 30 --kill-grace 2 -- \
            bench --backend cuda --preset tiny --a2a-transport nccl --tokens 4 --iterations 1 --warmup 0 > "$OUT/refusal.log" 2>&1
        rc=$?
        dt=$(( ($(date +%s%N) - t0) / 1000000 ))
        cat "$OUT/refusal.log" >> "$LOG"
        grep -E "Error" "$OUT/refusal.log" | head -n 2
        named=$(grep -c "needs one GPU per rank, but ranks 0 and 1 share GPU 0" "$OUT/refusal.log")
        echo "=== nccl refusal (one node): rc=$rc, ${dt} ms, errors naming the shared GPU: $named" | tee -a "$LOG"
        if [ "$rc" = 0 ] || [ "$named" = 0 ] || [ "$dt" -gt 25000 ]; then FAILED=$((FAILED + 1)); fi
        note "$(printf '%-34s rc=%-3s %6sms  %s' "nccl forced, 2 ranks 1 GPU (one node)" "$rc" "$dt" "errors naming the shared GPU: $named")"
        # 4. auto with 2 ranks on the one GPU: IPC, and the transport line says why.
        run "nccl auto R=2 (shared GPU)" 200 $MOE launch --ranks 2 --timeout 30 -- \
            bench --backend cuda --preset tiny --tokens 4 --iterations 1 --warmup 0
        w=$(grep -c "all-to-all baseline: cuMemcpyDtoDAsync .*(auto: ranks 0 and 1 share GPU 0.*Duplicate GPU detected" "$OUT/step.log")
        echo "=== nccl auto R=2: transport line says IPC because the GPU is shared: $w" | tee -a "$LOG"
        [ "$w" = 0 ] && FAILED=$((FAILED + 1))
        note "$(printf '%-34s %s' "nccl auto R=2 transport line" "IPC, reason given: $w")"
        ;;
    pdl)
        # The symmetric layer's launch overheads, R = 1 (no time-slicing, so they are visible), alternating twice:
        # the default (programmatic launches, one-block global plan; session 5) against MOE_CUDA_PDL=0, against
        # MOE_CUDA_EP_SMALL_PLAN=0 (the three-kernel plan) and against MOE_CUDA_EP_FUSED=1 (barriers fused into the
        # kernels before them, plan and tiles in one kernel; session 8) and against MOE_CUDA_EP_PLAN_TILES=1 (plan and
        # tiles in one kernel alone; session 11). The EPROW lines carry the symmetric µs.
        for repeat in 1 2; do
            for variant in default MOE_CUDA_PDL=0 MOE_CUDA_EP_SMALL_PLAN=0 MOE_CUDA_EP_FUSED=1 MOE_CUDA_EP_PLAN_TILES=1; do
                TAIL=8 run "$variant R=1 $PRESET ($repeat)" 200 env $([ $variant = default ] || echo $variant) $MOE launch --ranks 1 --timeout 60 -- \
                    bench --backend cuda --preset $PRESET --tokens 1,8,32,128 --iterations 30 --warmup 3
                grep "EPROW" "$OUT/step.log" | sed "s/\$/ variant=$variant/" >> "$OUT/pdlrows.txt"
            done
        done
        cat "$OUT/pdlrows.txt"
        ;;
    multigpu)
        # The multi-GPU issue, one process per GPU (G = all GPUs, then 2): gpt-oss-120b correctness on both paths
        # (uneven routing included: the skewed layer), then timings at 1…4096 tokens per rank with the peer-copy
        # ceiling of the same run, then a killed rank on the GPUs (step `fault` with FAULT_RANKS=G).
        # GPUs as CUDA sees them (MIG lines and CUDA_VISIBLE_DEVICES would make `nvidia-smi -L` wrong), and how they
        # are linked: P2P is what the symmetric path and the IPC copies need.
        G=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
        nvidia-smi --query-gpu=index,name,compute_mode,pci.bus_id --format=csv | tee -a "$LOG"
        nvidia-smi topo -m 2>&1 | tee -a "$LOG"
        nvidia-smi topo -p2p r 2>&1 | tee -a "$LOG"
        # A few seconds first: the tiny layer at R = G, each rank on its own GPU; its transport line must say so.
        run "multigpu check tiny R=$G" 200 $MOE launch --ranks $G --timeout 60 -- \
            bench --backend cuda --preset tiny --tokens $((8 * G)) --iterations 2 --warmup 0
        grep -q "all-to-all baseline: NCCL" "$OUT/step.log" || { echo "=== multigpu: the ranks did not get a GPU each (no NCCL transport): the timings below are not the multi-GPU result" | tee -a "$LOG"; FAILED=$((FAILED + 1)); }
        # NCCL has never run with one rank per GPU here: if it fails, measure the rest against the IPC baseline.
        A2A=""
        if grep -qE "Error.*(NCCL|nccl)" "$OUT/step.log"; then
            echo "=== multigpu: NCCL failed on the tiny layer; the runs below use --a2a-transport ipc" | tee -a "$LOG"
            A2A="--a2a-transport ipc"
        fi
        for R in $(printf '%s\n' $G 2 | awk '!seen[$0]++'); do
            [ "$R" -gt "$G" ] && continue
            run "multigpu check 120b R=$R" 580 $MOE launch --ranks $R --timeout 60 -- \
                bench --backend cuda --preset gpt-oss-120b --tokens $((8 * R)) --iterations 2 --warmup 0 $A2A
            grep -E "transport:|ceiling:" "$OUT/step.log" | head -n 2
        done
        TAIL=60 run "multigpu bench 120b R=$G" 580 $MOE launch --ranks $G --timeout 60 -- \
            bench --backend cuda --preset gpt-oss-120b --tokens "$(per_rank_tokens $G 1 8 32 128 256 1024 4096)" --iterations 20 --warmup 3 --json "$OUT/multigpu-bench.json" $A2A
        grep "EPROW" "$OUT/step.log" >> "$OUT/eprows.txt"
        ;;
    nodes)
        for shape in "2 1" "2 2" "3 1"; do
            set -- $shape
            runnodes "nodes N=$1 L=$2 tiny" 300 $1 $2 bench --backend cuda --preset tiny --tokens $((8 * $1 * $2)) --iterations 2 --warmup 0
            sym=$(grep -c "symmetric graph bit-identical" "$OUT/step.log")
            echo "=== nodes N=$1 L=$2: symmetric graph bit-identical cases: $sym" | tee -a "$LOG"
            [ "$sym" -lt 10 ] && FAILED=$((FAILED + 1))
        done
        runnodes "nodes N=2 L=1 gpt-oss-20b" 300 2 1 bench --backend cuda --preset gpt-oss-20b --tokens 16 --iterations 2 --warmup 0
        # A rank of node 1 killed mid-run, then one that stalls before a symmetric graph (GPUEP_STALL_RANK): node 0's
        # rank must stop with an error naming rank 1, at once for the kill (the lost TCP connection), and within the
        # 10 s timeout for the stall (no barrier progress while its NCCL receive waits).
        tokens=$(printf '512,%.0s' $(seq 1 8)); tokens=${tokens%,}
        for kind in kill stall; do
            echo "=== nodes fault $kind (rank 1 on node 1)" | tee -a "$LOG"
            stall=""; [ "$kind" = stall ] && stall=1
            port=$((20000 + RANDOM % 20000))
            for node in 0 1; do
                GPUEP_STALL_RANK=$stall NCCL_SOCKET_IFNAME=lo NCCL_IB_DISABLE=1 timeout --foreground -s KILL 120 $MOE launch --nodes 2 --node-rank $node \
                    --master 127.0.0.1:$port --ranks 1 --timeout 10 --kill-grace 4 -- \
                    bench --backend cuda --preset tiny --tokens "$tokens" --iterations 200 --warmup 0 > "$OUT/nodefault-$kind-$node.log" 2>&1 &
                eval "launcher$node=$!"
            done
            marker="50 replays"; [ -n "$stall" ] && marker="stalling before"
            wait_for "$OUT/nodefault-$kind-0.log" "50 replays"
            [ -n "$stall" ] && wait_for "$OUT/nodefault-$kind-1.log" "$marker"
            victim=$(rank_one_pid)
            t0=$(date +%s%N)
            [ "$kind" = kill ] && [ -n "$victim" ] && kill -9 "$victim"
            dt=$(ms_until_rank_zero_error "$OUT/nodefault-$kind-0.log" $t0)
            wait $launcher0; rc=$?
            kill -TERM $launcher1 2>/dev/null  # a stalled rank never ends by itself
            wait $launcher1
            cat "$OUT/nodefault-$kind-0.log" "$OUT/nodefault-$kind-1.log" >> "$LOG"
            grep -E "\[rank 0\] Error" "$OUT/nodefault-$kind-0.log" | tail -n 2
            named=$(grep -E "\[rank 0\] Error" "$OUT/nodefault-$kind-0.log" | grep -cE "rank 1")
            leftover=$(ls /dev/shm | grep -c moe-)
            echo "=== nodes fault $kind: victim ${victim:-none}, node-0 launcher rc=$rc, rank 0 stopped ${dt} ms after the kill/stall point, errors naming rank 1: $named, shm left: $leftover" | tee -a "$LOG"
            if [ -z "$victim" ] || [ "$rc" = 0 ] || [ "$named" = 0 ] || [ "$leftover" != 0 ]; then FAILED=$((FAILED + 1)); fi
            note "$(printf '%-34s rc=%-3s %6sms  %s' "nodes fault $kind (rank 1, node 1)" "$rc" "$dt" "error naming rank 1: $named; shm left: $leftover")"
        done
        # Timings across the two loopback nodes: symmetric (rails) vs all-to-all (NCCL), gpt-oss-20b.
        TAIL=30 runnodes "nodes bench $PRESET N=2 L=1" 300 2 1 bench --backend cuda --preset $PRESET --tokens 2,16,64,256 --iterations 20 --warmup 3 \
            --json "$OUT/nodes-bench.json"
        grep "EPROW" "$OUT/step.log" >> "$OUT/eprows.txt"
        ;;
    forward)
        # moe forward --ranks on the GPU (wired in session 6, never run on one before): the output tensors of 2 ranks
        # (symmetric) and 3 ranks (all-to-all) bit for bit those of one CUDA rank; tiny model, 9 tokens.
        F="$OUT/forward"; rm -rf "$F"; mkdir -p "$F"
        $MOE init --preset tiny --out "$F/model" --layers 1 > /dev/null
        python3 - "$F/in.safetensors" <<'PY'
import json, random, struct, sys
T, H = 9, 128  # tiny: H = 128
rng = random.Random(3)
data = b"".join(struct.pack("<f", rng.gauss(0, 1)) for _ in range(T * H))
header = json.dumps({"hidden_states": {"dtype": "F32", "shape": [T, H], "data_offsets": [0, len(data)]}}).encode()
header += b" " * (-len(header) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(header)) + header + data)
PY
        common="forward --model $F/model --layer 0 --input $F/in.safetensors --backend cuda"
        run "forward R=1 cuda" 120 $MOE $common --output "$F/one.safetensors"
        for pair in "2 symmetric" "3 alltoall"; do
            read -r R comm <<< "$pair"
            run "forward R=$R $comm" 200 $MOE $common --output "$F/ep-$R.safetensors" --ranks $R --comm $comm --rank-timeout 60
            # The tensors, not the files: the metadata names the backend.
            python3 - "$F/one.safetensors" "$F/ep-$R.safetensors" <<'PY' 2>&1 | sed "s/^/forward R=$R $comm: /" | tee -a "$LOG" "$OUT/forward.txt"
import json, struct, sys
def tensors(path):
    b = open(path, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items() if k != "__metadata__"}
try:
    one, ep = tensors(sys.argv[1]), tensors(sys.argv[2])
    bad = [k for k in one if one[k] != ep.get(k)]
    print("output tensors bit-identical to one rank" if not bad and one.keys() == ep.keys() else f"values differ in {bad}")
except Exception as e:
    print(f"values differ: no comparable output ({e})")
PY
        done
        same=$(grep -c "bit-identical to one rank" "$OUT/forward.txt")
        [ "$same" = 2 ] || FAILED=$((FAILED + 1))
        note "$(printf '%-34s %s' "forward --ranks (cuda)" "$same of 2 outputs bit-identical to one rank")"
        ;;
    serve)
        # moe serve --ranks 2 --backend cuda (two ranks sharing the GPU) against a one-rank CUDA server: the same
        # answers byte for byte at 1, 4 and 33 tokens, both routing modes; then SIGTERM, and every rank exits 0.
        $MOE serve --backend cuda --preset $PRESET --port 0 --log-level warning > "$OUT/serve1.log" 2>&1 & p1=$!
        $MOE serve --backend cuda --preset $PRESET --port 0 --log-level warning --ranks 2 --rank-timeout 60 > "$OUT/serve2.log" 2>&1 & p2=$!
        wait_for "$OUT/serve1.log" "listening on"; wait_for "$OUT/serve2.log" "listening on"
        python3 - "$OUT/serve1.log" "$OUT/serve2.log" <<'PY' 2>&1 | tee -a "$LOG" "$OUT/serve.txt"
import json, random, re, sys, urllib.request, urllib.error
ports = [re.search(r"listening on http://[0-9.]+:([0-9]+)", open(f).read()).group(1) for f in sys.argv[1:]]
rng = random.Random(5)
for tokens, routing in [(1, "renormalize"), (4, "softmax-first"), (33, "renormalize")]:
    body = json.dumps({"hidden_states": [[rng.gauss(0, 1) for _ in range(2880)] for _ in range(tokens)], "routing": routing}).encode()
    answers = []
    for port in ports:
        try:
            answers.append(urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/moe/forward", body, {"Content-Type": "application/json"}), timeout=120).read())
        except urllib.error.HTTPError as e:
            answers.append(b"HTTP %d %s" % (e.code, e.read()[:300]))
    print(f"serve T={tokens} {routing}: " + ("2-rank answer identical" if answers[0] == answers[1] else f"answers differ: {answers[1][:200]!r}"))
PY
        # The server's own rate on the GPU (one rank; 4-token requests; the python client is the likelier limit).
        if [ -f .device/serve_load.py ]; then
            port1=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$OUT/serve1.log" | sed 's/.*://')
            for c in 1 8 32; do
                python3 .device/serve_load.py --port $port1 --hidden 2880 --clients $c --requests $((256 / c)) --tokens 4 2>&1 | sed "s/^/serve_load cuda $PRESET: /" | tee -a "$LOG" "$OUT/serve.txt"
            done
        fi
        kill -TERM $p1 $p2; wait $p1; r1=$?; wait $p2; r2=$?
        same=$(grep -c "identical" "$OUT/serve.txt")
        echo "=== serve: identical answers $same of 3; exit one rank $r1, two ranks $r2" | tee -a "$LOG"
        cat "$OUT/serve2.log" >> "$LOG"
        [ "$same" = 3 ] && [ "$r1" = 0 ] && [ "$r2" = 0 ] || FAILED=$((FAILED + 1))
        note "$(printf '%-34s rc=%-3s %5ss  %s' "serve R=2 $PRESET" "$r2" "-" "$same of 3 answers identical to one rank")"
        ;;
    mps)
        # Ranks sharing the GPU time-slice (one context at a time): a device barrier waits for the peer's next time
        # slice, milliseconds. Under an MPS daemon the ranks' kernels run at once, each client held to 100/R % of the
        # SMs (so a spinning barrier of one rank cannot starve the peer it waits for): the shared-GPU numbers then show
        # the paths' own overheads. The daemon is this step's alone (its own pipe folder) and is stopped at the end.
        if ! command -v nvidia-cuda-mps-control > /dev/null; then
            echo "=== mps: nvidia-cuda-mps-control not found" | tee -a "$LOG"; note "mps: NOT RUN (no nvidia-cuda-mps-control)"; FAILED=$((FAILED + 1))
        else
            export CUDA_MPS_PIPE_DIRECTORY=/tmp/moe-mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/moe-mps-log
            mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
            nvidia-cuda-mps-control -d && echo "=== mps daemon started" | tee -a "$LOG"
            for R in 2 4; do
                CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=$((100 / R)) TAIL=40 run "mps bench $PRESET R=$R" 200 $MOE launch --ranks $R --timeout 60 -- \
                    bench --backend cuda --preset $PRESET --tokens "$(per_rank_tokens $R 1 8 32 128)" --iterations 20 --warmup 3
                grep "EPROW" "$OUT/step.log" | sed 's/$/ mps=1/' >> "$OUT/eprows.txt"
            done
            echo quit | nvidia-cuda-mps-control; sleep 1
            tail -n 5 $CUDA_MPS_LOG_DIRECTORY/control.log >> "$LOG" 2>/dev/null
            unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
        fi
        ;;
    bench)
        for R in 2 4; do
            TAIL=60 run "bench $PRESET R=$R" $((R == 2 ? 140 : 170)) $MOE launch --ranks $R --timeout 60 -- \
                bench --backend cuda --preset $PRESET --tokens "$(per_rank_tokens $R 1 8 32 128 256)" --iterations 20 --warmup 3
            grep "EPROW" "$OUT/step.log" >> "$OUT/eprows.txt"
        done
        ;;
    *) echo "=== unknown step $s" | tee -a "$LOG"; note "$s: UNKNOWN STEP"; FAILED=$((FAILED + 1)) ;;
    esac
done
rm -f "$OUT/step.log"
echo "----- summary (ranks share one GPU: correctness and overheads, not NVLink speed)"
printf "$SUMMARY"
if [ -f "$OUT/eprows.txt" ]; then
    echo "R  T      T/rank  symmetric_us  alltoall_us  a2a/sym  a2a   dispatch_GBps  combine_GBps  peer_GBps"
    awk '{ delete f; for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
           printf "%-2s %-6s %-7s %-13s %-12s %-8s %-5s %-14s %-13s %s\n", f["R"], f["T"], f["per-rank"], f["symmetric_us"],
               f["alltoall_us"], f["ratio"], f["a2a"], f["dispatch_GBps"], f["combine_GBps"], f["peer_GBps"] }' "$OUT/eprows.txt"
    # The multi-GPU issue's bar, per row: a2a/sym ≥ 1.6 at 1–256 tokens per rank; dispatch and combine each ≥ 70% of
    # the peer-copy ceiling at 4096. Only meaningful with one process per GPU (the multigpu step).
    awk '{ delete f; for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
           n = f["per-rank"] + 0
           if (n <= 256) printf "bar R=%s T/rank=%s: a2a/sym %s (need >= 1.6): %s\n", f["R"], n, f["ratio"], (f["ratio"] + 0 >= 1.6 ? "MET" : "NOT MET")
           if (n == 4096 && f["peer_GBps"] + 0 > 0) {
               d = f["dispatch_GBps"] / f["peer_GBps"]; c = f["combine_GBps"] / f["peer_GBps"]
               printf "bar R=%s T/rank=4096: dispatch %.0f%%, combine %.0f%% of peer copy (need >= 70%%): %s\n", f["R"], 100 * d, 100 * c, (d >= 0.7 && c >= 0.7 ? "MET" : "NOT MET")
           } }' "$OUT/eprows.txt"
fi
echo "failed steps: $FAILED"
[ "$FAILED" = 0 ]
