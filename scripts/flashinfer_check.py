#!/usr/bin/env python3
"""scripts/flashinfer_check.py: the tables scripts/gpu-check-16 prints (issue 16).

  flashinfer_check.py agreement TSV
      TSV: the lines test_flashinfer_path appends with FUSECHECK_AGREEMENT_TSV
      (check, case, tap, phase, max_ulp, share_off, rel_l2; tests/flashinfer/
      agreement_stats.h). Prints, per check, phase and tap, the maxima over all cases
      and the case where rel L2 peaked: the measured numbers each bound cites (the
      CPU self-check's cases, emulated-cpu against itself, left out).
  flashinfer_check.py bench JSON...
      JSON: bench_flashinfer's --benchmark_out (one or more runs). Prints the per-layer table of the three
      paths (us and % of the copy bandwidth) and each path's ops per model and case.
Standard library only; exits 2 with one line on unreadable input.
"""
import collections
import json
import sys


def agreement(paths):
    (path,) = paths
    worst = collections.OrderedDict()
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 7:
                continue
            check, case, tap, phase = parts[:4]
            max_ulp, share, rel = (float(x) for x in parts[4:])
            arch = case.split(" ", 1)[0]
            if arch == "self-check":  # emulated-cpu against itself (the checks' bookkeeping)
                continue
            key = (check, phase, tap)
            w = worst.setdefault(key, {"n": 0, "ulp": 0.0, "share": 0.0, "rel": 0.0, "where": "", "archs": set()})
            w["n"] += 1
            w["archs"].add(arch)
            w["ulp"] = max(w["ulp"], max_ulp)
            w["share"] = max(w["share"], share)
            if rel >= w["rel"]:
                w["rel"], w["where"] = rel, case
    print(f"{'check':10} {'phase':8} {'tap':11} {'cases':>5} {'max ulp':>9} {'max share>1ulp':>14} "
          f"{'max rel L2':>10}  where rel L2 peaked")
    for (check, phase, tap), w in sorted(worst.items()):
        print(f"{check:10} {phase:8} {tap:11} {w['n']:5d} {w['ulp']:9.2f} {w['share']:14.4f} {w['rel']:10.3e}  "
              f"{w['where']}")


def bench(paths):
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    layers = collections.OrderedDict()
    ops = collections.OrderedDict()
    for b in (b for data in runs for b in data.get("benchmarks", [])):
        parts = b["name"].split("/")
        if "error_occurred" in b:
            continue
        if parts[0] == "path" and len(parts) >= 4:
            layers.setdefault((parts[2], parts[3]), {})[parts[1]] = (b.get("us", 0), b.get("pct_copy", 0))
            if parts[1] != "flashinfer-cuda":
                ops.setdefault((parts[1], parts[2], parts[3]), []).extend(
                    (k[3:], v, None) for k, v in b.items() if k.startswith("us:"))
        elif parts[0] == "flashinfer" and len(parts) >= 4:
            ops.setdefault(("flashinfer-cuda", parts[1], parts[2]), []).append(
                (parts[3], b.get("us", 0), b.get("pct_copy", 0)))
    ctx = runs[0].get("context", {}) if runs else {}
    print(f"device {ctx.get('device', '?')}, copy bandwidth {ctx.get('copy_bandwidth_gbs', '?')} GB/s")
    print(f"{'model/case':32} {'flashinfer us (%copy)':>22} {'fused us (%copy)':>20} {'standard us (%copy)':>20}")
    for (m, c), p in layers.items():
        def cell(k):
            return f"{p[k][0]:9.1f} ({p[k][1]:5.1f})" if k in p else "-"
        print(f"{m + '/' + c:32} {cell('flashinfer-cuda'):>22} {cell('fused-cuda'):>20} {cell('standard-cuda'):>20}")
    print()
    print("per op: us (% of copy bandwidth where the op declares its bytes)")
    for (path, m, c), rows in sorted(ops.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        cells = (f"{op} {us:.1f}" + (f" ({pct:.0f}%)" if pct is not None else "") for op, us, pct in rows)
        print(f"{m}/{c} {path}: " + ", ".join(cells))


def main(argv):
    if len(argv) < 3 or argv[1] not in ("agreement", "bench") or (argv[1] == "agreement" and len(argv) != 3):
        print("usage: flashinfer_check.py agreement TSV | bench JSON...", file=sys.stderr)
        return 2
    try:
        (agreement if argv[1] == "agreement" else bench)(argv[2:])
    except (OSError, ValueError, KeyError) as e:
        print(f"flashinfer_check.py: {argv[2]}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
