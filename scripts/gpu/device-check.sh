#!/usr/bin/env bash
# One device call: correctness (stage-by-stage, conformance suite, compute-sanitizer) and the benchmark, with
# a short table last. Runs from the repository root on the GPU machine with the static `moe` binary in
# .device/ (see scripts/gpu/README.md). Logs go to $OUT/run.log; the bench JSON to $OUT/bench.json.
#   usage: bash .device/device-check.sh [steps...]   (default: all steps, in the order below)
set -u
OUT=${OUT:-/tmp/moekit-out}
mkdir -p "$OUT"
M=/tmp/moe
# Every call: a warm machine may hold an older bundle's binary, which a failed unpack must not leave in place.
# MOE_XZ: another bundled binary (an earlier commit's, for a diagnostic of code since removed).
X=${MOE_XZ:-.device/moe.xz}
xz -dc $X > $M && chmod +x $M || { echo "could not unpack $X into $M" >&2; rm -f $M; exit 1; }
[ "$X" = .device/moe.xz ] || echo "binary: $X" | tee -a "$OUT/run.log"
# The call's deadline: steps are cut to fit and skipped when under 15 s is left, so the summary always prints.
DEADLINE=${DEADLINE:-$(( $(date +%s) + ${BUDGET:-570} ))}
LOG="$OUT/run.log"
echo "commit $(cat .device/COMMIT 2>/dev/null)" | tee -a "$LOG"
export MOE_KERNEL_CACHE=/tmp/moekit-kernels
SUMMARY=""

step() {  # step NAME LIMIT_SECONDS command...
    local name=$1 limit=$2; shift 2
    local left=$(( DEADLINE - $(date +%s) ))
    if [ "$left" -lt 15 ]; then
        echo "=== $name skipped: the call's deadline" | tee -a "$LOG"
        SUMMARY+="$(printf '%-14s skipped (deadline)' "$name")\n"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    # The step's MOE_CUDA_* settings, so that repeated steps (pending.sh runs `check` once per variant) are told apart.
    local settings; settings=$(env | grep -E '^MOE_CUDA_' | sort | tr '\n' ' ')
    name="$name${settings:+ [${settings% }]}"
    echo "=== $name: $*" | tee -a "$LOG"
    local t0=$(date +%s)
    timeout "$limit" "$@" > "$OUT/step.log" 2>&1
    local rc=$?
    local dt=$(( $(date +%s) - t0 ))
    cat "$OUT/step.log" >> "$LOG"
    tail -n "${TAIL:-12}" "$OUT/step.log"
    echo "=== $name rc=$rc (${dt}s)" | tee -a "$LOG"
    SUMMARY+="$(printf '%-14s rc=%-4s %6ss' "$name" "$rc" "${dt}")\n"
}

# One A/B side: `moe bench` at TOKENS on AB_PRESET, run by the command in "$@" (a binary, or env … binary).
ab_bench() {  # ab_bench NAME TOKENS command...
    local name=$1 tokens=$2; shift 2
    TAIL=14 step "$name" 200 "$@" bench --backend cuda --preset ${AB_PRESET:-gpt-oss-120b} --tokens $tokens --seconds 0.3
}

# `cuda-debug --timing` (each kernel's own device time) by BINARY at TIMING_TOKENS.
timing_step() {  # timing_step NAME BINARY
    TAIL=20 step "$1" 240 "$2" cuda-debug --preset gpt-oss-120b --timing --tokens ${TIMING_TOKENS:-1,8,32,128,256,512,2048,8192}
}

# The step in "$@" with the SM clock and board power sampled every 200 ms beside it (nvidia-smi), summarised into the
# log: whether a bench's spread (p10 against median) follows the clock. Session 21 left that open at 8192 tokens.
with_clocks() {  # with_clocks NAME command...
    local name=$1; shift
    local samples=/tmp/moekit-clocks-$name.csv
    nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms 200 > "$samples" 2>/dev/null &
    local sampler=$!
    "$@"
    kill $sampler 2>/dev/null; wait $sampler 2>/dev/null
    for column in 1 2; do
        awk -F', *' -v c=$column '$c ~ /^[0-9.]+$/ {print $c}' "$samples" | sort -n | awk -v what="$([ $column = 1 ] && echo 'SM clock MHz' || echo 'power W')" -v name="$name" \
            '{v[NR] = $1} END {if (NR) printf "=== clocks during %s: %s min %s, median %s, max %s (%d samples)\n", name, what, v[1], v[int((NR + 1) / 2)], v[NR], NR}'
    done | tee -a "$LOG"
}

