#!/usr/bin/env python3
"""Depth-weighted q/k figure (issue 22, second round): measure, substitute, compare.

Three steps, each on a copy of a GPU sweep's results (docs/calibration.md):

  weights DIR       measures how much a layer's q/k outlier raises that layer's propagated-error
                    gain (/paths/<fused>/amplification/layer_gain, docs/results-format.md) as a
                    function of the layer's depth, on the DESIGN family `k_norm` only (outliers in
                    every layer, against the same seed's unit-outlier model), and fits
                    w(l) = (l + 1)^-p to it.
  substitute DIR OUT --p P
                    writes OUT/ with every .h5/.yaml/.log linked and every .check.json copied with
                    its `model.qk_depth` component replaced by the depth-weighted figure
                        D_w = exp(sum_l w(l) ln max(A_qk(l), 1) / sum_l w(l))
                    (the per-layer A_qk read from the sidecar itself), so that `fusecheck
                    calibrate OUT` (scripts/sweep --no-run --calibrate --out OUT) fits and
                    validates the scorer with D_w in place of the plain geometric mean D.
  (then compare the two calibrate outputs by hand: docs/calibration.md.)

  lofo DIR WORK --bin FUSECHECK
                    leave-one-family-out of the combined figure with its normalising cuts refitted
                    in every fold too: per design family F, `fusecheck calibrate` with F held out
                    fits the single-source cuts, the combined figure is written with those cuts,
                    and a second calibrate with F held out fits its ramp and scores F's runs;
                    the pooled AUC is over every fold's scores (the plain figure likewise, for
                    comparison). calibrate's own leave-one-family-out of the combined figure
                    reuses cuts fitted on every design family, F included.

Needs h5py and numpy for `weights` only.

Since issue 22's third round, `fusecheck calibrate` recomputes `model.qk_depth` from each
sidecar's per-layer `qk.amplification` components (harness/calibrate/sidecar.cpp), so a
figure substituted there is overwritten: `substitute` and `lofo` need a fusecheck built from
a tree before b9ce095 (the second round used bda6b36).
"""
import argparse
import json
import math
import os
import shutil
import sys

DESIGN_MAXES = ("20", "30", "50", "96.5", "200")  # below 20 the excess gain is within seed noise


def layer_gain(path):
    import h5py
    with h5py.File(path, "r") as f:
        paths = [k for k in f["paths"] if "fused" in k]
        if len(paths) != 1:
            raise SystemExit(f"{path}: expected one fused path, found {paths}")
        return list(f[f"paths/{paths[0]}/amplification/layer_gain"][:])


def qk_per_layer(sidecar):
    with open(sidecar) as f:
        layers = json.load(f)["layers"]
    return [L.get("qk_amplification") for L in layers]


def measure(directory):
    """Per layer l >= 1: mean over the k_norm-all design runs of
    (ln gain_out(l) - ln gain_unit(l)) / (ln A_out(l) - ln A_unit(l))."""
    import numpy as np
    ratios = []
    for seed in (0, 1):
        unit = os.path.join(directory, f"k_norm-max1-s{seed}")
        if not os.path.exists(unit + ".h5"):
            continue
        g0, a0 = np.array(layer_gain(unit + ".h5")), np.array(qk_per_layer(unit + ".check.json"))
        for m in DESIGN_MAXES:
            run = os.path.join(directory, f"k_norm-max{m}-layersall-s{seed}")
            if not os.path.exists(run + ".h5"):
                continue  # a partial sweep (scripts/gpu-check-22c runs a few points)
            g, a = np.array(layer_gain(run + ".h5")), np.array(qk_per_layer(run + ".check.json"))
            ratios.append((np.log(g) - np.log(g0))[1:] / (np.log(a) - np.log(a0))[1:])
    if not ratios:
        raise SystemExit(f"{directory}: no k_norm-max1 / k_norm-max<M>-layersall pair of one seed")
    r = np.mean(ratios, axis=0)
    layers = np.arange(1, len(r) + 1)
    keep = r > 0
    # Least squares of ln r = c - p ln(l + 1): a power law in depth, the layer's added error
    # against the residual stream it joins.
    A = np.vstack([np.ones(keep.sum()), -np.log(layers[keep] + 1)]).T
    c, p = np.linalg.lstsq(A, np.log(r[keep]), rcond=None)[0]
    return layers, r, c, p


