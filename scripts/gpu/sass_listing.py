# The SASS listing helpers the scripts here share: a kernel's instructions as (address, text) pairs, from a cubin
# (cuobjdump on PATH: pip's nvidia-cuda-cuobjdump) or from `cuobjdump -sass` output, an instruction's opcode, and an
# `ncusrc` step's per-instruction CSV (ncu --page source --csv --print-source sass).
import csv, io, lzma, re, subprocess


def parse(lines):
    """(address, text) for every instruction line of a `cuobjdump -sass` listing."""
    code = []
    for line in lines:
        m = re.search(r'/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;', line)
        if m:
            code.append((int(m.group(1), 16), m.group(2).strip()))
    return code


def instructions(cubin, kernel):
    """`kernel`'s instructions in `cubin`."""
    sass = subprocess.run(['cuobjdump', '-sass', '-fun', kernel, cubin], capture_output=True, text=True, check=True).stdout
    return parse(sass.splitlines())


def opcode(text):
    """The opcode without its predicate and modifiers: `@!P1 BRA 0x…` → BRA, `HGMMA.64x64x16.F32.BF16 …` → HGMMA."""
    words = text.split()
    word = words[1] if words[0].startswith('@') else words[0]
    return word.split('.')[0]


def source_counters(path):
    """An `ncusrc` CSV (`.xz` read as is): the kernel's name, the column header and the instruction rows."""
    text = lzma.open(path, "rt").read() if path.endswith(".xz") else open(path, newline="").read()
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0][1], rows[1], rows[2:]
