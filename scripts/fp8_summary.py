#!/usr/bin/env python3
"""FP8 KV cache summary of fusecheck results files (issue 17): per path, next-token KL
mean / p99, top-1 agreement and greedy first mismatch (/end_to_end/<label>), and for the
FP8 recipes the clip and flush-to-zero counts and headroom by layer and tap (k_cache.fp8,
v_cache.fp8; fp8-w8a8's <gemm>.weight.fp8 and <gemm>.input.fp8, in
/paths/<label>/recipe_headroom, and over greedy decoding alone in greedy_headroom; the
error against KV age and the scale delivery check where the scenario ran them;
docs/results-format.md).

Usage: scripts/fp8_summary.py RESULTS.h5 [...]   (prints one block per file)
"""
import sys

import h5py
import numpy as np


def text(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def fp8_rows(path_group, group="recipe_headroom"):
    """(layer, point, clips, headroom, flushed) for every FP8 point of a path, layers only;
    group "greedy_headroom" for greedy decoding alone."""
    if group not in path_group:
        return []
    h = path_group[group]
    points = [text(p) for p in h["points"][:]]
    sat, ratio = h["saturation_count"][:], h["ratio"][:]
    # flush_count came later: results files without it count no flushes.
    flushed = h["flush_count"][:] if "flush_count" in h else np.zeros_like(sat)
    rows = []
    for c, name in enumerate(points):
        if not name.endswith(".fp8"):
            continue
        for layer in range(sat.shape[0] - 1):  # the last row is the head
            if np.isnan(ratio[layer, c]):
                continue
            rows.append((layer, name, int(sat[layer, c]), float(ratio[layer, c]), int(flushed[layer, c])))
    return rows


def summarize(file):
    out = []
    with h5py.File(file, "r") as f:
        out.append(f"== {file}")
        e2e = f.get("end_to_end", {})
        for label in sorted(f["paths"].keys()):
            a = e2e[label].attrs if label in e2e else {}
            kl = a.get("kl_mean", float("nan"))
            p99 = a.get("kl_p99", float("nan"))
            top1 = a.get("top1_agreement", float("nan"))
            greedy = a.get("greedy_first_mismatch", "-")
            line = f"{label:40s} KL mean {kl:.3e} p99 {p99:.3e} top-1 {100 * top1:5.1f}% greedy first mismatch {greedy}"
            rows = fp8_rows(f["paths"][label])
            if rows:
                clips = sum(r[2] for r in rows)
                worst = max(rows, key=lambda r: r[3])
                flushes = sum(r[4] for r in rows)
                line += f"; FP8 clips {clips}, flushed to zero {flushes}, worst headroom {worst[3]:.2f} (L{worst[0]} {worst[1]})"
            out.append(line)
            for layer, name, n, ratio, _ in rows:
                if n > 0:
                    out.append(f"    clipped L{layer:<3d} {name:12s} {n:8d} values (max |x/s| / 448 = {ratio:.2f})")
            greedy_rows = fp8_rows(f["paths"][label], "greedy_headroom")
            if greedy_rows:
                worst = max(greedy_rows, key=lambda r: r[3])
                out.append(f"    greedy decoding: FP8 clips {sum(r[2] for r in greedy_rows)}, worst headroom "
                           f"{worst[3]:.2f} (L{worst[0]} {worst[1]})")
                for layer, name, n, ratio, _ in greedy_rows:
                    if n > 0:
                        out.append(f"    greedy clipped L{layer:<3d} {name:12s} {n:8d} values (max |x/s| / 448 = {ratio:.2f})")
            kv = f["paths"][label].get("kv_age")
            if kv is not None:
                ages = [f"{int(a)}" if a == b else f"{int(a)}-{int(b)}" for a, b in zip(kv["age_lo"][:], kv["age_hi"][:])]
                errs = " ".join(f"{a}:{e:.2e}" for a, e in zip(ages, kv["rel_error"][:]))
                out.append(f"    error against KV age ({kv.attrs.get('decode_steps')} steps): {errs}")
            sd = f["paths"][label].get("scale_delivery")
            if sd is not None:
                judged = [(m, e) for m, j, e in zip(sd["multiplier"][:], sd["judged"][:], sd["rel_l2"][:]) if j]
                what = ", ".join(f"x{m:g} against x{sd.attrs.get('reference_multiplier'):g}: {e:.2e}" for m, e in judged)
                out.append(f"    scale delivery: {text(sd.attrs.get('verdict'))}{', ' + what if what else ''} "
                           f"(limit {sd.attrs.get('limit'):.2e}; clipped x1..x8: "
                           f"{' / '.join(str(int(c)) for c in sd['clipped'][:])})")
            for layer, name, _, _, n in sorted(rows, key=lambda r: -r[4])[:3]:
                if n > 0:
                    out.append(f"    flushed L{layer:<3d} {name:16s} {n:8d} values")
    return "\n".join(out)


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for file in argv[1:]:
        print(summarize(file))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
