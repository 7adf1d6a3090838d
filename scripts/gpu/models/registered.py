# Randomised interleaving model of gemm_registered (moe_experts.cu) at warp granularity: 4 producer warps that only
# copy (cp.async groups, fence, FULL arrive, EMPTY sync before refilling a slot) and 2 or 3 consumer warpgroups that read a
# chunk's codes, then per 32-k half wait for the wgmma group two halves back, decode into that fragment buffer and issue
# (wgmma groups retire in order per warpgroup). Named barriers have no phase bit. Fails on a deadlock, a barrier reached
# with two phases or counts, codes or activations read before they landed (and, for the tensor cores, were fenced), a
# load slot refilled while a wgmma or a code read still needs it, or a fragment buffer rewritten under its wgmma.
# Session 13, after runs 51–52. Session 14: the staged epilogue (STAGED: after its last wgmma each consumer warp waits on
# the consumers' EPILOGUE barrier, writes its part of the output tile into the load slots, waits again, then stores the
# tile): fails on a slot written while a wgmma or a copy may still use it, or the tile stored before every warp wrote it.
# Session 15: tensor copies (TENSOR = 1 GEMM 1: cp.async activations, each producer warp's arrival on the slot's FULL
# mbarrier once they land, plus warp 0's arrive.expect_tx and its tensor copies of codes and scales; TENSOR = 2 GEMM 2:
# warp 0 alone, its tensor copies bring the activations too, and EMPTY counts one producer warp). The producers fill every
# slot, then refill each after its EMPTY; copies land asynchronously; consumers wait on the mbarrier's phase parity (and
# in GEMM 1 fence for the tensor cores themselves). Fails as above, and on arrivals of two chunks mixed in one phase,
# a phase left incomplete, or a consumer passing a phase before its chunk landed.
# Session 21: EMPTY as an mbarrier a slot (EMPTY_MB, the kernels' E = 1): lane 0 of each consumer warp arrives once a
# chunk g > 0, after the second half's wait, on the mbarrier of slot g % L ("the slot before mine is free"); the producer
# refilling slot t for chunk `ahead` waits on slot (t + 1) % L's for parity (ahead / L - 1) & 1. Fails as above, and on
# arrivals of two chunks in one phase or a phase left incomplete.
# Session 22: one A-fragment buffer (the kernels' F = 1) waits for the group one half back instead of two; its schedules
# are a subset of these (a wgmma group always retires by itself, so the stronger wait cannot deadlock), so the model with
# two buffers covers it. The named-barrier EMPTY (E = 0) is gone from the kernels; the model keeps it, as it keeps the
# removed cp.async producers (TENSOR = 0).
#   usage: python3 scripts/gpu/models/registered.py [SEEDS]            (prints "failures 0")
#          python3 scripts/gpu/models/registered.py --mutants [SEEDS]  (each protocol mutation must fail: the model can)
#          --consumers=4 (or 2,3,5): only those consumer warpgroup counts (four and five: tensor copies only)
#          --steps=C,L,SEED,WG: the steps one run takes (tensor copies, staged, EMPTY mbarriers: the kernels' protocol)
import random, sys


class Err(Exception):
    pass