def depth_weighted(qk, p, first_measured=0):
    """Layers before `first_measured` take its weight: layer 0's gain is 1 by definition
    (nothing propagated into it), so the fit says nothing there."""
    num = den = 0.0
    for l, a in enumerate(qk):
        if a is None:
            continue
        w = (max(l, first_measured) + 1) ** -p
        num += w * math.log(max(a, 1.0))
        den += w
    return math.exp(num / den) if den > 0 else 1.0


def largest(doc, names, absent=1.0):
    """The largest value of these components; `absent` (unit weights) when the model has none."""
    return max((c["value"] for c in doc["components"] if c["name"] in names), default=absent)


SOURCES = {  # per-source figure: the components it is the largest of, and its sidecar ramp
    "qk": (("model.qk_depth",), "qk_depth_amplification"),
    "final": (("final_norm.gain",), "final_norm_gain"),
    "hidden": (("attn_norm.gain", "mlp_norm.gain"), "hidden_norm_gain"),
}


def combined(doc, unit, cuts):
    """`unit`: the unit-outlier model's sidecar, or None for unit weights (every figure 1)."""
    """Independent sources add in the logits: each source's excess over the unit-outlier model,
    as a fraction of its own fitted fail cut's excess, added in quadrature, mapped back onto the
    q/k depth figure's scale (equal to it when only the q/k source is above unit)."""
    total = 0.0
    for names, ramp in SOURCES.values():
        v0 = largest(unit, names) if unit else 1.0
        fail = cuts.get(ramp, cuts["hidden_norm_gain"])["fail"]  # no final ramp: scored as a hidden norm
        total += max(0.0, (largest(doc, names) - v0) / (fail - v0)) ** 2
    d0 = largest(unit, ("model.qk_depth",)) if unit else 1.0
    fail_d = cuts["qk_depth_amplification"]["fail"]
    return d0 + math.sqrt(total) * (fail_d - d0)


def substitute(directory, out, p, combine_with=None, unit_weights=False, first_measured=0):
    os.makedirs(out, exist_ok=True)
    unit = cuts = None
    if combine_with and not unit_weights:
        with open(os.path.join(directory, "k_norm-max1-s0.check.json")) as f:
            unit = json.load(f)
    if combine_with:
        with open(combine_with) as f:
            cuts = json.load(f)["fusecheck"]
    changed = 0
    for name in sorted(os.listdir(directory)):
        src = os.path.join(directory, name)
        dst = os.path.join(out, name)
        if name.endswith(".check.json"):
            with open(src) as f:
                doc = json.load(f)
            if cuts:
                figure = combined(doc, unit, cuts)
            else:
                figure = depth_weighted([L.get("qk_amplification") for L in doc["layers"]], p, first_measured)
            for comp in doc["components"]:
                if comp["name"] == "model.qk_depth":
                    comp["value"] = figure
                    changed += 1
            with open(dst, "w") as f:
                json.dump(doc, f)
        elif name in ("sweep.json",):
            shutil.copy(src, dst)
        elif name.endswith((".h5", ".yaml", ".log")) and not os.path.exists(dst):
            os.symlink(os.path.abspath(src), dst)
    what = f"the combined figure ({combine_with}, excess over {'unit weights' if unit_weights else 'the unit-outlier model'})" if combine_with else f"the depth-weighted figure (p = {p:.3f})"
    print(f"{changed} sidecars: model.qk_depth replaced by {what}")


RULE = ["--kl-limit", "0.1", "--margin-floor", "1.0", "--top1-min", "0.95"]  # the gpu size's rule


