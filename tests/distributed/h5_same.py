#!/usr/bin/python3
"""tests/distributed/h5_same.py: are two fusecheck results files the same, bit for bit,
in everything that is deterministic?

  h5_same.py A.h5 B.h5 [--skip-attr NAME]... [--skip NAME]...

Walks both trees: the same groups and datasets, every dataset equal byte for byte (NaN
included: the raw bytes are compared), every attribute equal, except the attributes and
the groups or datasets named (at any depth), which hold what differs between two runs:
when and where it ran, how long it took. Prints each difference; exit 0 same, 1 not.
"""
import argparse
import sys

import h5py
import numpy as np


def same_value(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "OSU":
        return a.tolist() == b.tolist()
    return a.tobytes() == b.tobytes()


def compare(a, b, path, skip_attrs, skip_nodes, out):
    for name in sorted(set(a.attrs) | set(b.attrs)):
        if name in skip_attrs:
            continue
        if name not in a.attrs or name not in b.attrs:
            out.append(f"{path}@{name}: only in {'A' if name in a.attrs else 'B'}")
        elif not same_value(a.attrs[name], b.attrs[name]):
            out.append(f"{path}@{name}: {a.attrs[name]!r} vs {b.attrs[name]!r}")
    if isinstance(a, h5py.Dataset) or isinstance(b, h5py.Dataset):
        if not (isinstance(a, h5py.Dataset) and isinstance(b, h5py.Dataset)):
            out.append(f"{path}: a dataset on one side only")
        elif not same_value(a[()], b[()]):
            out.append(f"{path}: data differs")
        return
    for name in sorted(set(a) | set(b)):
        if name in skip_nodes:
            continue
        if name not in a or name not in b:
            out.append(f"{path}/{name}: only in {'A' if name in a else 'B'}")
        else:
            compare(a[name], b[name], f"{path}/{name}", skip_attrs, skip_nodes, out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--skip-attr", action="append", default=[])
    ap.add_argument("--skip", action="append", default=[], help="a group or dataset name")
    args = ap.parse_args()
    out = []
    with h5py.File(args.a, "r") as a, h5py.File(args.b, "r") as b:
        compare(a, b, "", set(args.skip_attr), set(args.skip), out)
    for line in out:
        print(line)
    return 1 if out else 0


if __name__ == "__main__":
    sys.exit(main())