# The registered kernel the debug, sanitizer and ncu steps take unless told otherwise (the 128-token default).
REGISTERED=registered_1_128_4_4_1_1_2_1_0_16_0_1_1
steps=${*:-"info debug bench check debug20b memcheck racecheck racecheck2"}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee -a "$LOG"
for s in $steps; do
    case $s in
    info) step info 60 $M info ;;
    debug) step debug 240 $M cuda-debug --preset tiny --tokens ${DEBUG_TOKENS:-1,7,33,100} ;;
    bench) TAIL=16 with_clocks bench step bench 300 $M bench --backend cuda --preset gpt-oss-120b ${BENCH_TOKENS:+--tokens $BENCH_TOKENS} --seconds 0.4 --json "$OUT/bench.json" ;;
    benchclock) TAIL=8 with_clocks benchclock step benchclock 120 $M bench --backend cuda --preset gpt-oss-120b --tokens ${CLOCK_TOKENS:-8192} --seconds ${CLOCK_SECONDS:-4} ;;  # one row long enough that the samples are mostly its loop: does its clock drop?
    bench20b) TAIL=16 with_clocks bench20b step bench20b 300 $M bench --backend cuda --preset gpt-oss-20b --seconds 0.4 --json "$OUT/bench20b.json" ;;
    check) step check 240 $M check --backend cuda --quick ;;
    checkfull) step checkfull 400 $M check --backend cuda ;;
    epcheck) TAIL=30 step epcheck 500 env MOE=$M OUT=$OUT/ep bash .device/ep-check.sh check ;;
    epbig) TAIL=30 step epbig 600 env MOE=$M OUT=$OUT/epb bash .device/ep-check.sh checkbig ;;
    epnccl) TAIL=40 step epnccl 400 env MOE=$M OUT=$OUT/epn bash .device/ep-check.sh nccl ;;
    epnodes) TAIL=60 step epnodes 580 env MOE=$M OUT=$OUT/epx bash .device/ep-check.sh nodes ;;
    epmulti) TAIL=80 step epmulti 600 env MOE=$M OUT=$OUT/epm bash .device/ep-check.sh multigpu ;;
    epmultifault) TAIL=20 step epmultifault 200 env MOE=$M OUT=$OUT/epmf FAULTS=kill FAULT_RANKS=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l) bash .device/ep-check.sh fault ;;
    epserve) TAIL=20 step epserve 300 env MOE=$M OUT=$OUT/eps bash .device/ep-check.sh serve ;;
    epforward) TAIL=20 step epforward 200 env MOE=$M OUT=$OUT/epf bash .device/ep-check.sh forward ;;
    eppdl) TAIL=20 step eppdl 500 env MOE=$M OUT=$OUT/epp bash .device/ep-check.sh pdl ;;
    epmps) TAIL=30 step epmps 420 env MOE=$M OUT=$OUT/epmps bash .device/ep-check.sh mps ;;
    debugnew) for v in ${NEW_VARIANTS:-$REGISTERED decoded_2_2_128_4}; do step "debug-$v" 240 $M cuda-debug --preset gpt-oss-20b --tokens ${DEBUG_TOKENS:-8,100,300} --variant $v; done ;;
    racedecoded|racecheck) step $s 240 compute-sanitizer --tool racecheck --error-exitcode 9 $M cuda-debug --preset tiny --tokens 7,100 --variant ${RACE_VARIANT:-$REGISTERED} ;;
    memdecoded) step memdecoded 240 compute-sanitizer --tool memcheck --error-exitcode 9 $M cuda-debug --preset tiny --tokens 7,300 --variant ${MEM_VARIANT:-$REGISTERED} ;;
    ncudecoded) TAIL=120 step ncudecoded 300 ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section Occupancy -k regex:moe_gemm_${NCU_KERNEL:-decoded} --launch-skip 2 --launch-count 1 env MOE_CUDA_GEMM=${NCU_VARIANT:-decoded_2_2_128_4} $M bench --backend cuda --preset gpt-oss-120b --tokens ${NCU_TOKENS:-8192} --iterations 1 --warmup 0 ;;
    ncufull) TAIL=400 step ncufull 400 ncu --clock-control none --set full -k regex:moe_gemm_${NCU_KERNEL:-registered} --launch-skip 2 --launch-count 1 env MOE_CUDA_GEMM=${NCU_VARIANT:-$REGISTERED} $M bench --backend cuda --preset gpt-oss-120b --tokens ${NCU_TOKENS:-8192} --iterations 1 --warmup 0 ;;
    ncustall) TAIL=80 step ncustall 300 ncu --clock-control none --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_tensor.*cycles_active.avg.pct_of_peak_sustained_active,smsp__cycles_active.avg,sm__warps_active.avg.per_cycle_active" -k regex:moe_gemm_${NCU_KERNEL:-registered} --launch-skip 2 --launch-count 1 env MOE_CUDA_GEMM=${NCU_VARIANT:-$REGISTERED} $M bench --backend cuda --preset gpt-oss-120b --tokens ${NCU_TOKENS:-8192} --iterations 1 --warmup 0 ;;
    ncudecode) TAIL=120 step ncudecode 300 ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section SchedulerStats -k regex:moe_gemm_resident --launch-skip 2 --launch-count 1 $M bench --backend cuda --preset gpt-oss-120b --tokens 8 --iterations 1 --warmup 0 ;;
    debugwg) step debugwg 240 $M cuda-debug --preset gpt-oss-20b --tokens 8,100 --variant warpgroup_2_2_64_3 ;;
    ncuwg) TAIL=60 step ncuwg 240 ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section ComputeWorkloadAnalysis -k regex:moe_gemm_warpgroup --launch-skip 2 --launch-count 2 env MOE_CUDA_GEMM=warpgroup_2_2_64_3 $M bench --backend cuda --preset gpt-oss-120b --tokens 8192 --iterations 1 --warmup 0 ;;
    debug20b) step debug20b 240 $M cuda-debug --preset gpt-oss-20b --tokens ${DEBUG_TOKENS:-1,8,40} ${DEBUG_VARIANT:+--variant $DEBUG_VARIANT} ;;  # every variant unless DEBUG_VARIANT
    racedefault) step racedefault 240 compute-sanitizer --tool racecheck --error-exitcode 9 $M cuda-debug --preset ${SAN_PRESET:-tiny} --tokens ${RACE_TOKENS:-7,40} ${DEBUG_VARIANT:+--variant $DEBUG_VARIANT} ;;  # every variant unless DEBUG_VARIANT
    memcheck) step memcheck 240 compute-sanitizer --tool memcheck --error-exitcode 9 $M cuda-debug --preset ${SAN_PRESET:-tiny} --tokens ${MEMCHECK_TOKENS:-7,40} ${DEBUG_VARIANT:+--variant $DEBUG_VARIANT} ;;
    racecheck2) step racecheck2 240 compute-sanitizer --tool racecheck --error-exitcode 9 $M cuda-debug --preset tiny --tokens 7,40 --variant ${RACE_VARIANT:-resident_1_1_4_2_3} ;;
    trace) TAIL=30 step trace 300 $M cuda-debug --preset gpt-oss-120b --trace --tokens ${TRACE_TOKENS:-1,2,4,8,16,32,64,128,256,512,2048,8192} ;;
    ncudecstall)  # why a decode GEMM's warps wait: stall reasons per issued instruction, both GEMMs at NCU_TOKENS, default kernels
        TAIL=70 step "ncudecstall-${NCU_TOKENS:-1}" 240 ncu --clock-control none --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__cycles_active.avg,sm__warps_active.avg.per_cycle_active,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,gpu__time_duration.sum" -k regex:moe_gemm_resident --launch-skip 2 --launch-count 2 $M bench --backend cuda --preset gpt-oss-120b --tokens ${NCU_TOKENS:-1} --iterations 1 --warmup 0 ;;
    stream) TAIL=8 step stream 120 $M cuda-debug --stream ;;  # the decode GEMMs' weight bytes read with no math, per layout
    timing) timing_step timing $M ;;
    ncu1) TAIL=80 step ncu1 240 ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis -k regex:moe_gemm_resident --launch-skip 2 --launch-count 2 $M bench --backend cuda --preset gpt-oss-120b --tokens 1 --iterations 1 --warmup 0 ;;
    ncuroute) TAIL=30 step ncuroute 240 ncu --clock-control none --section SpeedOfLight --section WarpStateStats -k regex:moe_route_small --launch-skip 1 --launch-count 1 $M bench --backend cuda --preset gpt-oss-120b --tokens 1 --iterations 1 --warmup 0 ;;
    ncustaged) TAIL=80 step ncustaged 300 ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis -k regex:moe_gemm_staged --launch-count 2 $M bench --backend cuda --preset gpt-oss-120b --tokens 2048 --iterations 1 --warmup 0 ;;
    ncu128) TAIL=60 step ncu128 240 ncu --clock-control none --section SpeedOfLight -k regex:moe_gemm --launch-skip 2 --launch-count 2 $M bench --backend cuda --preset gpt-oss-120b --tokens 128 --iterations 1 --warmup 0 ;;
    ncu2048) TAIL=90 step ncu2048 300 ncu --clock-control none --section SpeedOfLight --section Occupancy -k regex:moe_ --launch-skip 4 --launch-count 7 $M bench --backend cuda --preset gpt-oss-120b --tokens 2048 --iterations 1 --warmup 0 ;;
    nopdl) TAIL=14 step nopdl 200 env MOE_CUDA_PDL=0 $M bench --backend cuda --preset gpt-oss-120b --tokens 1,8,32,128,2048 --seconds 0.3 ;;
    abenv)  # AB_ENVS="VAR=V[+VAR2=V2]@tokens ...": each against the default, alternating AB_REPEAT times (call-to-call spread);
            # AB_PRESET: the model (default gpt-oss-120b)
        for spec in ${AB_ENVS:-}; do
            envs=${spec%%@*}; tokens=${spec##*@}
            for r in $(seq ${AB_REPEAT:-2}); do
                ab_bench "base-$r@$tokens" $tokens $M
                ab_bench "$envs-$r" $tokens env ${envs//+/ } $M
            done
        done ;;
    abbin|timingbin)  # abbin: AB_TOKENS against the binary in .device/moe-base.xz (a change to a default kernel, which
            # has no switch), alternating AB_REPEAT times; the base binary's steps are named base-N@… as abenv's
            # (ab_table.py reads both). timingbin: `timing` with each binary, base first.
        B=/tmp/moe-base
        if ! xz -dc .device/moe-base.xz > $B 2>/dev/null || ! chmod +x $B; then
            echo "=== $s: no .device/moe-base.xz" | tee -a "$LOG"; SUMMARY+="$(printf '%-14s NOT RUN (no .device/moe-base.xz)' $s)\n"; continue
        fi
        if [ $s = timingbin ]; then
            for side in base new; do
                [ $side = base ] && bin=$B || bin=$M
                timing_step "timing-$side" $bin
            done
            continue
        fi
        for r in $(seq ${AB_REPEAT:-2}); do
            ab_bench "base-$r@$AB_TOKENS" $AB_TOKENS $B
            ab_bench "new-$r" $AB_TOKENS $M
        done ;;
    ncusrc)  # NCU_KERNEL (regex), NCU_TOKENS, NCU_SKIP, NCU_NAME (one per kernel), NCU_SAMPLING (2^(5+n) cycles; short
             # kernels need a small n: auto gave 16 samples of an 18 µs kernel): per-instruction stall samples as CSV
        name=${NCU_NAME:-src}
        if [ -z "${NCU_KERNEL:-}" ] || [ -z "${NCU_TOKENS:-}" ]; then
            echo "=== ncusrc-$name: set NCU_KERNEL and NCU_TOKENS" | tee -a "$LOG"; SUMMARY+="$(printf '%-14s NOT RUN (NCU_KERNEL/NCU_TOKENS unset)' "ncusrc-$name")\n"; continue
        fi
        # Into $OUT/ncu/ (one archive at the end): the device tool brings back 8 files, and a run of several of these
        # steps lost its run.log to that limit (session 20).
        mkdir -p "$OUT/ncu"
        TAIL=20 step "ncusrc-$name" 300 ncu --clock-control none ${NCU_SAMPLING:+--warp-sampling-interval $NCU_SAMPLING} --section SourceCounters --section WarpStateStats --section SpeedOfLight -k regex:${NCU_KERNEL} --launch-skip ${NCU_SKIP:-1} --launch-count 1 -f -o "$OUT/ncu/$name" $M bench --backend cuda --preset gpt-oss-120b --tokens ${NCU_TOKENS} --iterations 1 --warmup 0
        ncu -i "$OUT/ncu/$name.ncu-rep" --page source --csv --print-source sass > "$OUT/ncu/$name-sass.csv" 2>> "$LOG"
        ncu -i "$OUT/ncu/$name.ncu-rep" --page details > "$OUT/ncu/$name-details.txt" 2>> "$LOG"
        rm -f "$OUT/ncu/$name.ncu-rep" ;;
    ncurows) TAIL=80 step ncurows 240 ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats -k regex:"moe_(gather_rows|reduce)" --launch-skip ${NCU_SKIP:-0} --launch-count 2 $M bench --backend cuda --preset gpt-oss-120b --tokens ${NCU_TOKENS:-32768} --iterations 1 --warmup 0 ;;  # the gather and the reduce alone: their times (the trace's spans of them read long before session 24)
    ncufinish) TAIL=60 step ncufinish 240 ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section LaunchStats -k regex:moe_route_finish --launch-skip 1 --launch-count 1 $M bench --backend cuda --preset gpt-oss-120b --tokens 128 --iterations 1 --warmup 0 ;;
    ncuep)  # each kernel of the EP layer at R = 1 alone (ncu serialises them), launch order: NCU_TOKENS (1), gpt-oss-20b
        TAIL=50 step ncuep 300 ncu --clock-control none --target-processes all --csv --log-file "$OUT/ncuep.csv" --metrics gpu__time_duration.sum -k regex:moe_ $M launch --ranks 1 --timeout 280 -- bench --backend cuda --preset gpt-oss-20b --tokens ${NCU_TOKENS:-1} --iterations 2 --warmup 0
        python3 .device/ncu_kernels.py "$OUT/ncuep.csv" 70 | tee -a "$LOG" ;;
    eptrace)  # where each kernel of the symmetric EP layer runs inside its graph (MOE_TRACE build), EP_RANKS ranks
        TAIL=8 step eptrace 280 env MOE_CUDA_EP_TRACE=1 $M launch --ranks ${EP_RANKS:-1} --timeout 260 -- bench --backend cuda --preset gpt-oss-20b --tokens ${TRACE_TOKENS:-1,8,32,128} --iterations 3 --warmup 1
        grep -h 'trace T=' "$OUT/step.log" | tee -a "$LOG" ;;
    ab) for v in ${AB_VARIANTS:-}; do TAIL=12 step "ab-${v}" 200 env MOE_CUDA_GEMM=${v%%@*} $M bench --backend cuda --preset gpt-oss-120b --tokens ${v##*@} --seconds 0.3; done ;;
    *) echo "=== unknown step $s" | tee -a "$LOG"; SUMMARY+="$(printf '%-14s UNKNOWN STEP' "$s")\n" ;;
    esac
done
rm -f "$OUT/step.log"
# The device tool brings back a few files only: each step's folder goes back as one archive.
for d in "$OUT"/*/; do
    [ -d "$d" ] || continue
    t=${d%/}; n=1
    while [ -e "$t.tgz" ]; do t=${d%/}-$n; n=$((n + 1)); done  # a later call of the same step keeps the earlier archive
    tar -C "$OUT" -czf "$t.tgz" "$(basename "$d")" && rm -rf "$d"
done
n=$(find "$OUT" -maxdepth 1 -type f | wc -l)
[ "$n" -gt 8 ] && echo "WARNING: $n files under \$OUT, and the device tool brings back 8: put a step's files in a folder"
echo "----- summary"
printf "$SUMMARY"
