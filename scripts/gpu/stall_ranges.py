#!/usr/bin/env python3
# Where a kernel's stall samples fall between markers of its SASS, from an `ncusrc` step's per-instruction CSV (`.xz`
# read as is): the listing is cut before each instruction whose text matches a marker (a regex, in order), and each piece
# gets its samples, instructions and stall reasons (the five largest as shares; `--all`: every reason with a sample, as
# counts). `--executed` also lists each piece's executed instructions with their samples and execution counts.
# Made for session 33's question about moe_route_small: is the routing block's serial tail after the election (the
# first `@!P0  EXIT` after the ATOMG; ncu's text has two spaces after a predicate) waiting on instruction fetch
# (stall_no_inst) rather than on memory or barriers?
#   usage: python3 scripts/gpu/stall_ranges.py [--all] [--executed] NAME-sass.csv[.xz] MARKER [MARKER ...]
#   e.g.:  python3 scripts/gpu/stall_ranges.py --all route1-sass.csv 'ATOMG' '@!P0 +EXIT'
import re, sys
from sass_listing import source_counters


def pieces(rows, markers, text):
    """Row indices where each marker first matches, in order, each after the previous one."""
    cuts, start = [], 0
    for marker in markers:
        at = next((i for i in range(start, len(rows)) if re.search(marker, text(rows[i]))), None)
        if at is None:
            sys.exit(f"marker {marker!r} not found after row {start}")
        cuts.append(at)
        start = at + 1
    return [0] + cuts + [len(rows)]


def main():
    flags = {a for a in sys.argv[1:] if a in ("--all", "--executed")}
    args = [a for a in sys.argv[1:] if a not in flags]
    if len(args) < 2:
        sys.exit("usage: stall_ranges.py [--all] [--executed] NAME-sass.csv[.xz] MARKER [MARKER ...]")
    kernel, header, rows = source_counters(args[0])
    source, samples = header.index("Source"), header.index("Warp Stall Sampling (All Samples)")
    executed = header.index("Instructions Executed")
    reasons = [i for i, name in enumerate(header) if name.startswith("stall_") and "(Not" not in name]
    value = lambda row, i: int(row[i] or 0)
    total = sum(value(r, samples) for r in rows) or 1
    bounds = pieces(rows, args[1:], lambda row: row[source])
    print(f"{kernel}: {total} samples")
    for a, b in zip(bounds, bounds[1:]):
        part = rows[a:b]
        if not part:
            continue
        n = sum(value(r, samples) for r in part)
        by = sorted(((sum(value(r, i) for r in part), header[i][6:]) for i in reasons), reverse=True)
        if "--all" in flags:
            top = ", ".join(f"{name} {count}" for count, name in by if count)
        else:
            top = ", ".join(f"{name} {count / max(n, 1):.0%}" for count, name in by[:5] if count)
        print(f"  rows {a}–{b - 1} ({part[0][source].strip()[:32]} …): {n} samples ({n / total:.1%}), "
              f"{len(part)} instructions, {sum(value(r, executed) for r in part)} executed; {top}")
        if "--executed" in flags:
            for i, r in enumerate(part, a):
                if value(r, executed):
                    print(f"    {i:5d} {r[source].strip()[:72]:72s} samples {value(r, samples):4d} executed {value(r, executed)}")


main()
