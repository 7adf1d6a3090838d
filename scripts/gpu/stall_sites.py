#!/usr/bin/env python3
# Where a registered kernel's warps wait, from an `ncusrc` step's per-instruction CSV (`.xz` read as is): the stall
# reasons' shares of every sample, and three sites of the consumer loop:
#   FULL wait: the branch on each SYNCS.PHASECHK's result (the try_wait spin on a chunk's copies);
#   EMPTY arrive: each named-barrier arrive's instructions, from the PLOP3 before a BAR.ARV to the SHF.R after it
#     (its condition, barrier id and thread count), without the HGMMA and DEPBAR ptxas scheduled among them;
#   slow-path check: the scales' check before each VOTE.ANY (its LOP3s and VIADD on the 0x7f7f7f7f mask), the vote
#     and its branch.
# Session 21's run 75 read the 96-token and two-block 64-token kernels this way (bench-cuda.md "Session 21").
#   usage: python3 scripts/gpu/stall_sites.py NAME-sass.csv[.xz] [...]
import sys
from sass_listing import source_counters

for path in sys.argv[1:]:
    _, header, rows = source_counters(path)
    samples = header.index("Warp Stall Sampling (All Samples)")
    reasons = [i for i, name in enumerate(header) if name.startswith("stall_") and "(Not" not in name]
    count = lambda row: int(row[samples] or 0)
    total = sum(count(r) for r in rows)
    by_reason = {header[i][6:]: sum(int(r[i] or 0) for r in rows) for i in reasons}
    everything = sum(by_reason.values())
    top = sorted(by_reason.items(), key=lambda kv: -kv[1])[:8]
    print(f"{path}: {total} samples; " + ", ".join(f"{k} {100 * v / everything:.1f}%" for k, v in top))
    full = empty = slow = 0
    for i, r in enumerate(rows):
        text = r[1]
        if "SYNCS.PHASECHK" in text:
            predicate = text.split("TRYWAIT")[-1].split(",")[0].strip()  # the try_wait's result: P1 in "TRYWAIT P1, [...]"
            spin = next((x for x in rows[i + 1:i + 8] if f"@!{predicate} " in x[1] and "BRA" in x[1]), None)
            full += count(spin) if spin else 0
        elif "BAR.ARV" in text:
            start = i
            while start > 0 and "PLOP3" not in rows[start][1]:
                start -= 1
            empty += sum(count(x) for x in rows[start:i + 2] if "HGMMA" not in x[1] and "DEPBAR" not in x[1])
        elif "VOTE.ANY" in text:
            check = [x for x in rows[i - 4:i] if "P0, RZ" in x[1] or "0x7f7f7f7f" in x[1]]
            slow += sum(count(x) for x in check) + count(r) + count(rows[i + 1])
    print(f"  FULL wait {100 * full / total:.1f}%, EMPTY arrive {100 * empty / total:.1f}%, "
          f"slow-path check {100 * slow / total:.1f}% of the samples")
