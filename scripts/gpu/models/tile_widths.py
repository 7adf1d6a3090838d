#!/usr/bin/env python3
# The tensor work a registered kernel issues against the rows it needs: tiles of N rows an expert (an expert's last tile
# short), each multiplied at the narrowest of the kernel's wgmma widths that holds its rows. Routing: each token picks k
# distinct experts uniformly (the bench's synthetic routers come close), one draw a size (seeded).
# Session 25 chose the rounded widths' lists with it (docs/bench-cuda.md "Session 25").
#   usage: python3 scripts/gpu/models/tile_widths.py N TOKENS[,TOKENS…] WIDTHS[;WIDTHS…] [--experts E] [--k K] [--seed S]
#          [--fitted]  (tiles fitted to the widths, MOE_CUDA_FIT_TILES=1: RoutingPlan.tileSizes, the same count of tiles
#          whose widths sum least while holding the rows)
#   e.g.   python3 scripts/gpu/models/tile_widths.py 96 1536,2048,2560 "64,96;48,64,80,96"
import argparse
import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument('tile', type=int)
parser.add_argument('tokens')
parser.add_argument('widths')
parser.add_argument('--experts', type=int, default=128)
parser.add_argument('--k', type=int, default=4)
parser.add_argument('--seed', type=int, default=1)
parser.add_argument('--fitted', action='store_true')
args = parser.parse_args()
lists = [sorted(int(w) for w in group.split(',')) for group in args.widths.split(';')]
for widths in lists:
    if widths[-1] != args.tile:
        raise SystemExit(f'widths {widths}: the last must be the tile, {args.tile}')
rng = np.random.default_rng(args.seed)


def rows_per_expert(tokens):
    picks = np.argpartition(rng.random((tokens, args.experts)), -args.k, axis=1)[:, -args.k:]
    return np.bincount(picks.ravel(), minlength=args.experts)


def fitted_sizes(rows, tile, widths):
    """RoutingPlan.tileSizes: the narrower tiles' counts whose shortfalls below the tile sum most within the slack
    (ties: fewer narrow tiles), narrowest first, then full tiles, the last short."""
    tiles = -(-rows // tile)
    slack = tiles * tile - rows
    short = [tile - w for w in widths[:-1]] + [0] * (4 - len(widths))
    narrow = len(widths) - 1
    best = (0, 0, (0, 0, 0))
    for a in range(min(tiles, slack // short[0]) + 1 if narrow > 0 else 1):
        for b in range(min(tiles - a, (slack - a * short[0]) // short[1]) + 1 if narrow > 1 else 1):
            for c in range(min(tiles - a - b, (slack - a * short[0] - b * short[1]) // short[2]) + 1 if narrow > 2 else 1):
                shortfall = a * short[0] + b * short[1] + c * short[2]
                if shortfall > best[0] or (shortfall == best[0] and a + b + c < best[1]):
                    best = (shortfall, a + b + c, (a, b, c))
    planned = [w for w, n in zip(widths[:-1], best[2]) for _ in range(n)]
    planned += [tile] * (tiles - len(planned))
    sizes = []
    for width in planned:
        sizes.append(min(width, rows))
        rows -= sizes[-1]
    return sizes


def tensor_work(counts, widths):
    total = 0
    for rows in counts:
        if args.fitted:
            sizes = fitted_sizes(rows, args.tile, widths)
        else:
            sizes = [min(args.tile, rows - start) for start in range(0, rows, args.tile)]
        total += sum(next(w for w in widths if w >= size) for size in sizes)
    return total


print('tokens  rows/expert  ' + '  '.join(f'{"/".join(map(str, w)):>16}' for w in lists))
for tokens in (int(t) for t in args.tokens.split(',')):
    counts = rows_per_expert(tokens)
    ratios = [tensor_work(counts, w) / counts.sum() for w in lists]
    print(f'{tokens:6d}  {counts.sum() / args.experts:11.1f}  ' + '  '.join(f'{r:16.3f}' for r in ratios))
