#!/usr/bin/env python3
"""Each fused op's cost inside the layer, from a bench_fused JSON file.

bench_fused times the whole layer (`layer(graph)`) and its suffixes (`from<k>`: the layer
from op k on). from<k> - from<k+1> is op k's cost inside the layer, overlap with the next
op (PDL) included and with the previous replay's last op, not op k's weights, in L2; an op
timed alone instead re-reads weights that fit in L2 from L2.

Usage: bench/fused/layer_breakdown.py BENCH_JSON [LABEL]
Prints, per model and case: the layer time, its % of the copy bandwidth and each op's cost.
"""
import json
import re
import sys


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    label = sys.argv[2] if len(sys.argv) > 2 else ""
    with open(sys.argv[1]) as f:
        data = json.load(f)
    times, pct, names, order = {}, {}, {}, []
    for b in data.get("benchmarks", []):
        if b.get("error_occurred") or b.get("run_type") == "aggregate":
            continue
        m = re.match(r"fused/([^/]+)/([^/]+)/([^/]+)", b["name"])
        if not m:
            continue
        key, part = (m.group(1), m.group(2)), m.group(3)
        if key not in order:
            order.append(key)
        times[key, part] = b["real_time"]
        pct[key, part] = b.get("pct_copy", 0.0)
        if part.startswith("op"):
            names[key, int(part[2:])] = b.get("label", part)
    for key in order:
        if (key, "layer(graph)") not in times:
            continue
        t = [times[key, "layer(graph)"]]
        while (key, f"from{len(t)}") in times:
            t.append(times[key, f"from{len(t)}"])
        t.append(0.0)
        ops = []
        for k in range(len(t) - 1):
            ops.append(f"{names.get((key, k), f'op{k}')} {t[k] - t[k + 1]:.1f}")
        head = f"{label} " if label else ""
        print(f"{head}{key[0]} {key[1]}: layer {t[0]:.1f} us ({pct[key, 'layer(graph)']:.1f}% copy); "
              + "; ".join(ops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
