#!/usr/bin/env python3
# Whether the MXFP4 unpack (moe_common.cuh, mxfp4_unpack_word) could take one shift and one mask per output: each of
# the four bf16x2 outputs of a 32-bit word of 8 codes is (rotl(w, r) & M), M = 0x81C081C0 (a code's sign at bit 15/31,
# its magnitude at 8..6 / 24..22), with the repacked layout free to place the codes' bits anywhere. That needs four
# rotations whose source bits partition the word. Prints every such set of rotations (the current unpack uses three
# single-shift outputs and one two-shift output: 9 integer ops a word).
#   usage: python3 scripts/gpu/fp4_unpack_search.py
import itertools

MASK = 0x81C081C0
bits = [b for b in range(32) if MASK >> b & 1]


def sources(r):  # bits of w that rotl(w, r) & MASK keeps
    return {(b - r) % 32 for b in bits}


found = [rs for rs in itertools.combinations(range(32), 4)
         if len(set().union(*(sources(r) for r in rs))) == 32]
print(f"mask {MASK:#010x}: {len(found)} sets of four rotations partition the word"
      + (": " + ", ".join(map(str, found)) if found else " (one output must combine two shifted pieces)"))
single = [r for r in range(32) if sources(r).isdisjoint(sources(0))]
print(f"rotations whose kept bits avoid rotation 0's: {single}")
