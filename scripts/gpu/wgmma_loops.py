#!/usr/bin/env python3
# The loops of a kernel's SASS that issue wgmma (HGMMA), statically: for each backward branch whose body holds an
# HGMMA, the body's instruction count (every path through it: the fast and slow decode both), its HGMMA count and shape,
# and how many of its instructions run on the uniform datapath (which still take the warp scheduler's issue slots).
# Session 20 compared the registered kernels' consumer loops with and without descriptors by adds (B = 1) this way.
# --opcode OP: loops holding OP instead (session 21: HMMA, the router's step loop), with --count OP,…: how many of each.
#   usage: PATH=…/nvidia/cu13/bin:$PATH python3 scripts/gpu/wgmma_loops.py CUBIN KERNEL [--opcode OP] [--count OP,…]
import re, sys
from sass_listing import instructions, opcode

arguments = sys.argv[1:]
options = {}
for flag in ("--opcode", "--count"):
    if flag in arguments:
        at = arguments.index(flag)
        options[flag] = arguments[at + 1]
        del arguments[at:at + 2]
marker = options.get("--opcode", "HGMMA")
counted = [op for op in options.get("--count", "").split(",") if op]
code = instructions(arguments[0], arguments[1])
index = {address: i for i, (address, _) in enumerate(code)}
for i, (address, text) in enumerate(code):
    branch = re.search(r"BRA (?:P\d, )?0x([0-9a-f]+)", text)
    target = int(branch.group(1), 16) if branch else None
    if target is None or target >= address or target not in index:
        continue
    body = code[index[target]:i + 1]
    hgmma = [t for _, t in body if opcode(t) == marker]
    if not hgmma:
        continue
    uniform = sum(1 for _, t in body if opcode(t).startswith("U") and not opcode(t).startswith("UTM"))
    counts = "".join(f", {sum(1 for _, t in body if opcode(t) == op)} {op}" for op in counted)
    print(f"loop {target:#x}-{address:#x}: {len(body)} instructions, {len(hgmma)} {hgmma[0].split()[0]}, {uniform} uniform"
          + counts)
