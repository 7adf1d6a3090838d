#!/usr/bin/env python3
# The A/B steps of a device log (device-check.sh `abenv`, `abbin`) as one table: for each variant, its median µs per token count
# beside the default run just before it (the step named base-N@…), round by round, and the change in percent, with
# the model the step benched (its --preset; abenv's AB_PRESET).
#   usage: python3 scripts/gpu/ab_table.py RUN.log
import re, sys

header = re.compile(r"^=== (\S.*?)(?: \[.*\])?: (?:env |/tmp/moe(?:-base)? )")
row = re.compile(r"^\s+(\d+)\s+([0-9.]+)\s+[0-9.]+\s+[0-9.]+\s")
preset = re.compile(r"--preset (\S+)")
steps, current = [], None
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = header.match(line)
    if m:
        p = preset.search(line)
        current = {"name": m.group(1), "rows": {}, "model": p.group(1).replace("gpt-oss-", "") if p else "?"}
        steps.append(current)
        continue
    if line.startswith("=== "):
        current = None
        continue
    m = row.match(line)
    if current is not None and m:
        current["rows"][int(m.group(1))] = float(m.group(2))

base = None
print(f"{'variant':60s} {'model':>6s} {'tokens':>6s} {'default µs':>11s} {'variant µs':>11s} {'change':>8s}")
for step in steps:
    if step["name"].startswith("base-"):
        base = step
        continue
    if base is None or not step["rows"] or not re.search(r"-\d+$", step["name"]):
        continue
    for tokens, value in sorted(step["rows"].items()):
        if tokens in base["rows"]:
            b = base["rows"][tokens]
            print(f"{step['name']:60s} {step['model']:>6s} {tokens:6d} {b:11.1f} {value:11.1f} {100 * (value - b) / b:+7.1f}%")
