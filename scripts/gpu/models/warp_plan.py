#!/usr/bin/env python3
# moe_route_small's one-warp plan (warp_plan in moe_routing.cu, MOE_CUDA_COMPACT_ROUTE=1) modelled step by step — a
# lane a slot, match_any, ballot, the rolled loops — against the block's plan (histogram, offsets_and_tiles, placement)
# on random top-k ids with −1 slots: counts, offsets, tiles, tile count, slotToSorted and sortedToSlot must all agree.
# The model checks the algorithm, not the CUDA; a GPU's stage checks check that (pending.sh s65).
#   usage: python3 scripts/gpu/models/warp_plan.py [cases] [seed]
import random, sys


def block_plan(ids, experts, tile_rows, max_tiles):
    counts = [sum(1 for x in ids if x == e) for e in range(experts)]
    offsets, running = [], 0
    for c in counts:
        offsets.append(running)
        running += c
    offsets.append(running)
    tiles = []
    for e, c in enumerate(counts):
        for start in range(0, c, tile_rows):
            tiles.append((e, offsets[e] + start, min(tile_rows, c - start)))
    slot_to_sorted, sorted_to_slot = [-1] * len(ids), [None] * running
    for e in range(experts):
        cursor = offsets[e]
        for s, x in enumerate(ids):
            if x == e:
                sorted_to_slot[cursor], slot_to_sorted[s] = s, cursor
                cursor += 1
    return counts, offsets, tiles[:max_tiles], min(len(tiles), max_tiles), slot_to_sorted, sorted_to_slot


def warp_plan(ids, experts, max_tiles):
    slots, lanes = len(ids), range(32)
    lane_id = [ids[l] if l < slots else -1 for l in lanes]
    valid = [l < slots and lane_id[l] >= 0 for l in lanes]
    key = [lane_id[l] if valid[l] else -1 - l for l in lanes]  # match_any's value: invalid lanes match only themselves
    same = [sum(1 << j for j in lanes if key[j] == key[l]) for l in lanes]
    earlier = [bin(same[l] & ((1 << l) - 1)).count("1") for l in lanes]
    below = [sum(1 for j in range(slots) if 0 <= ids[j] < lane_id[l]) for l in lanes]
    total = sum(valid)
    slot_to_sorted, sorted_to_slot = [-1] * slots, [None] * total
    for l in range(slots):
        if valid[l]:
            sorted_to_slot[below[l] + earlier[l]] = l
            slot_to_sorted[l] = below[l] + earlier[l]
    leader = [valid[l] and earlier[l] == 0 for l in lanes]
    tiles = {}
    for l in lanes:
        if leader[l]:
            base = sum(1 for j in lanes if leader[j] and lane_id[j] < lane_id[l])
            if base < max_tiles:
                tiles[base] = (lane_id[l], below[l], bin(same[l]).count("1"))
    counts = [sum(1 for x in ids if x == e) for e in range(experts)]
    offsets = [sum(1 for x in ids if 0 <= x < e) for e in range(experts)] + [total]
    return counts, offsets, [tiles[i] for i in sorted(tiles)], min(sum(leader), max_tiles), slot_to_sorted, sorted_to_slot


def main():
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    for case in range(cases):
        experts = rng.choice([4, 8, 32, 128])
        k = rng.randint(1, min(4, experts))
        tokens = rng.randint(1, 32 // k)  # slots ≤ 32
        ids = []
        for _ in range(tokens):  # a token's k experts are distinct; a few slots route nowhere
            ids += [e if rng.random() > 0.05 else -1 for e in rng.sample(range(experts), k)]
        tile_rows = max(tokens, rng.choice([8, 16, 32]))  # an expert's ≤ T rows fit one tile
        max_tiles = rng.choice([min(experts, len(ids)) + len(ids) // tile_rows, 2])
        want, got = block_plan(ids, experts, tile_rows, max_tiles), warp_plan(ids, experts, max_tiles)
        if want != got:
            sys.exit(f"case {case}: ids {ids} (E = {experts}, tileRows = {tile_rows}, maxTiles = {max_tiles}):\n"
                     f"block {want}\nwarp  {got}")
    print(f"{cases} cases: the warp's plan equals the block's")


main()
