#!/usr/bin/env python3
"""The fp8kv/ entries of a bench_fused JSON file (--benchmark_out) as a short table: per
model, case and recipe, the fp8-kv layer's time beside the default layer's (same run,
launched alternately), their ratio and the fp8 layer's % of copy bandwidth. Entries that
were not timed (validation failed) say so. Usage: fp8kv_bench_table.py BENCH.json"""
import json
import sys


def rows(doc):
    for b in doc.get("benchmarks", []):
        name = b.get("name", "")
        if not name.startswith("fp8kv/"):
            continue
        # fp8kv/<model>/<case>/layer(graph)/<recipe>[/iterations:60/manual_time]
        parts = name.split("/")
        label = f"{parts[1]} {parts[2]} {parts[4]}"
        if b.get("error_occurred"):
            yield label, None
        else:
            yield label, (b["us"], b["us_default"], b["ratio"], b["pct_copy"])


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        doc = json.load(f)
    print(f"{'model case recipe':48} {'fp8 us':>9} {'default us':>11} {'ratio':>6} {'% copy':>7}")
    for label, v in rows(doc):
        if v is None:
            print(f"{label:48} not timed (validation failed)")
        else:
            print(f"{label:48} {v[0]:9.1f} {v[1]:11.1f} {v[2]:6.2f} {v[3]:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
