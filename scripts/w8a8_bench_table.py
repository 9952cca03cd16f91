#!/usr/bin/env python3
"""One line per bench_w8a8 entry (its Google Benchmark JSON): the fp8 pipeline's time and
parts, the bf16 GEMM, the speedup, % of copy bandwidth (decode) or TFLOP/s against the FP8
ceiling (prefill), and the outer-vector scaled variant. Used by scripts/gpu-check-17w."""
import json
import sys


def line(b):
    if b.get("error_occurred"):
        return f"{b['name']}: ERROR {b.get('error_message', '')}"
    g = lambda k: b.get(k, float("nan"))
    name = f"{b['name']:40s}"
    if "ceiling" in b["name"]:
        return f"{name} {g('us'):9.1f} us {g('TFLOP/s'):7.1f} TFLOP/s"
    outer = f"outer {g('us_outer'):8.1f} us" if g("us_outer") > 0 else "outer n/a"
    if "prefill" in b["name"]:
        return (f"{name} fp8 {g('us'):8.1f} us {g('TFLOP/s'):5.0f} TF/s ({g('pct_ceiling'):3.0f}% of ceiling; "
                f"GEMM alone {g('TFLOP/s_gemm'):4.0f})  bf16 {g('us_bf16'):8.1f} us {g('TFLOP/s_bf16'):4.0f} TF/s  "
                f"x{g('speedup'):.2f}  {outer}")
    return (f"{name} fp8 {g('us'):7.1f} us {g('pct_copy'):3.0f}% copy (quant {g('us_quant'):4.1f} gemm "
            f"{g('us_gemm'):6.1f} epi {g('us_epilogue'):4.1f})  bf16 {g('us_bf16'):7.1f} us "
            f"{g('pct_copy_bf16'):3.0f}% copy  x{g('speedup'):.2f}  {outer}")


def main(path):
    with open(path) as f:
        for b in json.load(f)["benchmarks"]:
            print(line(b))


if __name__ == "__main__":
    main(sys.argv[1])
