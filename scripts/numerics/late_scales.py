#!/usr/bin/env python3
# The late scales' arithmetic (moe_experts.cu "late scales", MOE_CUDA_LATE_SCALE=1), emulated bit for bit where it
# matters: the unpack's bf16 pattern of each code is E2M1 · 2^-126 (code 1 a bf16 subnormal); the tile's activations
# are scaled by 2^P, P = clamp(246 − e, 0, 125) for e their largest finite exponent; each 32-k block's sum (fp32) is
# added at 2^(s−1−P), whose bits are s · 2^23 + (126 − P) · 2^23 for s ≤ 128, and two factors past it (s = 255 NaN).
# Random blocks, scale bytes 0–254 and activations from 1e-30 to 1e30; asserts each result is within 1e-5 of the exact
# sum, relative to the sum of |terms| (results past fp32's range skipped), and prints the worst.
#   usage: python3 scripts/numerics/late_scales.py [trials] [seed]
import sys
import numpy as np
import warnings
warnings.filterwarnings("ignore", category=RuntimeWarning)
trials = int(sys.argv[1]) if len(sys.argv) > 1 else 300
rng = np.random.default_rng(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
E2M1 = np.array([0,0.5,1,1.5,2,3,4,6,-0.0,-0.5,-1,-1.5,-2,-3,-4,-6])
def f32(bits): return np.frombuffer(np.uint32(bits).tobytes(), np.float32)[0]
def bf16_bits(v):  # round to nearest even bf16 of a float32
    b = np.frombuffer(np.float32(v).tobytes(), np.uint32)[0]
    return ((int(b) + 0x7FFF + ((int(b) >> 16) & 1)) >> 16) & 0xFFFF
def bf16_val(h): return f32(h << 16)
def raw_pattern(code):  # the unpack's bf16: sign at 15, magnitude bits at 8..6 -> value E2M1 * 2^-126
    s = (code >> 3) & 1; m = code & 7
    return bf16_val((s << 15) | (m << 6))
for code in range(16):
    assert raw_pattern(code) == np.float32(E2M1[code] * 2.0**-126), code
def late(codes, scales, x):  # codes [blocks,32], scales [blocks], x [blocks*32] bf16 values
    xs_bits = [bf16_bits(v) for v in x]
    finite = [(b & 0x7F80) for b in xs_bits if (b & 0x7F80) != 0x7F80]
    e = max(finite) >> 7
    P = min(max(246 - e, 0), 125)
    base = (126 - P) << 23
    acc = np.float32(0)
    for b in range(len(scales)):
        d = np.float64(0)
        for k in range(32):
            xv = bf16_val(bf16_bits(np.float32(bf16_val(xs_bits[b*32+k])) * np.float32(2.0**P)))
            d += np.float64(raw_pattern(codes[b][k])) * np.float64(xv)
        d = np.float32(d)
        s = int(scales[b])
        if s <= 128:
            f = f32(s * (1 << 23) + base)
            acc = np.float32(np.float64(d) * np.float64(f) + np.float64(acc))
        else:
            ee = s + (base >> 23)
            first = np.float32('nan') if s == 255 else f32(min(ee, 254) << 23)
            second = f32(((ee - 254 + 127) if ee > 254 else 127) << 23)
            acc = np.float32(np.float64(np.float32(d * first)) * np.float64(second) + np.float64(acc))
    return acc
def exact(codes, scales, x):
    return sum(E2M1[codes[b][k]] * 2.0**(int(scales[b]) - 127) * float(x[b*32+k]) for b in range(len(scales)) for k in range(32))
worst = 0
for trial in range(trials):
    blocks = 6
    codes = rng.integers(0, 16, (blocks, 32))
    scale_lo, scale_hi = [(100, 129), (120, 140), (0, 5), (180, 254)][trial % 4]
    scales = rng.integers(scale_lo, scale_hi, blocks)
    mag = 10.0 ** rng.uniform(-30, 30) if trial % 3 == 0 else 1.0
    x = np.array([bf16_val(bf16_bits(np.float32(v))) for v in rng.normal(0, mag, blocks * 32)])
    ref = exact(codes, scales, x); got = float(late(codes, scales, x))
    if not np.isfinite(ref) or abs(ref) > 1e37 or abs(ref) < 1e-30: continue
    scale = sum(abs(E2M1[codes[b][k]] * 2.0**(int(scales[b]) - 127) * float(x[b*32+k])) for b in range(blocks) for k in range(32))
    err = abs(got - ref) / max(scale, 1e-300)
    worst = max(worst, err)
    assert err < 1e-5, (trial, ref, got, scales, mag)
print("worst relative error (to the sum of |terms|):", worst)
