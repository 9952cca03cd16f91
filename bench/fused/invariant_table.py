#!/usr/bin/env python3
"""The batch-invariant mode's cost per case, from a bench_fused JSON file.

bench_fused's `invariant/<model>/<case>/layer(graph)[/<plan>]` entries time the
batch-invariant layer (fused-cuda:batch-invariant) and the default one alternately in the
same process: counters `us` (invariant), `us_default` and `ratio` (invariant / default).
The issue's target (issue 20): ratio <= 1.10 at decode b1, b8, b64 over KV 1024 and at
prefill 512, for the default plan (no /<plan> suffix).

Usage: bench/fused/invariant_table.py BENCH_JSON
Prints one row per entry and, last, how many target cases meet the target. Exits 1 when
a default-plan entry failed (not validated, not timed) or no entry is found; a variant
that cannot run is listed as "not run"; a missed target is a measurement, not a failure.
"""
import json
import re
import sys

TARGET = 1.10


def rows(data):
    """(model, case, plan, us_default, us, ratio, error) for each invariant entry."""
    out = []
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate":
            continue
        # Google Benchmark appends its run settings ("/iterations:60/manual_time"): not a plan.
        name = re.sub(r"(/(iterations|repeats|min_time|manual_time|real_time)(:[^/]*)?)+$", "", b["name"])
        m = re.match(r"invariant/([^/]+)/([^/]+)/layer\(graph\)(?:/(.+))?$", name)
        if not m:
            continue
        model, case, plan = m.group(1), m.group(2), m.group(3) or "default"
        if b.get("error_occurred"):
            out.append((model, case, plan, None, None, None, b.get("error_message", "error")))
        else:
            out.append((model, case, plan, b["us_default"], b["us"], b["ratio"], ""))
    return out


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1]) as f:
            table = rows(json.load(f))
    except (OSError, ValueError) as e:
        print(f"invariant_table: cannot read {sys.argv[1]}: {e}")
        return 1
    if not table:
        print("no invariant/ entries in", sys.argv[1])
        return 1
    print(f"{'model':<11} {'case':<18} {'plan':<14} {'default us':>10} {'invariant us':>12} {'ratio':>6}")
    met, targets, failed = 0, 0, 0
    for model, case, plan, us_default, us, ratio, error in table:
        if error:
            # A variant whose algorithm, chosen at its row count, cannot run at another
            # (cublasLtMatmulAlgoCheck) is a finding about that variant; the default plan
            # failing is a failure.
            failed += plan == "default"
            print(f"{model:<11} {case:<18} {plan:<14} {'FAILED' if plan == 'default' else 'not run'}: {error}")
            continue
        mark = ""
        if plan == "default":
            targets += 1
            met += ratio <= TARGET
            mark = "" if ratio <= TARGET else "  > target"
        print(f"{model:<11} {case:<18} {plan:<14} {us_default:10.1f} {us:12.1f} {ratio:6.3f}{mark}")
    print(f"batch-invariant cost: {met} of {targets} target cases within {TARGET:.2f}x of the default mode"
          + (f"; {failed} entries FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
