#!/usr/bin/python3
"""scripts/gpu_baseline.py: which GPU baseline a nightly result is held against (scripts/nightly).

GPU baselines live per GPU model, results/baselines/cuda/<model folder>/, because a
kernel's speed says nothing across models and cuBLAS picks other kernels (other numerics)
on another model. Two commands, each printing one line or exiting 2 with one line:

  gpu_baseline.py folder RUN.h5
      the model folder name of a run: its device_name attribute, lower case, every run of
      characters other than a-z and 0-9 turned into one '-' ('NVIDIA H100 80GB HBM3' ->
      'nvidia-h100-80gb-hbm3').
  gpu_baseline.py cross-view RUN.h5 BASE.h5 OUT.h5
      writes OUT.h5: RUN.h5 without its /timing group (speed is never compared across GPU
      models) and with BASE.h5's device_name, so that `fusecheck compare OUT.h5 BASE.h5`
      compares divergence and still refuses every other difference (scenario, model,
      shape). The run's own device name is kept in the attribute cross_gpu_device_name.
"""
import re
import shutil
import sys

try:
    import h5py
except ImportError as e:  # Debian's python3-h5py (scripts/setup)
    print(f"scripts/gpu_baseline.py: error: {e}; use /usr/bin/python3", file=sys.stderr)
    sys.exit(2)


def text_attr(f, name, path):
    value = f.attrs.get(name)
    if value is None:
        raise ValueError(f"{path}: no '{name}' attribute (not a fusecheck run file?)")
    return value.decode() if isinstance(value, bytes) else str(value)


def folder_name(device_name):
    return re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")


def cross_view(run, base, out):
    with h5py.File(base, "r") as b:
        base_device = text_attr(b, "device_name", base)
    shutil.copyfile(run, out)
    with h5py.File(out, "r+") as f:
        own = text_attr(f, "device_name", run)
        if "timing" in f:
            del f["timing"]
        f.attrs["device_name"] = base_device
        f.attrs["cross_gpu_device_name"] = own


def main(argv):
    try:
        if len(argv) == 2 and argv[0] == "folder":
            with h5py.File(argv[1], "r") as f:
                print(folder_name(text_attr(f, "device_name", argv[1])))
        elif len(argv) == 4 and argv[0] == "cross-view":
            cross_view(*argv[1:])
        else:
            print("usage: gpu_baseline.py folder RUN.h5 | cross-view RUN.h5 BASE.h5 OUT.h5", file=sys.stderr)
            return 2
    except (OSError, ValueError) as e:
        print(f"scripts/gpu_baseline.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
