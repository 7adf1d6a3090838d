#!/bin/bash
# Peak resident memory of each rank of an expert-parallel run (Linux): runs the command, samples the VmRSS of its
# child processes that carry MOE_RANK every 0.2 s, and prints the peak per rank.
#   usage: scripts/rank_rss.sh .build/release/moe bench --ranks 2 --preset gpt-oss-20b --tokens 8
# The command's own output goes to /tmp/rss-run.log.
"$@" > /tmp/rss-run.log 2>&1 & P=$!
declare -A max
while kill -0 $P 2>/dev/null; do
  for c in $(pgrep -P $P); do
    r=$(tr '\0' '\n' < /proc/$c/environ 2>/dev/null | grep '^MOE_RANK=' | cut -d= -f2)
    v=$(awk '/VmRSS/{print $2}' /proc/$c/status 2>/dev/null)
    [ -n "$r" ] && [ -n "$v" ] && [ "${v}" -gt "${max[$r]:-0}" ] && max[$r]=$v
  done; sleep 0.2
done
wait $P; echo "rc=$?"
for r in "${!max[@]}"; do echo "rank $r max RSS $((max[$r]/1024)) MiB"; done
