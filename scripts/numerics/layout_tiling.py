#!/usr/bin/env python3
# Could another repacked layout make the bf16 MXFP4 decode cheaper? Each of a word's four outputs is a mask M of the
# word's bits moved into place (moe_common.cuh, mxfp4_unpack_word): out0 = w & M takes one op, a rotation then a mask
# two. A layout where all four are rotations needs four rotations of M that tile the 32 bits: 7 ops a word instead of
# 9 (out3 is two shifts and two LOP3 today). This searches every rotation triple.
#   usage: python3 scripts/numerics/layout_tiling.py
M = {6, 7, 8, 15, 22, 23, 24, 31}  # 0x81C081C0: two codes' sign (bit 15 of each half) and magnitude (bits 8..6)
found = [(a, b, c) for a in range(1, 32) for b in range(a + 1, 32) for c in range(b + 1, 32)
         if len(M.union(*({(m - r) % 32 for m in M} for r in (a, b, c)))) == 32]
print(f"rotation triples that tile the word with M: {len(found)}" + (f" {found[:8]}" if found else
      " — no layout decodes a word by four rotations (7 ops); today's 9 build one output from two shifts"))
