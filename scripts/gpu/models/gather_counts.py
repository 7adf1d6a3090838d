# moe_gather_sorted's tile accounting (session 35, MOE_CUDA_GATHER_OVERLAP): blocks take chunks of 32 sorted rows, chunk c
# by block c mod G in increasing c, and after each chunk add its rows to every tile it overlaps (a binary search for the
# first tile ending past the chunk's start, then on while tiles start before its end). GEMM 1's block for tile t waits
# until the count reaches the tile's rows, so every count must end exactly at its rowCount: checked here on random tile
# layouts (contiguous, 1–200 rows each) and block counts, the kernel's loop written out in Python; also prints, for a
# layout of 120b at T tokens (routing uniformly random, seeded, 96- or 192-row tiles), how many chunks each block takes.
#   usage: python3 scripts/gpu/models/gather_counts.py [TOKENS] [BLOCKS] [SEED]
import random, sys

CHUNK = 32  # MOE_GATHER_CHUNK_ROWS


def counts(tiles, blocks):
    """Each tile's count after every block has run: tiles are (rowStart, rowCount), contiguous from 0."""
    total = tiles[-1][0] + tiles[-1][1]
    ready = [0] * len(tiles)
    for block in range(blocks):
        for r0 in range(block * CHUNK, total, blocks * CHUNK):
            r1 = min(r0 + CHUNK, total)
            lo, hi = 0, len(tiles) - 1
            while lo < hi:
                mid = (lo + hi) // 2
                if tiles[mid][0] + tiles[mid][1] <= r0:
                    lo = mid + 1
                else:
                    hi = mid
            t = lo
            while t < len(tiles) and tiles[t][0] < r1:
                ready[t] += min(r1, tiles[t][0] + tiles[t][1]) - max(r0, tiles[t][0])
                t += 1
    return ready


def layout(rows_each):
    tiles, start = [], 0
    for rows in rows_each:
        tiles.append((start, rows))
        start += rows
    return tiles


tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
blocks = int(sys.argv[2]) if len(sys.argv) > 2 else 24
rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
for trial in range(2000):
    tiles = layout([rng.randint(1, 200) for _ in range(rng.randint(1, 300))])
    ready = counts(tiles, rng.randint(1, 64))
    assert ready == [rows for _, rows in tiles], f"trial {trial}: a tile's count is not its rows"
print("2000 random layouts: every tile's count ends at its rows")
experts = [0] * 128
for _ in range(tokens):
    for e in rng.sample(range(128), 4):
        experts[e] += 1
size = 96 if tokens <= 2687 else 192
tiles = layout([min(size, rows - start) for rows in experts for start in range(0, rows, size)])
rows = tiles[-1][0] + tiles[-1][1]
chunks = (rows + CHUNK - 1) // CHUNK
print(f"120b at {tokens} tokens: {rows} rows in {len(tiles)} tiles of ≤ {size}, {chunks} chunks, "
      f"{(chunks + blocks - 1) // blocks} a block at most over {blocks} blocks")
assert counts(tiles, blocks) == [r for _, r in tiles]
