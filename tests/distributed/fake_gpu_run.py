#!/usr/bin/python3
"""tests/distributed/fake_gpu_run.py: a GPU run file for the nightly's baseline tests,
made on a machine with no GPU from a committed GPU baseline.

  fake_gpu_run.py BASE.h5 OUT.h5 DEVICE_NAME [--slower F] [--worse F]

Copies BASE.h5 with device_name DEVICE_NAME (another GPU model), every timing (median,
p10, p90) times F (a slower GPU or kernel), and fused-cuda's isolated rel_l2 times F
(more divergence).
"""
import argparse
import shutil

import h5py


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("out")
    ap.add_argument("device_name")
    ap.add_argument("--slower", type=float, default=1.0)
    ap.add_argument("--worse", type=float, default=1.0)
    a = ap.parse_args()
    shutil.copyfile(a.base, a.out)
    with h5py.File(a.out, "r+") as f:
        f.attrs["device_name"] = a.device_name
        for path in f["timing"]:
            for key in ("op_median_ms", "op_p10_ms", "op_p90_ms", "layer_ms"):
                if key in f["timing"][path]:
                    f["timing"][path][key][...] *= a.slower
        f["paths/fused-cuda/isolated/rel_l2"][...] *= a.worse


if __name__ == "__main__":
    main()
