#!/usr/bin/env python3
# The loops of a kernel's SASS that issue wgmma (HGMMA), statically: for each backward branch whose body holds an
# HGMMA, the body's instruction count (every path through it: the fast and slow decode both), its HGMMA count and shape,
# and how many of its instructions run on the uniform datapath (which still take the warp scheduler's issue slots).
# Session 20 compared the registered kernels' consumer loops with and without descriptors by adds (B = 1) this way.
# --opcode OP: loops holding OP instead (session 21: HMMA, the router's step loop), with --count OP,…: how many of each.
# "fast path": the instructions one iteration issues when the scales need no slow path and the input came by tensor
# copies (session 28): from the loop's head, unconditional branches taken, a conditional branch over a MEMBAR (the
# cp.async input's proxy fence) taken, every other conditional branch (retries, slow paths) not, `@!PT` never-run
# instructions left out, until the branch back. The static count holds both decode paths, so it can move where the
# fast path does not (session 27's eight-slot kernel).
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


def fast_path(head, back):
    """Instructions issued by one iteration of the loop from code[head] to its backward branch code[back] (above), or
    None where the walk meets another loop's branch back (an out-of-line retry's jump into the middle of a loop)."""
    i, issued = head, 0
    while head <= i <= back:
        text = code[i][1]
        i += 1
        if text.startswith("@!PT "):
            continue
        issued += 1
        branch = re.match(r"(@!?U?P\d+ )?BRA (?:P\d, )?0x([0-9a-f]+)", text)
        if not branch:
            continue
        target = int(branch.group(2), 16)
        if target == code[head][0]:
            return issued
        if target < code[i - 1][0]:
            return None  # another loop's branch back: code[head] is not an iteration's start
        forward = code[i - 1][0] < target <= code[back][0]
        if forward and (branch.group(1) is None or any(opcode(t) == "MEMBAR" for _, t in code[i:index[target]])):
            i = index[target]
    return None


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
          + counts + f", fast path {fast_path(index[target], i) or '?'}")
