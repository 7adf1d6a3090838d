#!/usr/bin/env python3
# Prints the kernels of an `ncu --csv --metrics gpu__time_duration.sum` log in launch order: id, duration in µs, name.
# With one metric ncu runs each kernel alone (no overlap with its neighbours): a kernel's own cost, not its share of a
# replayed graph.   usage: python3 scripts/gpu/ncu_kernels.py LOG.csv [LAST]
import csv, sys
rows = []
with open(sys.argv[1], newline="") as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}.get(r["Metric Unit"], float("nan"))
    value = float(r["Metric Value"].replace(",", "")) * scale
    rows.append((int(r["ID"]), value, r["Kernel Name"].split("(")[0], r.get("Grid Size", ""), r.get("Block Size", "")))
last = int(sys.argv[2]) if len(sys.argv) > 2 else 60
print(f"{len(rows)} kernels profiled; the last {min(last, len(rows))}:")
for i, us, name, grid, block in rows[-last:]:
    print(f"{i:6d} {us:9.2f} µs  {name}  grid {grid} block {block}")
