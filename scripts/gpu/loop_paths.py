#!/usr/bin/env python3
# The instructions a registered kernel's producer runs for one chunk, path by path: its steady-state loop in SASS, from
# the loop head to the branch back to it, every way through the forward branches (a branch whose guard is a constant
# true/false predicate taken as such; small backward loops, such as the BRA.U.ANY around a uniform copy, run once).
# Session 15's counts of the copies-from-pointers and tensor-copy producers came from it; producer_loop.sh counts the
# lean loop's span, which is its one path.
#   usage: python3 scripts/gpu/loop_paths.py CUBIN KERNEL [ADDRESS=taken|fall ...] [--marker REGEX] [--why]
#          ADDRESS=…: fixes a conditional branch (a uniform condition known for the case counted: the chunk wholly
#          before K, the tile's width, thread 0 or not); --why prints each path's conditional branches (T taken, F not)
#          MARKER: a regex on the loop head's instruction or one just after it (default: the lean producer's copy wait
#          `DEPBAR.LE SB0, 0x1`, or the tensor producer's EMPTY wait `BAR.SYNC.DEFER_BLOCKING R\d+, R\d+`); a consumer
#          loop's head (NVRTC 13.0, registered kernels): 'USHF\.R\.U32\.HI UR\d+, URZ, 0x2, UR4' (it finds the
#          n64 loop; session 16: 208 instructions a chunk for two warpgroups' consumers, 137 for four)
#          --loop N: the loop at the N-th marker (Python index; default −1, the last), for kernels that hold several
#          copies of a loop (the registered kernels' consumer loop a wgmma width; session 31's late-scale resident
#          kernels held a one-row and a general loop, git history at 192f012)
#          --most REGEX: also the shortest path among those running the most instructions that match REGEX, with its
#          opcode counts (session 31: `--most HMMA` gives a resident kernel's four-chunk group with all 16 MMAs, the
#          fast path, beside the partial and slow ones)
#          cuobjdump on PATH (pip's nvidia-cuda-cuobjdump)
import re, sys
from sass_listing import instructions

args = sys.argv[1:]
why = '--why' in args
marker = r'DEPBAR\.LE SB0, 0x1|BAR\.SYNC\.DEFER_BLOCKING R\d+, R\d+'
if '--marker' in args:
    marker = args[args.index('--marker') + 1]
    del args[args.index('--marker'):args.index('--marker') + 2]
marker = re.compile(marker)
loop_index, most = -1, None
if '--loop' in args:
    loop_index = int(args[args.index('--loop') + 1])
    del args[args.index('--loop'):args.index('--loop') + 2]
if '--most' in args:
    most = re.compile(args[args.index('--most') + 1])
    del args[args.index('--most'):args.index('--most') + 2]
cubin, kernel = args[0], args[1]
fixed = {int(a.split('=')[0], 16): a.split('=')[1] == 'taken' for a in args[2:] if '=' in a}
code = instructions(cubin, kernel)  # (address, text)
index = {address: i for i, (address, _) in enumerate(code)}
marks = [i for i, (_, text) in enumerate(code) if marker.search(text)]
if not marks:
    sys.exit(f'{kernel}: no instruction matches {marker.pattern}')
# The loop: the last marker, and the first later backward branch to at or before it.
mark = marks[loop_index]
loop = None
for i in range(mark + 1, len(code)):
    m = re.search(r'BRA(?:\.\S+)? (0x[0-9a-f]+)', code[i][1])
    if m and 'BRA.U.ANY' not in code[i][1] and int(m.group(1), 16) <= code[mark][0]:
        loop = (index[int(m.group(1), 16)], i)
        break
if loop is None:
    sys.exit(f'{kernel}: no branch back to the loop head after {code[mark][1]}')
head, back = loop


def successors(i):
    text = code[i][1]
    m = re.search(r'BRA(?:\.\S+)? (0x[0-9a-f]+)', text)
    if not m or 'BRA.DIV' in text:
        return [i + 1]
    target = index[int(m.group(1), 16)]
    if target <= i:  # a small inner loop (BRA.U.ANY around a uniform copy): once through
        return [i + 1]
    guard = re.match(r'@(!?)(U?P\w+)', text)
    if not guard:
        return [target]
    if guard.group(2) == 'PT':
        return [target] if guard.group(1) == '' else [i + 1]
    if code[i][0] in fixed:
        return [target] if fixed[code[i][0]] else [i + 1]
    return [i + 1, target]


paths = {}  # length -> the conditional branches of one such path
matching = {}  # (instructions matching --most, length) -> the instructions of one such path


def walk(i, steps, seen, decisions):
    if len(paths) > 4096:
        return
    if i == back:
        paths.setdefault(steps + 1, decisions)
        if most:
            taken = seen | {i}
            matching.setdefault((sum(1 for j in taken if most.search(code[j][1])), steps + 1), taken)
        return
    if i > back or i < head or i in seen:
        return  # leaves the loop (its exit), or a cycle
    if re.search(r'\bEXIT\b', code[i][1]) and not code[i][1].startswith('@'):
        return
    following = successors(i)
    for j in following:
        taken = len(following) == 2 and j != i + 1
        step = decisions + ((f'{code[i][0]:#x}' + ('T' if taken else 'F'),) if len(following) == 2 else ())
        walk(j, steps + 1, seen | {i}, step)


sys.setrecursionlimit(100000)
walk(head, 0, frozenset(), ())
filler = sum(1 for _, text in code[head:back + 1] if text.startswith('@!PT'))
print(f'{kernel}: loop {code[head][0]:#x}–{code[back][0]:#x} ({back - head + 1} instructions, {filler} never-executed fillers); '
      f'paths: {", ".join(map(str, sorted(paths)))}')
if why:
    for length in sorted(paths):
        print(f'  {length}: {" ".join(paths[length])}')
if most:
    count, length = max(matching, key=lambda key: (key[0], -key[1]))
    opcodes = {}
    for j in matching[(count, length)]:
        opcode = re.sub(r'^@!?U?P\w+\s+', '', code[j][1]).split()[0].split('.')[0]
        opcodes[opcode] = opcodes.get(opcode, 0) + 1
    mix = ', '.join(f'{op} {n}' for op, n in sorted(opcodes.items(), key=lambda item: (-item[1], item[0])))
    print(f'  most {most.pattern}: {count}, shortest such path {length} instructions ({mix})')
