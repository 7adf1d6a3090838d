#!/usr/bin/env python3
# The `ncudecstall` steps of a returned run log as one table: per kernel launch, its duration, issue activity, warps per
# SM, the cycles per issued instruction summed over every stall reason, and the largest reasons with their share.
#   usage: python3 scripts/gpu/stall_table.py RUN.log
import re, sys

log = open(sys.argv[1]).read()
for step in re.finditer(r"^=== (ncudecstall-\S+): .*?^=== \1 rc=", log, re.S | re.M):
    for launch in re.split(r"\n  (?=moe_\w+ \()", step.group(0))[1:]:
        name = launch.split()[0]
        values = dict(re.findall(r"^\s+(\S+)\s+\S+\s+([\d.,]+)\s*$", launch, re.M))
        number = lambda key: float(values[key].replace(",", ""))
        stalls = {k.removeprefix("smsp__average_warps_issue_stalled_").removesuffix("_per_issue_active.ratio"): number(k)
                  for k in values if k.startswith("smsp__average_warps_issue_stalled_")}
        total = sum(stalls.values())
        top = sorted(stalls.items(), key=lambda kv: -kv[1])[:6]
        print(f"{step.group(1)} {name}: {number('gpu__time_duration.sum'):.1f} µs, issue "
              f"{number('smsp__issue_active.avg.pct_of_peak_sustained_active'):.1f}%, "
              f"{number('sm__warps_active.avg.per_cycle_active'):.1f} warps/SM, {total:.2f} cycles per issue: "
              + ", ".join(f"{k} {v:.2f} ({100 * v / total:.0f}%)" for k, v in top))
