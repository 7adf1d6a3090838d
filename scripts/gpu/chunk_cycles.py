#!/usr/bin/env python3
# Cycles a registered kernel's block spends on one 64-k chunk, by arithmetic on measured figures (session 16): the
# figure's time or cycles over the chunks an SM runs (tiles × column blocks × 45 chunks / 132 SMs). Tile counts are
# estimates (gpt-oss-120b, 128-row tiles: ~128 at 2048 tokens, ~320 at 8192; run 56's ncu grid launched 384, the bound),
# and a layer time includes routing and the sum, so these are upper bounds.
#   usage: python3 scripts/gpu/chunk_cycles.py
SMS, CHUNKS = 132, 2880 // 64
rows = [  # (figure, tiles, column blocks, cycles)
    ("run 56 ncu: GEMM 1 at 8192 tokens, 4,883,338 SM active cycles, ~320 tiles", 320, 23, 4883338),
    ("… the same with the grid's 384-tile bound", 384, 23, 4883338),
]
for us, tiles, label in ((1430.5, 128, "run 58: lean default 1430.5 µs at 2048 tokens"), (3921.3, 320, "run 58: 3921.3 µs at 8192")):
    for ghz in (1.75, 1.85):
        rows.append((f"{label}, both GEMMs, {ghz} GHz", tiles, 23 + 12, us * 1e-6 * ghz * 1e9))
for figure, tiles, blocks, cycles in rows:
    print(f"{cycles / (tiles * blocks * CHUNKS / SMS):6.0f} cycles a chunk  {figure}")
# run 56's ncu: warp instructions (sass_counts.py) over SM active cycles and 4 schedulers an SM
print(f"{994251384 / (4883338.28 * SMS * 4):6.3f} instructions a cycle a scheduler (run 56, GEMM 1 at 8192 tokens)")
