#!/usr/bin/env python3
# Two `moe bench --json` files row by row: the median of each at every token count both hold, and the change in percent
# (two calls: their machines may differ; the same-call A/B tables, ab_table.py, measure a change).
#   usage: python3 scripts/gpu/bench_compare.py OLD.json NEW.json
import json, sys

old, new = ({row["tokens"]: row for row in json.load(open(path))["rows"]} for path in sys.argv[1:3])
print(f"{'tokens':>7} {'old µs':>10} {'new µs':>10} {'change':>8}")
for tokens in sorted(old.keys() & new.keys()):
    a, b = old[tokens]["median_us"], new[tokens]["median_us"]
    print(f"{tokens:>7} {a:>10.1f} {b:>10.1f} {100 * (b - a) / a:>+7.1f}%")
