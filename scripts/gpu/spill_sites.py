#!/usr/bin/env python3
# Where a kernel's local-memory spills sit relative to its loops: reads `cuobjdump -sass` of one function and prints
# every loop (a predicated branch back to a lower address: target..branch; the unconditional ones that jump back are
# ptxas's out-of-line blocks returning into the body) with the local loads and stores (LDL / STL) inside it,
# then the spill sites outside every loop. A spill in a hot loop costs every iteration; one at entry or exit, once.
#   usage: cuobjdump -sass -fun KERNEL FILE.cubin | python3 scripts/gpu/spill_sites.py
#   (FILE.cubin from scripts/gpu/nvrtc_compile.py; cuobjdump from `pip download nvidia-cuda-cuobjdump`)
import re, sys
from sass_listing import parse
code = parse(sys.stdin)
loops = []
for address, text in code:
    branch = re.search(r'^@!?P\d+\s+BRA\s+(?:`\(\S+\)\s*)?0x([0-9a-f]+)', text)
    if branch and int(branch.group(1), 16) < address:
        loops.append((int(branch.group(1), 16), address))
spills = [(address, text) for address, text in code if re.match(r'(@!?P\d+\s+)?(LDL|STL)', text)]
inside = set()
for start, end in sorted(loops):
    hits = [(a, t) for a, t in spills if start <= a <= end]
    inside.update(a for a, _ in hits)
    print(f"loop {start:#x}..{end:#x} ({(end - start) // 16 + 1} instructions): {len(hits)} spill instructions"
          + "".join(f"\n    {a:#x} {t}" for a, t in hits))
outside = [(a, t) for a, t in spills if a not in inside]
print(f"outside every loop: {len(outside)} spill instructions" + "".join(f"\n    {a:#x} {t}" for a, t in outside))
