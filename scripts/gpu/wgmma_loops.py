#!/usr/bin/env python3
# The loops of a kernel's SASS that issue wgmma (HGMMA), statically: for each backward branch whose body holds an
# HGMMA, the body's instruction count (every path through it: the fast and slow decode both), its HGMMA count and shape,
# and how many of its instructions run on the uniform datapath (which still take the warp scheduler's issue slots).
# Session 20 compared the registered kernels' consumer loops with and without descriptors by adds (B = 1) this way.
#   usage: PATH=…/nvidia/cu13/bin:$PATH python3 scripts/gpu/wgmma_loops.py CUBIN KERNEL
import re, sys
from sass_listing import instructions, opcode

code = instructions(sys.argv[1], sys.argv[2])
index = {address: i for i, (address, _) in enumerate(code)}
for i, (address, text) in enumerate(code):
    branch = re.search(r"BRA (?:P\d, )?0x([0-9a-f]+)", text)
    target = int(branch.group(1), 16) if branch else None
    if target is None or target >= address or target not in index:
        continue
    body = code[index[target]:i + 1]
    hgmma = [t for _, t in body if opcode(t) == "HGMMA"]
    if not hgmma:
        continue
    uniform = sum(1 for _, t in body if opcode(t).startswith("U") and not opcode(t).startswith("UTM"))
    print(f"loop {target:#x}-{address:#x}: {len(body)} instructions, {len(hgmma)} {hgmma[0].split()[0]}, {uniform} uniform")
