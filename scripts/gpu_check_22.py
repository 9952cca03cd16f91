#!/usr/bin/env python3
"""scripts/gpu_check_22.py CALIBRATION_JSON SWEEP_DIR: the figure checks of scripts/gpu-check-22.

Reads the report data of `fusecheck calibrate` (calibration.json) over the four rerun sweep
points and their sidecars; prints a table (label now and on the 09:11 sweep, fused KL,
super-weight figure, numel) and one line per check; exit 1 when a check fails. An outcome
that differs from the 09:11 sweep is printed as a finding, not a failure.
"""
import json, os, sys
data = json.load(open(sys.argv[1]))
# Outcomes measured by the GPU sweep of 2026-12-03 09:11 (tree 93502fe, NVIDIA H200).
expected = {"k_norm-max1-s0": 0, "k_norm-max96.5-layers4-s0": 1, "massive-value32-s0": 0, "massive-value2048-s0": 1}
failed = 0
print(f"{'point':28s} {'label':>5s} {'09:11':>5s} {'KL (fused)':>10s} {'super_weight':>13s} {'numel':>9s}")
kl = {p["run"]: p.get("kl_mean") for p in data["paths"] if p["label"] == "fused-cuda"}
sw = {}
for i, r in enumerate(data["runs"]):
    name = os.path.basename(r["file"])[:-3]
    side = json.load(open(os.path.join(sys.argv[2], name + ".check.json")))
    layers = side["read"].get("deep_read", {}).get("layers", [])
    numel = layers[0].get("numel", "absent") if layers else "absent"
    s = r["figures"]["super_weight"]
    sw[name] = s
    mark = "" if expected.get(name) == r["label"] else "  (differs from 09:11: finding)"
    print(f"{name:28s} {r['label']:5d} {expected.get(name, -1):5d} {kl.get(i, float('nan')):10.3f} {s:13.4g} {numel!s:>9s}{mark}")
    if numel == "absent":
        print(f"FAIL {name}: the sidecar has no numel per layer (not this tree's figure)"); failed += 1
checks = [("massive-value2048-s0 figure > 1e5", sw.get("massive-value2048-s0", 0) > 1e5),
          ("massive-value32-s0 figure < massive-value2048-s0's", sw.get("massive-value32-s0", 1e30) < sw.get("massive-value2048-s0", 0)),
          ("k_norm-max1-s0 figure < 20", sw.get("k_norm-max1-s0", 1e30) < 20)]
for text, ok in checks:
    print(("ok   " if ok else "FAIL ") + text)
    failed += 0 if ok else 1
sys.exit(1 if failed else 0)
