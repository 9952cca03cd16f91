#!/usr/bin/env python3
"""Bitwise comparison of fusecheck run files: a refactor that must not change any result.

  scripts/h5_bitwise.py BEFORE_DIR AFTER_DIR [--paths LABEL,LABEL...]

For every BEFORE_DIR/*.h5 that AFTER_DIR also holds, compares every dataset byte for byte
(NaN payloads included), except wall-clock measurements (/timing, /phases), which differ on
every run. Datasets are grouped by the path they belong to: /paths/<label> and
/end_to_end/<label> under that label, the rest (reference noise floor, tokens, static check,
cross-check, reference greedy tokens, dumps) under "reference". Attributes are provenance
(date, host, argv) and are not compared. --paths keeps only those paths (a label, or a
path name whatever its recipe) and the "reference" group, which every path's metrics
depend on; each of them must be found, as a path or as the reference, in at least one
scenario. Prints one line per scenario and path; exits 0 when identical, 1 on any
difference, missing file or path found nowhere, 2 on bad usage."""

import argparse
import pathlib
import sys

import h5py
import numpy as np

SKIPPED_TOP = {"timing", "phases"}  # wall-clock measurements


def owner(name: str) -> str:
    parts = name.split("/")
    if parts[0] in ("paths", "end_to_end") and len(parts) > 2:
        return parts[1]
    if parts[0] == "perturb":
        return "perturb"
    return "reference"


def datasets(f: h5py.File) -> dict:
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and name.split("/")[0] not in SKIPPED_TOP:
            out[name] = obj

    f.visititems(visit)
    return out


def kept(label: str, keep: set) -> bool:
    return not keep or label in keep or label.split(":")[0] in keep


def compare_file(before: pathlib.Path, after: pathlib.Path, keep: set, seen: set) -> dict:
    """Per owner: (datasets compared, list of differences). Adds the requested paths the
    file holds (as a path or as its reference) to `seen`."""
    result = {}
    with h5py.File(before, "r") as fb, h5py.File(after, "r") as fa:
        reference = fb["reference"].attrs.get("name", b"") if "reference" in fb else b""
        reference = reference.decode() if isinstance(reference, bytes) else str(reference)
        seen.update(k for k in keep if kept(reference, {k}))
        db, da = datasets(fb), datasets(fa)
        for name in sorted(set(db) | set(da)):
            who = owner(name)
            if who not in ("reference", "perturb"):
                if not kept(who, keep):
                    continue
                seen.update(k for k in keep if kept(who, {k}))
            count, diffs = result.setdefault(who, [0, []])
            result[who][0] = count + 1
            if name not in da:
                diffs.append(f"{name}: missing after")
                continue
            if name not in db:
                diffs.append(f"{name}: new after")
                continue
            b, a = db[name][()], da[name][()]
            b, a = np.asarray(b), np.asarray(a)
            if b.dtype != a.dtype or b.shape != a.shape:
                diffs.append(f"{name}: {b.dtype}{b.shape} -> {a.dtype}{a.shape}")
            elif b.tobytes() != a.tobytes():
                bv = np.ascontiguousarray(b).reshape(-1).view(np.uint8).reshape(b.size, -1)
                av = np.ascontiguousarray(a).reshape(-1).view(np.uint8).reshape(a.size, -1)
                n = int(np.any(bv != av, axis=1).sum())
                diffs.append(f"{name}: {n} of {b.size} values differ")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=pathlib.Path)
    ap.add_argument("after", type=pathlib.Path)
    ap.add_argument("--paths", default="", help="comma-separated path labels to compare (default: all)")
    args = ap.parse_args()
    keep = {p for p in args.paths.split(",") if p}
    files = sorted(p for p in args.before.glob("*.h5") if p.name != "merged.h5")
    if not files:
        print(f"h5_bitwise: no *.h5 in {args.before}", file=sys.stderr)
        return 2
    bad = 0
    seen = set()
    for before in files:
        scenario = before.stem
        after = args.after / before.name
        if not after.is_file():
            print(f"{scenario}: MISSING {after}")
            bad += 1
            continue
        per_owner = compare_file(before, after, keep, seen)
        for who, (count, diffs) in sorted(per_owner.items()):
            if diffs:
                bad += 1
                print(f"{scenario} {who}: DIFFERS in {len(diffs)} of {count} datasets")
                for d in diffs[:8]:
                    print(f"    {d}")
            else:
                print(f"{scenario} {who}: identical ({count} datasets)")
    for label in sorted(keep - seen):
        print(f"{label}: ABSENT from every scenario (neither a path nor the reference)")
        bad += 1
    print(f"h5_bitwise: {len(files)} scenarios, {'all identical' if bad == 0 else f'{bad} differences'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
