#!/usr/bin/env python3
# The kernels of an `ncu --csv --metrics gpu__time_duration.sum` log, each run alone (no overlap with its neighbours):
# a kernel's own cost, not its share of a replayed graph.
#   usage: python3 scripts/gpu/ncu_kernels.py LOG.csv [LAST]               the last LAST launches (default 60), in order
#          python3 scripts/gpu/ncu_kernels.py LOG.csv --layer FIRST SECOND N
#                  every run of N launches that starts with kernel FIRST directly followed by SECOND (one layer's
#                  launches, e.g. moe_route_small_1 moe_ep_publish 12), and the median per position over those runs
import csv, statistics, sys

rows = []
with open(sys.argv[1], newline="") as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}.get(r["Metric Unit"], float("nan"))
    value = float(r["Metric Value"].replace(",", "")) * scale
    rows.append((int(r["ID"]), value, r["Kernel Name"].split("(")[0], r.get("Grid Size", ""), r.get("Block Size", "")))

if len(sys.argv) > 2 and sys.argv[2] == "--layer":
    first, second, count = sys.argv[3], sys.argv[4], int(sys.argv[5])
    runs = [rows[i:i + count] for i in range(len(rows) - count + 1) if rows[i][2] == first and rows[i + 1][2] == second]
    print(f"{len(runs)} runs of {count} launches from {first}, {second}; median µs per position (min–max):")
    total = 0.0
    for position in range(count):
        values = [run[position][1] for run in runs]
        names = {run[position][2] for run in runs}
        median = statistics.median(values)
        total += median
        print(f"{position:3d} {median:9.2f} µs  ({min(values):.2f}–{max(values):.2f})  {' / '.join(sorted(names))}")
    print(f"sum of the medians {total:.1f} µs")
else:
    last = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    print(f"{len(rows)} kernels profiled; the last {min(last, len(rows))}:")
    for i, us, name, grid, block in rows[-last:]:
        print(f"{i:6d} {us:9.2f} µs  {name}  grid {grid} block {block}")
