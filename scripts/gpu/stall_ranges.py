#!/usr/bin/env python3
# Where a kernel's stall samples fall between markers of its SASS, from an `ncusrc` step's per-instruction CSV (`.xz`
# read as is): the listing is cut before each instruction whose text matches a marker (a regex, in order), and each piece
# gets its samples, instructions and stall reasons. Made for session 33's question about moe_route_small: is the
# routing block's serial tail after the election (the first `@!P0 EXIT` after the ATOMG) waiting on instruction
# fetch (stall_no_inst) rather than on memory or barriers?
#   usage: python3 scripts/gpu/stall_ranges.py NAME-sass.csv[.xz] MARKER [MARKER ...]
#   e.g.:  python3 scripts/gpu/stall_ranges.py route1-sass.csv 'ATOMG' 'EXIT'
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
    if len(sys.argv) < 3:
        sys.exit("usage: stall_ranges.py NAME-sass.csv[.xz] MARKER [MARKER ...]")
    kernel, header, rows = source_counters(sys.argv[1])
    source, samples = header.index("Source"), header.index("Warp Stall Sampling (All Samples)")
    executed = header.index("Instructions Executed")
    reasons = [i for i, name in enumerate(header) if name.startswith("stall_") and "(Not" not in name]
    value = lambda row, i: int(row[i] or 0)
    total = sum(value(r, samples) for r in rows) or 1
    bounds = pieces(rows, sys.argv[2:], lambda row: row[source])
    print(f"{kernel}: {total} samples")
    for a, b in zip(bounds, bounds[1:]):
        part = rows[a:b]
        if not part:
            continue
        n = sum(value(r, samples) for r in part)
        by = sorted(((sum(value(r, i) for r in part), header[i][6:]) for i in reasons), reverse=True)
        top = ", ".join(f"{name} {count / max(n, 1):.0%}" for count, name in by[:5] if count)
        print(f"  rows {a}–{b - 1} ({part[0][source].strip()[:32]} …): {n} samples ({n / total:.1%}), "
              f"{len(part)} instructions, {sum(value(r, executed) for r in part)} executed; {top}")


main()
