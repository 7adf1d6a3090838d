#!/usr/bin/env python3
# The tensor work a registered kernel issues against the rows it needs: tiles of N rows an expert (an expert's last tile
# short), each multiplied at the narrowest of the kernel's wgmma widths that holds its rows. Routing: each token picks k
# distinct experts uniformly (the bench's synthetic routers come close), one draw a size (seeded).
# Session 25 chose the rounded widths' lists with it (docs/bench-cuda.md "Session 25").
#   usage: python3 scripts/gpu/models/tile_widths.py N TOKENS[,TOKENS…] WIDTHS[;WIDTHS…] [--experts E] [--k K] [--seed S]
#          [--balanced]  (an expert's rows spread evenly over its tiles, each rounded up to 16, the last short: not built)
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
parser.add_argument('--balanced', action='store_true')
args = parser.parse_args()
lists = [sorted(int(w) for w in group.split(',')) for group in args.widths.split(';')]
for widths in lists:
    if widths[-1] != args.tile:
        raise SystemExit(f'widths {widths}: the last must be the tile, {args.tile}')
rng = np.random.default_rng(args.seed)


def rows_per_expert(tokens):
    picks = np.argpartition(rng.random((tokens, args.experts)), -args.k, axis=1)[:, -args.k:]
    return np.bincount(picks.ravel(), minlength=args.experts)


def tensor_work(counts, widths):
    total = 0
    for rows in counts:
        step = args.tile
        if args.balanced and rows > 0:
            tiles = -(-rows // args.tile)
            per_tile = -(-rows // tiles)
            step = min(args.tile, (per_tile + 15) // 16 * 16)
        while rows > 0:
            tile = min(rows, step)
            rows -= tile
            total += next(w for w in widths if w >= tile)
    return total


print('tokens  rows/expert  ' + '  '.join(f'{"/".join(map(str, w)):>16}' for w in lists))
for tokens in (int(t) for t in args.tokens.split(',')):
    counts = rows_per_expert(tokens)
    ratios = [tensor_work(counts, w) / counts.sum() for w in lists]
    print(f'{tokens:6d}  {counts.sum() / args.experts:11.1f}  ' + '  '.join(f'{r:16.3f}' for r in ratios))
