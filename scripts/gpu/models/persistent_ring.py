# A single-lane model of gemm_persistent's weight ring (moe_experts.cu) across items: cp.async commit groups, the
# wait_group counts, the look-ahead into the next item and the copies at an item's start of the groups that
# look-ahead skipped (K shorter than S − 1 groups; without them an item read a slot nobody wrote: session 9's
# review). Checks every slot read holds the item and group it should, with no copy pending into it.
#   usage: python3 scripts/gpu/models/persistent_ring.py   (prints "failing configs: 0")
def run(G, S, items):
    ring=[None]*S; pending=[]
    def commit(ops): pending.append(ops)
    def wait(n):
        while len(pending)>n:
            for s,v in pending.pop(0): ring[s]=v
    errs=[]; it=0
    for i in range(S-1): commit([(i,(it,i))] if i<G else [])
    slot=0; first=True
    while True:
        hasNext = it+1<items
        ops=[]
        if not first:
            j=0
            while j < S-1-G and j < G:
                ops.append(((slot+j)%S,(it,j))); j+=1
        first=False
        commit(ops); wait(0)
        for g in range(G):
            wait(S-2)
            ahead=g+S-1; aslot = S-1 if slot==0 else slot-1
            if ahead<G: commit([(aslot,(it,ahead))])
            elif hasNext and ahead-G<G: commit([(aslot,(it+1,ahead-G))])
            else: commit([])
            for grp in pending:
                for s,v in grp:
                    if s==slot: errs.append(('read slot with pending copy',it,g))
            if ring[slot]!=(it,g): errs.append(('wrong data',it,g,ring[slot]))
            slot=(slot+1)%S
        if not hasNext: break
        it+=1
    wait(0)
    return errs
bad=0
for S in (2,3,4,5):
  for G in range(1,9):
    for items in (1,2,3,5,8):
        e=run(G,S,items)
        if e: bad+=1; print('S',S,'G',G,'items',items,e[:3])
print('failing configs:',bad)