def calibrate(binary, directory, held_out, out):
    import subprocess
    flags = [f for family in held_out for f in ("--held-out-family", family)]
    report = os.path.join(directory, "calibration.html")  # its data lands beside it, as .json
    subprocess.run([binary, "calibrate", directory, "--out", out, "--report", report, "--bootstrap", "200"]
                   + RULE + flags, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(directory, "calibration.json")) as f:
        return json.load(f)["runs"]


def auc(scored):
    """P(score of a divergent run < score of a healthy one), ties half: lower score = worse."""
    pos = [s for s, y in scored if y]
    neg = [s for s, y in scored if not y]
    wins = sum((p < n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg)) if pos and neg else float("nan")


def lofo(directory, work, binary):
    with open(os.path.join(directory, "sweep.json")) as f:
        manifest = json.load(f)
    held_out = manifest["held_out_families"]
    design = sorted({p["family"] for p in manifest["points"]} - set(held_out))
    plain_dir = os.path.join(work, "plain")
    substitute_links(directory, plain_dir)
    pooled = {"plain": [], "combined": []}
    for family in design:
        cuts = os.path.join(work, f"cuts-without-{family}.json")
        runs = calibrate(binary, plain_dir, held_out + [family], cuts)
        fold = {"plain": [(r["fitted_score"], r["label"]) for r in runs if r["family"] == family]}
        combined_dir = os.path.join(work, f"combined-without-{family}")
        substitute(directory, combined_dir, None, cuts)
        runs = calibrate(binary, combined_dir, held_out + [family], os.path.join(work, f"fit-{family}.json"))
        fold["combined"] = [(r["fitted_score"], r["label"]) for r in runs if r["family"] == family]
        for k, v in fold.items():
            pooled[k] += v
        print(f"  {family:12s} runs {len(fold['plain']):3d} div {sum(y for _, y in fold['plain']):3d}"
              f"  plain {auc(fold['plain']):.3f}  combined {auc(fold['combined']):.3f}", flush=True)
    print(f"  {'pooled':12s} runs {len(pooled['plain']):3d} div {sum(y for _, y in pooled['plain']):3d}"
          f"  plain {auc(pooled['plain']):.3f}  combined {auc(pooled['combined']):.3f}")


def substitute_links(directory, out):
    """OUT/ holding DIR's results unchanged (links), so calibrate's outputs land in OUT."""
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith((".h5", ".yaml", ".log", ".check.json")) or name == "sweep.json":
            dst = os.path.join(out, name)
            if not os.path.exists(dst):
                os.symlink(os.path.abspath(os.path.join(directory, name)), dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("weights")
    w.add_argument("dir")
    s = sub.add_parser("substitute")
    s.add_argument("dir")
    s.add_argument("out")
    s.add_argument("--p", type=float, help="depth weights w(l) = (l + 1)^-p")
    s.add_argument("--layer0-as-layer1", action="store_true",
                   help="with --p: layer 0 takes layer 1's weight (its gain is not measurable)")
    s.add_argument("--combine", metavar="THRESHOLDS",
                   help="instead: the combined figure, with the fail cuts of this (design-fitted) file")
    s.add_argument("--unit-weights", action="store_true",
                   help="with --combine: excess over unit weights (1) instead of over the unit-outlier model")
    lo = sub.add_parser("lofo")
    lo.add_argument("dir")
    lo.add_argument("work")
    lo.add_argument("--bin", required=True, help="the fusecheck binary")
    args = ap.parse_args()
    if args.cmd == "lofo":
        lofo(args.dir, args.work, args.bin)
        return 0
    if args.cmd == "weights":
        layers, r, c, p = measure(args.dir)
        print("layer  excess ln gain per unit excess ln A_qk (k_norm, outliers in every layer)")
        for l, v in zip(layers, r):
            print(f"{l:5d}  {v:7.3f}   fit {math.exp(c) * (l + 1) ** -p:7.3f}")
        print(f"fit: w(l) = {math.exp(c):.3f} (l + 1)^-{p:.3f}")
    else:
        if (args.p is None) == (args.combine is None):
            raise SystemExit("substitute: give exactly one of --p and --combine")
        substitute(args.dir, args.out, args.p, args.combine, args.unit_weights, 1 if args.layer0_as_layer1 else 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
