#!/usr/bin/env python3
# A kernel's instruction mix and stall sites from an `ncusrc` per-instruction CSV (ncu --page source --csv; `.xz` read
# as is): warp instructions executed in all and per warp, the loops (instructions sharing an execution count: one
# iteration's body; the three holding the most executed instructions) by opcode, and the instructions holding the most warp-stall samples with the ones before
# them (a stall shows on the instruction after the one it waits at).
# With --regions R: the R code regions (instructions sharing an execution count) holding the most warp-stall samples,
# each with its share of all samples and its largest stall reasons (session 14: where producer, consumers and epilogue
# wait).
#   usage: python3 scripts/gpu/sass_counts.py FILE.csv[.xz] [WARPS] [TOP] [--regions R]
#          WARPS: the launch's warps (grid × block / 32), for the per-warp count (0: none); TOP: stall sites listed
#          (default 6)
import collections, sys
from sass_listing import opcode, source_counters

arguments = sys.argv[1:]
regions = 0
if "--regions" in arguments:
    at = arguments.index("--regions")
    regions = int(arguments[at + 1])
    del arguments[at:at + 2]
sys.argv[1:] = arguments
kernel, header, data = source_counters(sys.argv[1])
col = {h: i for i, h in enumerate(header)}
executed = [int(r[col["Instructions Executed"]] or 0) for r in data]
samples = [int(r[col["Warp Stall Sampling (All Samples)"]] or 0) for r in data]
source = [r[col["Source"]].strip() for r in data]




total = sum(executed)
print(f"{kernel}: {total} warp instructions executed", end="")
if len(sys.argv) > 2 and int(sys.argv[2]) > 0:
    warps = int(sys.argv[2])
    print(f", {total / warps:.0f} a warp ({warps} warps)", end="")
print()
# The loops: instructions grouped by their execution count; the three groups holding the most executed instructions.
groups = collections.defaultdict(list)
for i, n in enumerate(executed):
    if n:
        groups[n].append(i)
for count, body in sorted(groups.items(), key=lambda item: -item[0] * len(item[1]))[:3]:
    mix = collections.Counter(opcode(source[i]) for i in body)
    print(f"{len(body)} instructions executed {count} times each ({100 * count * len(body) / total:.0f}%): "
          + ", ".join(f"{k} {v}" for k, v in mix.most_common(12)))
all_samples = sum(samples)
top = int(sys.argv[3]) if len(sys.argv) > 3 else 6
print(f"stall samples: {all_samples}; the sites with the most:")
for i in sorted(range(len(data)), key=lambda i: -samples[i])[:top]:
    before = " ← ".join(source[j].split(";")[0] for j in range(i - 1, max(-1, i - 3), -1))
    print(f"  {100 * samples[i] / all_samples:5.1f}%  {source[i].split(';')[0]:40s}  (after: {before})")
if regions:
    reasons = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]
    region = collections.defaultdict(lambda: [0, 0, collections.Counter()])  # count -> instructions, samples, reasons
    for i, r in enumerate(data):
        entry = region[executed[i]]
        entry[0] += 1
        entry[1] += samples[i]
        for h in reasons:
            entry[2][h.removeprefix("stall_")] += int(r[col[h]] or 0)
    print(f"regions by stall samples (instructions sharing an execution count):")
    for count, (size, held, why) in sorted(region.items(), key=lambda item: -item[1][1])[:regions]:
        print(f"  {100 * held / all_samples:5.1f}%  {size} instructions executed {count} times each: "
              + ", ".join(f"{k} {100 * v / max(held, 1):.0f}%" for k, v in why.most_common(5)))
