#!/usr/bin/env python3
# The loops of a kernel's SASS that issue wgmma (HGMMA), statically: for each backward branch whose body holds an
# HGMMA, the body's instruction count (every path through it: the fast and slow decode both), its HGMMA count and shape,
# and how many of its instructions run on the uniform datapath (which still take the warp scheduler's issue slots).
# Session 20 compared the registered kernels' consumer loops with and without descriptors by adds (B = 1) this way.
#   usage: PATH=…/nvidia/cu13/bin:$PATH python3 scripts/gpu/wgmma_loops.py CUBIN KERNEL
import collections, re, subprocess, sys

cubin, kernel = sys.argv[1], sys.argv[2]
sass = subprocess.run(["cuobjdump", "-sass", "-fun", kernel, cubin], capture_output=True, text=True, check=True).stdout
instructions = [(int(m.group(1), 16), m.group(2).strip())
                for m in (re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", line) for line in sass.splitlines()) if m]
index = {address: i for i, (address, _) in enumerate(instructions)}
for i, (address, text) in enumerate(instructions):
    branch = re.search(r"BRA (?:P\d, )?0x([0-9a-f]+)", text)
    target = int(branch.group(1), 16) if branch else None
    if target is None or target >= address or target not in index:
        continue
    body = instructions[index[target]:i + 1]
    hgmma = [t for _, t in body if "HGMMA" in t]
    if not hgmma:
        continue
    opcodes = collections.Counter(t.split()[1] if t.startswith("@") else t.split()[0] for _, t in body)
    uniform = sum(n for op, n in opcodes.items() if op.startswith("U") and not op.startswith("UTM"))
    print(f"loop {target:#x}-{address:#x}: {len(body)} instructions, {len(hgmma)} {hgmma[0].split()[0]}, {uniform} uniform")
