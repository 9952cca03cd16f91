#!/usr/bin/env bash
# On the GPU machine (device tool): unpacks the carried build dependencies (.deps/*.deb,
# Debian bookworm), builds the fused targets, runs the fused tests, the sanitizers on the
# small cases, the benchmark and the HF layer benchmark; logs under $OUT.
# Usage: bash bench/fused/run_device.sh [steps...]   (default: build test bench hf sanitize)
set -uo pipefail
OUT=${OUT:-/tmp/fused-out}
mkdir -p "$OUT"
steps=${*:-build test bench hf sanitize}
export PATH=/usr/local/cuda/bin:$PATH
for f in .deps/*.deb; do dpkg -x "$f" /; done
ldconfig
B=build/gpu
has() { [[ " $steps " == *" $1 "* ]]; }
if has build; then
  cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DFUSECHECK_TESTS=ON \
    -DHDF5_C_INCLUDE_DIR=/usr/include/hdf5/serial \
    -DHDF5_C_LIBRARY_hdf5=/usr/lib/x86_64-linux-gnu/hdf5/serial/libhdf5.so >"$OUT/cmake.log" 2>&1 \
    || { tail -30 "$OUT/cmake.log"; exit 1; }
  timeout 300 cmake --build $B -j16 --target test_fused_kernels test_fused_path bench_fused \
    >"$OUT/build.log" 2>&1 || { grep -E "error|FAILED" -A3 "$OUT/build.log" | head -40; exit 1; }
  echo "== built"
fi
if has test; then
  timeout 120 $B/tests/fused/test_fused_kernels 2>&1 | tee "$OUT/test_kernels.log" | grep -E "^\[  (FAILED|PASSED)|Failure|error|out of tolerance|differ" | head -40
  timeout 120 $B/tests/fused/test_fused_path 2>&1 | tee "$OUT/test_path.log" | grep -E "^\[  (FAILED|PASSED)|Failure|Expected|Which is|share|rel" | head -60
fi
if has bench; then
  timeout 240 $B/bench/fused/bench_fused --benchmark_out="$OUT/bench.json" --benchmark_out_format=json \
    ${BENCH_FILTER:+--benchmark_filter=$BENCH_FILTER} >"$OUT/bench.txt" 2>&1
  grep -E "device|layer|op|gemm" "$OUT/bench.txt" | sed -E 's/ +/ /g' | cut -c1-160
fi
if has hf; then
  PYTHONUNBUFFERED=1 timeout 200 python3 scripts/hf_layer_bench.py --json "$OUT/hf.json" 2>&1 | tee "$OUT/hf.txt" | tail -20
fi
if has sanitize; then
  for tool in memcheck racecheck initcheck; do
    timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 $B/tests/fused/test_fused_kernels \
      --gtest_filter='*Small*' >"$OUT/sanitize_$tool.log" 2>&1
    echo "sanitizer $tool: rc=$? $(grep -E 'ERROR SUMMARY|PASSED|FAILED' "$OUT/sanitize_$tool.log" | tr '\n' ' ' | cut -c1-200)"
  done
fi
