#!/usr/bin/env python3
# Does a bf16 activation split into two e4m3 values (hi = e4m3(x), lo = e4m3(x − hi)), after a power-of-two scale per
# token that puts the token's largest |x| at most 448, reproduce x exactly? If so, an fp8 MMA path (hi and lo against
# E2M1 weights placed as e4m3) gives the bf16 path's products; docs/bench-cuda.md "Next" item 4 weighs its decode cost.
#   usage: python3 scripts/numerics/fp8_split.py [tokens] [hidden] [seed]
import sys
import numpy as np

def bf16(x):  # round float32 to bf16 (nearest, ties to even), returned as float64
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16 << 16
    return b.astype(np.uint32).view(np.float32).astype(np.float64)

def e4m3(x):  # round to OCP e4m3fn (bias 7, max 448, subnormal step 2^-9), nearest, ties to even; no overflow expected
    a = np.abs(x)
    e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    ulp = np.exp2(np.maximum(e, -6) - 3)
    r = np.round(x / ulp) * ulp  # numpy rounds half to even
    assert np.all(np.abs(r) <= 448), "overflow"
    return r

tokens, hidden, seed = (int(v) for v in (sys.argv[1:] + ["256", "2880", "1"][len(sys.argv) - 1:]))
rng = np.random.default_rng(seed)
# Hidden states with a wide range: normal values, a few outliers, and rows of very different magnitude.
x = rng.standard_normal((tokens, hidden)) * np.exp2(rng.integers(-12, 8, size=(tokens, 1)))
x[rng.random((tokens, hidden)) < 0.002] *= 64
x = bf16(x)
absmax = np.abs(x).max(axis=1, keepdims=True)
scale = np.exp2(np.floor(np.log2(448.0 / absmax)))  # power of two: exact
xs = x * scale
hi = e4m3(xs)
lo = e4m3(xs - hi)
inexact = (hi + lo) != xs
rel = np.abs(hi + lo - xs) / np.maximum(np.abs(xs), 1e-300)
print(f"{tokens} × {hidden} bf16 values, seed {seed}: {inexact.sum()} not exact as hi + lo "
      f"({inexact.mean() * 100:.4f}%), largest relative error {rel.max():.3g}, "
      f"smallest |x| / row max among them {np.min(np.abs(xs[inexact]) / 448) if inexact.any() else float('nan'):.3g}")
# The layer's own bar is relative L2 over a whole output; this is the input's.
err = np.linalg.norm((hi + lo) / scale - x) / np.linalg.norm(x)
print(f"relative L2 of the split against x: {err:.3g} (one e4m3 alone: {np.linalg.norm(hi / scale - x) / np.linalg.norm(x):.3g})")

# Where the repacked layout keeps each code's bits (moe_common.cuh, mxfp4_unpack_word: out[q] is a bf16x2 whose low and
# high halves hold one code each as sign at bit 15, magnitude at bits 8..6 of the half). An e4m3 byte wants the sign
# 3 bits above the magnitude, bf16 wants it 7 above: every code's sign and magnitude move by different amounts.
MASK = 0x81C081C0
def unpack(w):
    rotl10 = ((w << 10) | (w >> 22)) & 0xFFFFFFFF
    return [w & MASK, (w << 6) & MASK, rotl10 & MASK, ((w << 4) & 0x81808180) | ((w >> 4) & 0x00400040)]
where = {}
for bit in range(32):
    for q, out in enumerate(unpack(1 << bit)):
        for b in range(32):
            if out >> b & 1:
                half, field = b // 16, b % 16
                where.setdefault((q, half), {})[field] = bit
print("code (out q, half): word bit of the sign, of the magnitude bits 2..0")
for (q, half), fields in sorted(where.items()):
    print(f"  ({q}, {'high' if half else 'low'}): sign {fields[15]}, magnitude {fields[8]} {fields[7]} {fields[6]}")
