#!/usr/bin/env python3
"""Where a run's time went: the /phases table of fusecheck results files
(docs/results-format.md, "/phases/"), one column pair per file, so that runs of the same
scenario (with and without --ref64, before and after a change) read side by side.

Usage: scripts/phases.py LABEL=RUN.h5 [LABEL=RUN.h5 ...]
"""
import sys

import h5py


def read_phases(path):
    """[(name, wall_s, cpu_s)] in the order the phases first ran."""
    with h5py.File(path, "r") as f:
        if "phases" not in f:
            raise SystemExit(f"{path}: no /phases group (written before phases were recorded?)")
        g = f["phases"]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in g["names"][()]]
        return list(zip(names, (float(x) for x in g["wall_s"][()]), (float(x) for x in g["cpu_s"][()])))


def table(runs):
    """Rows of text: every phase of any run, its wall seconds and share of the run's total."""
    order = []
    for _, phases in runs:
        for name, _, _ in phases:
            if name not in order:
                order.append(name)
    head = f"{'phase':44s}" + "".join(f" {label[:18]:>18s} {'share':>6s} {'cpu_s':>7s}" for label, _ in runs)
    rows = [head]
    # The run's own "total" span when it has one (phases nest inside it), else their sum.
    totals = [next((w for n, w, _ in phases if n == "total"), sum(w for _, w, _ in phases)) for _, phases in runs]
    for name in order:
        line = f"{name[:44]:44s}"
        for (_, phases), total in zip(runs, totals):
            hit = [(w, c) for n, w, c in phases if n == name]
            if hit:
                w, c = hit[0]
                share = 100.0 * w / total if total > 0 else 0.0
                line += f" {w:18.3f} {share:5.1f}% {c:7.2f}"
            else:
                line += f" {'-':>18s} {'':6s} {'':7s}"
        rows.append(line)
    return rows


def main(argv):
    if not argv or any("=" not in a for a in argv):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    runs = [(a.split("=", 1)[0], read_phases(a.split("=", 1)[1])) for a in argv]
    print("\n".join(table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
