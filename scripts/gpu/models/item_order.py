# How much a static item order costs against the hardware's dynamic block order, by load balance alone (session 32,
# after run 108's persistent 96-token kernel lost 15–19%): gpt-oss-120b's GEMM 1 at T tokens, routing uniformly random
# (seeded), each expert's rows in ⌈rows / 96⌉ tiles at the narrowest of n48 / n64 / n80 / n96 that holds them, 18 row
# blocks a tile; items in launch order on 132 SMs, either round-robin (w = b + i · 132, the persistent kernel before its
# width walk) or greedily to the SM that frees first (the block scheduler). Item time models: constant (DRAM-bound),
# 0.5 + width / 96, width / 96 (tensor-bound). Prints each makespan against the ideal (total / SMs). It leaves out the
# width walk's reordering and L2: only balance.
#   usage: python3 scripts/gpu/models/item_order.py [TOKENS] [SEED]
import heapq, random, sys
from collections import Counter

tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
E, K, SM, ACROSS = 128, 4, 132, 18
rows = [0] * E
for _ in range(tokens):
    for e in rng.sample(range(E), K):
        rows[e] += 1
widths = []
for r in rows:
    n = (r + 95) // 96
    for i in range(n):
        share = r // n + (1 if i < r % n else 0)
        widths.append(next(w for w in (48, 64, 80, 96) if w >= share))
items = [w for w in widths for _ in range(ACROSS)]


def dynamic(times):
    free = [0.0] * SM
    for t in times:
        heapq.heappush(free, heapq.heappop(free) + t)
    return max(free)


def static(times):
    loads = [0.0] * SM
    for i, t in enumerate(times):
        loads[i % SM] += t
    return max(loads)


print(f'T={tokens}: tile widths {dict(sorted(Counter(widths).items()))}, {len(items)} items')
for name, time in [('constant', lambda w: 1.0), ('0.5 + w/96', lambda w: 0.5 + w / 96), ('w/96', lambda w: w / 96)]:
    times = [time(w) for w in items]
    ideal = sum(times) / SM
    d, s = dynamic(times), static(times)
    print(f'{name:>11}: dynamic {100 * (d / ideal - 1):+.1f}%, static {100 * (s / ideal - 1):+.1f}% of the ideal')
