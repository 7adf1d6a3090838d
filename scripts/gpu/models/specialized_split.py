# Randomised interleaving model of gemm_specialized (moe_experts.cu) at warp granularity: producer and consumer
# warps, named barriers with no phase bit (FULL, EMPTY, PRODUCERS), cp.async groups, wgmma groups retiring in order.
# (Session 9 modelled the split decode too; session 10 measured those kernels slower and removed both.) Fails on a deadlock, a barrier reached with two phases or counts, a
# slot read before its decode is fenced, or a slot overwritten while a wgmma reads it. Session 9's review.
#   usage: python3 scripts/gpu/models/specialized_split.py [SEEDS]   (prints "failures 0")
import random, sys
class Err(Exception): pass

def simulate(C, L, seed, P=2):
    rnd = random.Random(seed)
    W3 = 3; DIST = L - 2
    FULL, EMPTY = 1, 4; PRODUCERS = 4 + L
    NPW = 4 * P
    THREADS = 128 * P + 256
    # state
    bars = {}  # id -> dict(cnt, exp, tags, waiters)
    load_chunk = [None] * L          # chunk whose copies were issued last into load slot
    landed = {}                       # (chunk) -> set of producer warps whose copies landed
    act_fenced = {}                   # chunk -> set of producer warps that fenced after landing
    decode_reads_done = {}            # chunk -> count of group decodes read from load slot
    weight = [[None] * 16 for _ in range(W3)]  # weight slot rows: chunk decoded (fenced)
    ops = {}                          # (cg, g) -> dict(issued set, started, done)
    active_reads = []                 # list of (cg,g) started not done
    pend = {w: [] for w in range(NPW)}  # producer commit groups: list of chunk or None
    log = []

    def bar(warp, bid, n, tag, sync):
        b = bars.setdefault(bid, dict(cnt=0, exp=None, tags=[], waiters=[]))
        if b['cnt'] == 0: b['exp'] = n
        elif b['exp'] != n: raise Err(f'barrier {bid} count mismatch {b["exp"]} vs {n}')
        b['cnt'] += 32; b['tags'].append(tag)
        if sync: b['waiters'].append(warp)
        if b['cnt'] > b['exp']: raise Err(f'barrier {bid} overflow')
        if b['cnt'] == b['exp']:
            if len(set(b['tags'])) != 1: raise Err(f'barrier {bid} mixed phases {sorted(set(b["tags"]))}')
            for w in b['waiters']: blocked.pop(w, None)
            bars[bid] = dict(cnt=0, exp=None, tags=[], waiters=[])
            return False
        return sync  # blocked?

    def issue_copies(pw, c):
        if c < C:
            l = c % L
            # hazards: readers of slot l's previous content
            for (cg, g) in active_reads:
                if g % L == l: raise Err(f'cp.async chunk {c} into load slot {l} while wgmma({cg},{g}) reads it')
            old = c - L
            if old >= 0 and decode_reads_done.get(old, 0) < 16:
                raise Err(f'cp.async chunk {c} overwrites codes of chunk {old} before all decodes read them ({decode_reads_done.get(old,0)}/16)')
            load_chunk[l] = c  # (per-warp granularity; all warps write the same chunk)
        pend[pw].append(c)

    def wait_group(pw, n):
        while len(pend[pw]) > n:
            c = pend[pw].pop(0)
            if c is not None and c < C: landed.setdefault(c, set()).add(pw)

    def decode(warp, gi, g):
        l = g % L
        if load_chunk[l] != g: raise Err(f'decode of chunk {g} group {gi} by {warp}: load slot holds {load_chunk[l]}')
        if landed.get(g, set()) != set(range(NPW)): raise Err(f'decode of chunk {g} by {warp} before all copies landed {landed.get(g)}')
        s = g % W3; cg = gi // 8
        for (c2, g2) in active_reads:
            if c2 == cg and g2 % W3 == s: raise Err(f'decode chunk {g} group {gi} into weight slot {s} while wgmma({c2},{g2}) reads it')
        weight[s][gi] = g
        decode_reads_done[g] = decode_reads_done.get(g, 0) + 1

    def wgmma_issue(cw, cg, g):
        s = g % W3
        for gi in range(8 * cg, 8 * cg + 8):
            if weight[s][gi] != g: raise Err(f'wgmma({cg},{g}) by warp {cw}: row group {gi} holds chunk {weight[s][gi]}')
        if act_fenced.get(g, set()) != set(range(NPW)) or load_chunk[g % L] != g:
            raise Err(f'wgmma({cg},{g}) activations not landed/fenced')
        op = ops.setdefault((cg, g), dict(issued=set(), started=False, done=False))
        op['issued'].add(cw)
        if len(op['issued']) == 4:
            op['started'] = True
        # conservative: treat reads as active from the first issue
        elif (cg, g) not in active_reads: active_reads.append((cg, g))

    # programs as generators yielding ('block',) when waiting
    blocked = {}
    def producer(pw):
        for c in range(DIST):
            issue_copies(pw, c); yield
        consumed = 0
        for g in range(C):
            wait_group(pw, DIST - 1); yield
            if bar(pw, PRODUCERS, 128 * P, ('P', g), True):
                blocked[pw] = 1; yield
            if g >= W3:
                while consumed <= g - W3:
                    if bar(pw, EMPTY + consumed % L, THREADS, ('E', consumed), True):
                        blocked[pw] = 1; yield
                    consumed += 1
            for i in range(2 if P == 2 else 4):
                decode(pw, pw + NPW * i, g)
            act_fenced.setdefault(g, set()).add(pw); yield
            bar(pw, FULL + g % W3, THREADS, ('F', g), False); yield
            ahead = g + DIST
            if ahead < C and ahead >= L:
                while consumed <= ahead - L:
                    if bar(pw, EMPTY + consumed % L, THREADS, ('E', consumed), True):
                        blocked[pw] = 1; yield
                    consumed += 1
            issue_copies(pw, ahead); yield
        wait_group(pw, 0)

    def consumer(cw):
        cg = (cw - NPW) >> 2
        mine = []  # issued ops of this warp
        def wait(n):
            while sum(1 for k in mine if not ops[k]['done']) > n:
                blocked[cw] = 'wg'; yield
        for g in range(C):
            if bar(cw, FULL + g % W3, THREADS, ('F', g), True):
                blocked[cw] = 1; yield
            wgmma_issue(cw, cg, g); mine.append((cg, g)); yield
            yield from wait(1)
            d = g - 1
            if d >= 0 and d + W3 < C:
                bar(cw, EMPTY + d % L, THREADS, ('E', d), False); yield
        yield from wait(0)

    agents = {w: producer(w) for w in range(NPW)}
    agents.update({w: consumer(w) for w in range(NPW, NPW + 8)})
    done = set()
    steps = 0
    speed = {w: rnd.choice([0.02, 0.2, 1, 1, 5]) for w in agents}
    cspeed = rnd.choice([0.01, 0.1, 1])
    while len(done) < len(agents):
        steps += 1
        # candidates: unblocked agents, and wgmma completions
        cands = []
        for w, gen in agents.items():
            if w in done: continue
            if w in blocked:
                if blocked[w] == 'wg':
                    cands.append(('run', w))  # re-check wait condition
                continue
            cands.append(('run', w))
        for k, op in ops.items():
            if op['started'] and not op['done'] and (k[1] == 0 or ops[(k[0], k[1] - 1)]['done']): cands.append(('complete', k))
        if not cands: raise Err(f'deadlock; blocked={blocked} bars={ {k:(v["cnt"],v["tags"][:3]) for k,v in bars.items() if v["cnt"]} }')
        wts = [speed[c[1]] if c[0] == 'run' else cspeed for c in cands]
        kind, x = rnd.choices(cands, weights=wts)[0]
        if kind == 'complete':
            ops[x]['done'] = True; active_reads.remove(x); continue
        if blocked.get(x) == 'wg': blocked.pop(x)
        try:
            next(agents[x])
        except StopIteration:
            done.add(x)
    return steps

bad = 0
for L in [4, 6]:
    print("config", L, flush=True)
    for C in list(range(1, 14)) + [17, 20, 45]:
        for seed in range(int(sys.argv[1]) if len(sys.argv) > 1 else 200):
            try:
                simulate(C, L, seed)
            except Err as e:
                print(f'L={L} C={C} seed={seed}: {e}'); bad += 1; break
print('failures', bad, flush=True)
