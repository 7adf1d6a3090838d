# Randomised interleaving model of the persistent registered kernel's ring (moe_experts.cu gemm_registered_persistent,
# session 32) with EMPTY an mbarrier a slot: one producer thread and W consumer warps share L slots over I work items of C
# chunks, each item taking P ring positions (C rounded up to 2·L). The producer, at position q ≥ L, waits on
# EMPTY[(q + 1) % L] for parity (q / L − 1) & 1, then fills slot q % L: a copy (its FULL phase completes when the copy
# lands, later) or, past the item's chunks, an arrival with no bytes. A consumer warp, at chunk g of an item, waits on
# FULL[g % L] for parity (g / L) & 1 (the item's first position is a multiple of 2·L, so the chunk's own numbers do),
# issues its wgmma (it completes later), waits for its earlier wgmma at the second half and, for g > 0, arrives on EMPTY[g %
# L] ("the position before mine is free"); after the item's chunks it waits for every wgmma, takes the empty positions
# (wait FULL, arrive EMPTY) and arrives on EMPTY[0], the arrival the next item's position 0 skips.
# Fails on a deadlock, a wait that passes a phase other than the one it means (a parity seen two phases on), a slot
# refilled while a warp's wgmma may still read it or before every warp released it, a chunk read before it landed or
# from the wrong position, or two positions' arrivals mixed in one EMPTY phase.
#   usage: python3 scripts/gpu/models/persistent.py [SEEDS]             (prints "failures 0")
#          python3 scripts/gpu/models/persistent.py --mutants [SEEDS]   (each protocol mutation must fail)
import random, sys


class Err(Exception):
    pass


def simulate(C, L, I, W, seed, mutant=None):
    rnd = random.Random(seed)
    P = (C + 2 * L - 1) // (2 * L) * (2 * L)
    if mutant == 'pad':  # positions rounded to L only: the chunks' own parities are then wrong for odd items
        P = (C + L - 1) // L * L
    full = [dict(done=0, landed=True) for _ in range(L)]  # completed phases; whether the current fill has landed
    empty = [dict(done=0, count=0, pos=None) for _ in range(L)]
    slot = [None] * L  # the position whose data the slot holds (landed or not)
    released = {}  # position -> warps that released it
    inflight = [set() for _ in range(W)]  # each warp's wgmma in flight: positions they read

    def passes(m, parity, meant):
        # try_wait.parity passes once the phase of that parity has completed: `done` counts completed phases.
        if m['done'] % 2 == parity:
            return False
        if m['done'] != meant + 1:
            raise Err(f'a wait for phase {meant} passed at {m["done"]} completed phases')
        return True

    def empty_arrive(s, pos, who):
        m = empty[s]
        if m['count'] == 0:
            m['pos'] = pos
        elif m['pos'] != pos:
            raise Err(f'EMPTY[{s}]: warp {who} arrives for position {pos} in the phase of {m["pos"]}')
        m['count'] += 1
        released.setdefault(pos, set()).add(who)
        if m['count'] == W:
            m['done'] += 1
            m['count'], m['pos'] = 0, None

    def producer():
        for q in range(I * P):
            c = q % P
            s = q % L
            if q >= L:
                e = (s + 1) % L if mutant != 'own' else s
                while not passes(empty[e], (q // L - 1) & 1, q // L - 1):
                    yield
                old = q - L
                if released.get(old, set()) != set(range(W)):
                    raise Err(f'slot {s} refilled for {q} before every warp released {old}')
                if any(old in f for f in inflight):
                    raise Err(f'slot {s} refilled for {q} under a wgmma of {old}')
            slot[s] = q
            if c < C:
                full[s]['landed'] = False  # the copy lands later (events)
            else:
                full[s]['done'] += 1  # an empty position: the arrival completes the phase
            yield

    def consumer(w):
        for i in range(I):
            for g in range(C):
                q = i * P + g
                s = g % L
                while not passes(full[s], (g // L) & 1, q // L):
                    yield
                if slot[s] != q or not full[s]['landed']:
                    raise Err(f'warp {w} reads position {q} from slot {s} holding {slot[s]}')
                for half in range(2):  # one A-fragment buffer: each half first waits for every earlier wgmma
                    while inflight[w]:
                        yield
                    skip = g == 0 if mutant != 'first' else (g == 0 and i == 0)
                    if half == 1 and not skip:
                        empty_arrive(s, q - 1, w)
                    inflight[w].add(q)
                    yield
            while inflight[w]:  # wgmma_wait<0>
                yield
            for g in range(C, P):
                q = i * P + g
                s = g % L
                while not passes(full[s], (g // L) & 1, q // L):
                    yield
                empty_arrive(s, q - 1, w)
                yield
            if mutant != 'last':
                empty_arrive(0, (i + 1) * P - 1, w)
            yield

    agents = [producer()] + [consumer(w) for w in range(W)]
    alive = set(range(len(agents)))
    quiet = 0  # agent steps since the last one with no pending event (all waiting: a deadlock once long enough)
    for _ in range(400000):
        events = [('land', s) for s in range(L) if not full[s]['landed']]
        events += [('wgmma', w) for w in range(W) if inflight[w]]
        choices = [('agent', a) for a in alive] + events
        if not choices:
            return
        quiet = quiet + 1 if not events else 0
        if quiet > 200 * (W + 1) * L:
            raise Err(f'deadlock: alive={sorted(alive)} full={full} empty={empty}')
        kind, x = rnd.choice(choices)
        if kind == 'land':
            full[x]['landed'] = True
            full[x]['done'] += 1
            continue
        if kind == 'wgmma':
            inflight[x].clear()  # the warp's one position in flight retires
            continue
        try:
            next(agents[x])
        except StopIteration:
            alive.discard(x)
        if not alive and not events:
            return
    raise Err(f'deadlock or livelock: alive={sorted(alive)} full={full} empty={empty}')


def run(seeds, mutant=None):
    failures = 0
    for C in [1, 2, 5, 9, 12, 13]:
        for L in [2, 3, 6]:
            for I in [1, 2, 3]:
                for W in [1, 4]:
                    for seed in range(seeds):
                        try:
                            simulate(C, L, I, W, seed, mutant)
                        except Err as e:
                            failures += 1
                            if mutant is None and failures <= 5:
                                print(f'C={C} L={L} I={I} W={W} seed={seed}: {e}')
    return failures


if __name__ == '__main__':
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    seeds = int(args[0]) if args else 20
    if '--mutants' in sys.argv:
        for mutant in ['pad', 'own', 'first', 'last']:
            print(f'mutant {mutant}: failures {run(seeds, mutant)} (must be > 0)')
    else:
        print(f'failures {run(seeds)}')
