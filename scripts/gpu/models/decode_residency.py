#!/usr/bin/env python3
"""Where a one-token layer's GEMM blocks can be resident, by arithmetic (no GPU): for each (GEMM 1, GEMM 2) pair of
resident kernels, how many SMs GEMM 1's blocks fill and how many of GEMM 2's blocks fit beside them before GEMM 1 ends
(GEMM 2 launches early, pending.sh s73 / s74). Past one wave of GEMM 1 the early count is not shown.

Assumes what session 35's trace showed: the block scheduler packs an SM to GEMM 1's limit before the next SM (360
eight-warp blocks on 120 SMs), and GEMM 2's blocks take what is left. Limits a block: shared memory as
LaunchPlan.sharedBytes computes it for resident kernels (+1 KB the driver reserves a block), registers as ptxas gave
them (NVRTC 13.0, rounded up to 8 a thread), 2048 threads. Usage: decode_residency.py [tokens] [model]
"""
import sys

SMS, SHARED, REGISTERS, THREADS = 132, 228 * 1024, 65536, 2048
MODELS = {"gpt-oss-120b": dict(hidden=2880, intermediate=2880, experts=128, k=4),
          "gpt-oss-20b": dict(hidden=2880, intermediate=2880, experts=32, k=4)}
# resident_MI_NJ_WN_WK_S: ptxas registers (sessions 36–37's compiles; resident_1_1_4_1_4 is always a bulk kernel)
PTXAS = {"resident_1_1_4_2_3": 78, "resident_1_1_2_4_3": 78, "resident_1_1_8_1_3": 78, "resident_1_1_2_2_4": 77,
         "resident_1_1_4_1_4": 109}


def shape(name, k, rows, tokens):
    mi, nj, wn, wk, slots = (int(n) for n in name.split("_")[1:])
    warps, chunks = wn * wk, (k + 63) // 64
    partials = warps * mi * nj * 32 * 4 * 4 if wk > 1 else 0
    shared = min(8 * nj, tokens) * (64 * chunks + 8) * 2 + partials + warps * slots * mi * 5 * 512
    registers = warps * 32 * (PTXAS[name] + 7) // 8 * 8
    return dict(warps=warps, shared=shared, registers=registers, blocks_per_tile=rows // (16 * mi * wn))


def fits(block, shared, registers, threads):
    """How many more of `block` an SM holds with `shared`, `registers`, `threads` already taken."""
    return max(0, min((SHARED - shared) // (block["shared"] + 1024), (REGISTERS - registers) // block["registers"],
                      (THREADS - threads) // (32 * block["warps"])))


def main():
    tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    model = MODELS[sys.argv[2] if len(sys.argv) > 2 else "gpt-oss-120b"]
    tiles = tokens * model["k"]  # one-row tiles at decode sizes, T·k ≤ E
    pairs = [("resident_1_1_4_2_3", "resident_1_1_2_4_3"), ("resident_1_1_8_1_3", "resident_1_1_2_4_3"),
             ("resident_1_1_4_1_4", "resident_1_1_2_4_3"), ("resident_1_1_4_2_3", "resident_1_1_2_2_4"),
             ("resident_1_1_8_1_3", "resident_1_1_2_2_4"), ("resident_1_1_8_1_3", "resident_1_1_4_2_3"),
             ("resident_1_1_4_1_4", "resident_1_1_4_1_4")]
    print(f"T={tokens}: {tiles} tiles; SM limits {SHARED // 1024} KB shared, {REGISTERS} registers, {THREADS} threads")
    print(f"{'GEMM 1':20} {'GEMM 2':20} {'G1 blocks':>9} {'/SM':>4} {'G1 SMs':>6} {'G1 waves':>8} "
          f"{'G2 blocks':>9} {'G2 early':>8} {'early %':>7}")
    for first, second in pairs:
        g1 = shape(first, model["hidden"], 2 * model["intermediate"], tokens)
        g2 = shape(second, model["intermediate"], model["hidden"], tokens)
        g1_blocks, g2_blocks = g1["blocks_per_tile"] * tiles, g2["blocks_per_tile"] * tiles
        per_sm = fits(g1, 0, 0, 0)
        full, rest = divmod(g1_blocks, per_sm)
        busy = min(SMS, full + (rest > 0))
        waves = g1_blocks / (per_sm * SMS)
        # beside GEMM 1: on its full SMs, on the SM holding the remainder, and on the idle ones
        beside = min(full, SMS) * fits(g2, per_sm * (g1["shared"] + 1024), per_sm * g1["registers"], per_sm * 32 * g1["warps"])
        if rest and busy > full:
            beside += fits(g2, rest * (g1["shared"] + 1024), rest * g1["registers"], rest * 32 * g1["warps"])
        beside += (SMS - busy) * fits(g2, 0, 0, 0)
        early = min(g2_blocks, beside)
        # Past one wave GEMM 1's later blocks queue for the SMs, so GEMM 2's early blocks would only delay them.
        shown = (f"{early:8} {100 * early / g2_blocks:6.0f}%") if full + (rest > 0) <= SMS else f"{'-':>8} {'-':>7}"
        print(f"{first:20} {second:20} {g1_blocks:9} {per_sm:4} {busy:6} {waves:8.2f} {g2_blocks:9} {shown}")


if __name__ == "__main__":
    main()