def simulate(C, L, seed, mutant=None, WG=2, staged=True, tensor=0, items=0, emptymb=False):
    """items > 0: the persistent kernel (tensor copies, staged): `items` tiles of C chunks on one ring. emptymb: EMPTY
    an mbarrier a slot (tensor copies only)."""
    rnd = random.Random(seed)
    emb = [dict(phase=0, count=0, chunk=None) for _ in range(L)]  # emptymb: EMPTY per slot, 4·WG arrivals a phase

    def emb_arrive(s, d):
        m = emb[s]
        if m['count'] == 0:
            m['chunk'] = d
        elif m['chunk'] != d:
            raise Err(f'EMPTY mbarrier {s}: an arrival for chunk {d} in the phase of chunk {m["chunk"]}')
        m['count'] += 1
        if m['count'] == 4 * WG:
            m['phase'] += 1
            m['count'], m['chunk'] = 0, None
    per_item = C
    if items:
        C = items * per_item  # ring positions: the chunks' identities from here on
    EMPTY_COUNT = 128 * WG + (32 if tensor == 2 else 128)  # tensor copies in GEMM 2: one producer warp waits on EMPTY
    mbar = [dict(phase=0, pending=None, tx=0, chunk=None) for _ in range(L)]  # tensor copies: FULL per slot
    flights = []  # tensor copies: ('tensor', chunk) and ('cp', warp, chunk) in flight
    tensor_landed = set()
    consumer_fenced = {}  # chunk -> consumer warps that fenced after its FULL phase (GEMM 1 with tensor copies)
    DIST = L if mutant == 'dist' else L - 2  # 'dist': loads as far ahead as there are slots (no slot left to wait on)
    FULL, EMPTY, EPILOGUE = 1, 1 + L, 1 + 2 * L
    NPW, THREADS = 4, 128 * (1 + WG)  # WG consumer warpgroups
    bars = {}
    slot_chunk = [None] * L  # chunk whose copies were issued last into each load slot
    landed, fenced = {}, {}  # chunk -> producer warps whose copies landed / landed and were fenced
    code_reads = {}  # chunk -> consumer warps that read its codes
    ops = {}  # (warpgroup, chunk, half) -> dict(issued, started, done)
    order = {w: [] for w in range(WG)}  # a warpgroup's ops in issue order (they retire in order)
    retired = {w: 0 for w in range(WG)}  # how many of them have completed
    buffers = {}  # (consumer warp, half) -> op whose wgmma reads that fragment buffer
    pend = {w: [] for w in range(NPW)}
    blocked = {}
    staged_by = set()  # consumer warps that wrote their part of the staged output tile
    stored = {}  # persistent: item -> consumer warps that stored its tile

    def bar(warp, bid, n, tag, sync):
        b = bars.setdefault(bid, dict(cnt=0, exp=None, tags=[], waiters=[]))
        if b['cnt'] == 0:
            b['exp'] = n
        elif b['exp'] != n:
            raise Err(f'barrier {bid} count mismatch {b["exp"]} vs {n}')
        b['cnt'] += 32
        b['tags'].append(tag)
        if sync:
            b['waiters'].append(warp)
        if b['cnt'] > b['exp']:
            raise Err(f'barrier {bid} overflow')
        if b['cnt'] == b['exp']:
            if len(set(b['tags'])) != 1:
                raise Err(f'barrier {bid} mixed phases {sorted(set(b["tags"]))}')
            for w in b['waiters']:
                blocked.pop(w, None)
            bars[bid] = dict(cnt=0, exp=None, tags=[], waiters=[])
            return False
        return sync

    def issue_copies(pw, c):
        if c < C:
            l = c % L
            for g in range(c - L, -1, -L):  # the slot's earlier chunks
                for wg in range(WG):
                    for h in (0, 1):
                        op = ops.get((wg, g, h))
                        if op is not None and not op['done']:
                            raise Err(f'cp.async chunk {c} into slot {l} while wgmma({wg},{g},{h}) reads it')
            old = c - L
            if old >= 0 and len(code_reads.get(old, ())) < 4 * WG:
                raise Err(f'cp.async chunk {c} overwrites the codes of chunk {old} before every consumer read them')
            slot_chunk[l] = c
        pend[pw].append(c)

    def mbar_update(s, c, arrivals=0, tx=0):
        m = mbar[s]
        if m['chunk'] is None:
            m['chunk'], m['pending'] = c, (1 if tensor == 2 else NPW + 1)
        elif m['chunk'] != c:
            raise Err(f'FULL mbarrier {s}: an arrival for chunk {c} in the phase of chunk {m["chunk"]}')
        m['pending'] -= arrivals
        m['tx'] += tx
        if m['pending'] < 0:
            raise Err(f'FULL mbarrier {s}: more arrivals than expected')
        if m['pending'] == 0 and m['tx'] == 0:
            m['phase'] += 1
            m['chunk'] = None

    def issue_tensor(pw, c):
        if c >= C:
            return
        issue_copies(pw, c)
        pend[pw].clear()  # the cp.async groups of issue_copies are modelled as flights here
        if pw == 0:
            mbar_update(c % L, c, arrivals=1, tx=1)  # arrive.expect_tx, then the copy engine's copies
            flights.append(('tensor', c))
        if tensor == 1:
            flights.append(('cp', pw, c))

    def land(flight):
        flights.remove(flight)
        if flight[0] == 'tensor':
            tensor_landed.add(flight[1])
            mbar_update(flight[1] % L, flight[1], tx=-1)
        else:
            _, pw, c = flight
            landed.setdefault(c, set()).add(pw)
            mbar_update(c % L, c, arrivals=1)  # cp.async.mbarrier.arrive.noinc: once this warp's copies landed

    def chunk_landed(g):
        if tensor == 0:
            return landed.get(g, set()) == set(range(NPW))
        return g in tensor_landed and (tensor == 2 or landed.get(g, set()) == set(range(NPW)))

    def producer_persistent(pw):
        if tensor == 2 and pw != 0:
            return
        for q in range(C):  # every item's chunks on one ring
            if q >= L:
                if bar(pw, EMPTY + q % L, EMPTY_COUNT, ('E', q - L), True):
                    blocked[pw] = 1
                    yield
            issue_tensor(pw, q)
            yield
        if mutant != 'notail':  # 'notail': leave the last L positions' EMPTY arrivals unmatched
            for d in range(max(C - L, 0), C):
                if bar(pw, EMPTY + d % L, EMPTY_COUNT, ('E', d), True):
                    blocked[pw] = 1
                    yield

    def producer_tensor(pw):
        if tensor == 2 and pw != 0:
            return
        first = L + 1 if mutant == 'tahead' else L  # 'tahead': one chunk more than there are slots before waiting
        for c in range(min(first, C)):
            issue_tensor(pw, c)
            yield
        for ahead in range(first, C):
            if emptymb:
                s = (ahead % L + (0 if mutant == 'mslot' else 1)) % L  # 'mslot': the refilled slot's own mbarrier
                parity = ((ahead // L) if mutant == 'mparity' else (ahead // L - 1)) & 1  # 'mparity': one phase late
                while (emb[s]['phase'] & 1) == parity:  # try_wait.parity
                    blocked[pw] = 'wg'
                    yield
            elif bar(pw, EMPTY + (ahead - L) % L, EMPTY_COUNT, ('E', ahead - L), True):
                blocked[pw] = 1
                yield
            issue_tensor(pw, ahead)
            yield

    def wait_group(pw, n):
        while len(pend[pw]) > n:
            c = pend[pw].pop(0)
            if c is not None and c < C:
                landed.setdefault(c, set()).add(pw)

    def producer(pw):
        for c in range(DIST):
            issue_copies(pw, c)
            yield
        for g in range(C):
            wait_group(pw, DIST - 1)
            yield
            if mutant != 'nofence':
                fenced.setdefault(g, set()).update(landed.get(g, set()) & {pw})
            yield
            bar(pw, FULL + g % L, THREADS, ('F', g), False)
            yield
            ahead = g + DIST
            if ahead < C and ahead >= L:
                if bar(pw, EMPTY + (ahead - L) % L, THREADS, ('E', ahead - L), True):
                    blocked[pw] = 1
                    yield
            issue_copies(pw, ahead)
            yield
        wait_group(pw, 0)

    def consumer(cw):
        wg = (cw - NPW) >> 2
        keep = 2 if mutant == 'wait2' else 1  # wgmma groups left pending before a fragment buffer is rewritten

        mine = []  # this warp's wgmma groups (wgmma.wait_group counts the issuing warp's own)

        def wait(n):
            while sum(1 for k in mine if not ops[k]['done']) > n:
                blocked[cw] = 'wg'
                yield

        for position in range(C):
            g = position  # the chunk (a ring position when persistent)
            item, local = divmod(position, per_item)
            if tensor:
                while (mbar[g % L]['phase'] & 1) == ((g // L) & 1):  # try_wait.parity: the phase of parity g / L done
                    blocked[cw] = 'wg'
                    yield
                if tensor == 1 and mutant != 'tnofence':
                    consumer_fenced.setdefault(g, set()).add(cw)
            elif bar(cw, FULL + g % L, THREADS, ('F', g), True):
                blocked[cw] = 1
                yield
            if slot_chunk[g % L] != g or not chunk_landed(g):
                raise Err(f'consumer {cw} reads the codes of chunk {g} before they landed (slot holds {slot_chunk[g % L]})')
            code_reads.setdefault(g, set()).add(cw)
            yield
            for h in range(2):
                yield from wait(keep)
                if emptymb:  # lane 0 of the warp, for chunk g - 1 ('mfirst': at the first half, before its wgmma is done)
                    if g > 0 and h == (0 if mutant == 'mfirst' else 1):
                        emb_arrive(g % L, g - 1)
                        yield
                d = g - 1
                limit = C if mutant == 'arrive' else C - L  # 'arrive': one EMPTY arrival the producers never wait for
                if items:  # every position's, the item's last one after it (below)
                    arrive = h == 1 and local >= 1
                else:
                    arrive = h == 1 and d >= 0 and d < limit and not emptymb
                if arrive:
                    count = THREADS if (not tensor or mutant == 'tcount') else EMPTY_COUNT  # 'tcount': the old count
                    bar(cw, EMPTY + d % L, count, ('E', d), False)
                    yield
                prior = buffers.get((cw, h))
                if prior is not None and not ops[prior]['done']:
                    raise Err(f'consumer {cw} rewrites fragment buffer {h} while wgmma{prior} reads it')
                if tensor == 1:
                    ready = chunk_landed(g) and cw in consumer_fenced.get(g, set())
                else:
                    ready = chunk_landed(g) if tensor == 2 else fenced.get(g, set()) == set(range(NPW))
                if not ready or slot_chunk[g % L] != g:
                    raise Err(f'wgmma({wg},{g},{h}): activations not landed and fenced')
                key = (wg, g, h)
                op = ops.setdefault(key, dict(issued=set(), started=False, done=False))
                op['issued'].add(cw)
                if key not in order[wg]:
                    order[wg].append(key)
                if len(op['issued']) == 4:
                    op['started'] = True
                buffers[(cw, h)] = key
                mine.append(key)
                yield
            if items and local == per_item - 1:
                yield from wait(0)
                if mutant != 'nolast':  # 'nolast': the item's last slot left for the next item to free
                    bar(cw, EMPTY + g % L, EMPTY_COUNT, ('E', g), False)
                    yield
                # The epilogue stages through its own tile: the load slots may already hold the next item's chunks.
                if mutant != 'nofirst' or item == 0:  # 'nofirst': stage before the others stored the last tile
                    if bar(cw, EPILOGUE, 128 * WG, ('S', item), True):
                        blocked[cw] = 1
                        yield
                if item > 0 and len(stored.get(item - 1, ())) != 4 * WG:
                    raise Err(f'consumer {cw} stages tile {item} while the staged tile {item - 1} is still being stored')
                staged_by.add((cw, item))
                yield
                if bar(cw, EPILOGUE, 128 * WG, ('T', item), True):
                    blocked[cw] = 1
                    yield
                if sum(1 for _, i in staged_by if i == item) != 4 * WG:
                    raise Err(f'consumer {cw} stores tile {item} before every consumer warp staged its part')
                for _ in range(3):  # storing the tile takes a while (a rolled loop of 16-byte stores)
                    yield
                stored.setdefault(item, set()).add(cw)
                yield
        if items:
            return
        yield from wait(0)
        if staged:
            if mutant != 'noepilogue':  # 'noepilogue': stage without waiting for the other consumers
                if bar(cw, EPILOGUE, 128 * WG, ('S', 0), True):
                    blocked[cw] = 1
                    yield
            busy = [k for k, op in ops.items() if not op['done']]
            if busy:
                raise Err(f'consumer {cw} writes the staged tile into the load slots while wgmma{busy[0]} reads them')
            if flights or any(c is not None and c < C for w in range(NPW) for c in pend[w]):
                raise Err(f'consumer {cw} writes the staged tile while copies into the slots are in flight')
            staged_by.add(cw)
            yield
            if mutant != 'nostore':  # 'nostore': store the tile without waiting for the other warps' parts
                if bar(cw, EPILOGUE, 128 * WG, ('T', 0), True):
                    blocked[cw] = 1
                    yield
            if len(staged_by) != 4 * WG:
                raise Err(f'consumer {cw} stores the staged tile before every consumer warp wrote its part')

    agents = {w: (producer_persistent(w) if items else producer_tensor(w) if tensor else producer(w)) for w in range(NPW)}
    agents.update({w: consumer(w) for w in range(NPW, NPW + 4 * WG)})
    done = set()
    speed = {w: rnd.choice([0.02, 0.2, 1, 1, 5]) for w in agents}
    cspeed = rnd.choice([0.01, 0.1, 1])
    steps = 0
    # Spinning warps take steps too, so a complete run's count grows with warps and chunks: five consumer warpgroups and
    # 45 chunks took 439,457 (seed 0, L = 3), past the 400,000 that four had fitted (305,041): --steps=45,3,0,5 and 4.
    limit = max(400000, 3000 * WG * C * max(1, items))
    while len(done) < len(agents):
        steps += 1
        if steps > limit:  # warps spinning on an mbarrier phase that never completes: a deadlock with no blocked set
            raise Err(f'no progress after {steps} steps (a wait that never ends); blocked={blocked}')
        cands = [('run', w) for w in agents if w not in done and blocked.get(w) in (None, 'wg')]
        for wg in range(WG):
            if retired[wg] < len(order[wg]) and ops[order[wg][retired[wg]]]['started']:
                cands.append(('complete', order[wg][retired[wg]]))
        cands += [('land', f) for f in flights]
        if not cands:
            raise Err(f'deadlock; blocked={blocked} bars={ {k: (v["cnt"], v["tags"][:3]) for k, v in bars.items() if v["cnt"]} }')
        kind, x = rnd.choices(cands, weights=[speed[c[1]] if c[0] == 'run' else cspeed for c in cands])[0]
        if kind == 'land':
            land(x)
            continue
        if kind == 'complete':
            ops[x]['done'] = True
            retired[x[0]] += 1
            continue
        if blocked.get(x) == 'wg':
            blocked.pop(x)
        try:
            next(agents[x])
        except StopIteration:
            done.add(x)
    left = {k: v['tags'][:3] for k, v in bars.items() if v['cnt']}
    if left:
        raise Err(f'barriers left with arrivals nobody waits for: {left}')
    if any(m['count'] for m in emb):
        raise Err(f'an EMPTY mbarrier phase left incomplete: {emb}')
    if flights or any(m['chunk'] is not None for m in mbar):
        raise Err(f'copies still in flight or a FULL phase incomplete at the end: {flights} {mbar}')
    return steps


def run(seeds, mutant=None, tensors=(0, 1, 2), persistent=True, emptymb=(False, True)):
    bad = 0
    if persistent:  # the persistent kernel: tensor copies, staged, 1–4 tiles of 1–11 chunks
        for tensor in tensors:
            if not tensor:
                continue
            for WG in only([2, 3]):
                for L in [3, 4, 6]:
                    for items in [1, 2, 3, 4]:
                        for C in [1, 2, 3, 4, 5, 7, 11]:
                            for seed in range(seeds):
                                try:
                                    simulate(C, L, seed, mutant, WG, True, tensor, items)
                                except Err as e:
                                    if mutant is None:
                                        print(f'persistent items={items} tensor={tensor} WG={WG} L={L} C={C} seed={seed}: {e}')
                                    bad += 1
                                    break
    for tensor in tensors:
        for mb in emptymb if tensor else (False,):  # EMPTY mbarriers: tensor copies only (session 21)
            for staged in [False, True] if not mb else [True]:
                for WG in only([2, 3, 4, 5] if tensor else [2, 3]):  # four or five consumer warpgroups: tensor copies only (sessions 16, 23)
                    for L in [3, 4, 6, 7]:
                        for C in list(range(1, 12)) + [17, 45]:
                            for seed in range(seeds):
                                try:
                                    simulate(C, L, seed, mutant, WG, staged, tensor, emptymb=mb)
                                except Err as e:
                                    if mutant is None:
                                        print(f'tensor={tensor} staged={staged} WG={WG} L={L} C={C} seed={seed} emptymb={mb}: {e}')
                                    bad += 1
                                    break
    return bad


args = [a for a in sys.argv[1:] if not a.startswith('--')]
chosen = [int(w) for a in sys.argv[1:] if a.startswith('--consumers=') for w in a.split('=')[1].split(',')]
if any(wg not in (2, 3, 4, 5) for wg in chosen):
    sys.exit('--consumers: 2, 3, 4 or 5 (the counts the model covers)')


def only(counts):
    return [wg for wg in counts if not chosen or wg in chosen]


seeds = int(args[0]) if args else 100
for a in sys.argv[1:]:
    if a.startswith('--steps='):
        C, L, seed, WG = (int(v) for v in a.split('=')[1].split(','))
        print('steps', simulate(C, L, seed, None, WG, True, 1, emptymb=True))
        sys.exit(0)
if '--mutants' in sys.argv:
    caught = 0
    mutants = ['dist', 'nofence', 'wait2', 'arrive', 'noepilogue', 'nostore', 'tahead', 'tcount', 'tnofence',
               'notail', 'nolast', 'nofirst', 'mfirst', 'mslot', 'mparity']
    persistent_only = {'notail', 'nolast', 'nofirst'}
    mbarrier_only = {'mfirst', 'mslot', 'mparity'}  # session 21: EMPTY as an mbarrier
    for mutant in mutants:  # the session 15 ones change only the tensor-copy protocol (the last three the persistent one)
        tensor_only = mutant.startswith('t') or mutant in persistent_only or mutant in mbarrier_only
        failures = run(seeds, mutant, (1, 2) if tensor_only else (0,), persistent=mutant in persistent_only,
                       emptymb=(True,) if mutant in mbarrier_only else (False,))
        print(f'mutant {mutant}: {failures} failing configurations', flush=True)
        caught += failures > 0
    print('mutants caught', caught, 'of', len(mutants))
    sys.exit(0 if caught == len(mutants) else 1)
print('failures', run(seeds), flush=True)
