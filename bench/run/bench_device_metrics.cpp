// bench_device_metrics: the wall time of one device-route metrics call (issue 18,
// kernels/metrics/device_metrics.h) as `fusecheck run` makes it, host launch and
// synchronization included: device_tap_totals over a layer tap and a logits tap (FP32
// reference against its bf16 rounding plus seeded noise, the FP64 truth optional), and
// device_next_token_rows over prefill-512 logits at Qwen3-0.6B's vocabulary. Per call
// figures are what a run pays per cell (about 1,500 cells in the nightly Qwen3-0.6B
// scenario). Inputs: seeded uniform values, never zeros.
#include <cstdio>
#include <memory>
#include <string>

#include <benchmark/benchmark.h>

#include "kernels/common/device_buffer.h"
#include "kernels/common/random_fill.h"
#include "kernels/common/stream.h"
#include "kernels/metrics/device_metrics.h"

namespace cu = fusecheck::cuda;

namespace {

constexpr std::uint64_t kSeed = 18;  // logged below

struct Taps {
  cu::DeviceBuffer<float> ref, noise;
  cu::DeviceBuffer<double> truth;
  cu::DeviceBuffer<__nv_bfloat16> path;
  std::int64_t rows, cols;
  // correlated: the path is the reference rounded once to bf16 (ULP distances of 0, as a
  // close path's mostly are); else an unrelated seeded tensor (distances spread widely).
  Taps(std::int64_t r, std::int64_t c, cudaStream_t s, bool correlated = false)
      : ref(static_cast<std::size_t>(r * c)), noise(static_cast<std::size_t>(r * c)),
        truth(static_cast<std::size_t>(r * c)), path(static_cast<std::size_t>(r * c)), rows(r), cols(c) {
    const auto n = static_cast<std::size_t>(r * c);
    cu::fill_uniform(ref.data(), n, kSeed, -4.0f, 4.0f, s);
    cu::fill_uniform(noise.data(), n, kSeed + 1, -4.01f, 4.01f, s);
    const cu::DevTensor r32{ref.data(), cu::kDevF32, r, c, c};
    cu::convert_rows(r32, cu::kDevF64, truth.data(), s);
    // The path: the noisy copy rounded once to bf16 (a path's typical ULP spread).
    const cu::DevTensor n32{correlated ? ref.data() : noise.data(), cu::kDevF32, r, c, c};
    cu::convert_rows(n32, cu::kDevBF16, path.data(), s);
    CUDA_CHECK(cudaStreamSynchronize(s));
  }
  cu::DevTensor ref_t() const { return {ref.data(), cu::kDevF32, rows, cols, cols}; }
  cu::DevTensor path_t() const { return {path.data(), cu::kDevBF16, rows, cols, cols}; }
  cu::DevTensor truth_t() const { return {truth.data(), cu::kDevF64, rows, cols, cols}; }
};

void BM_tap_totals(benchmark::State& state) {
  const std::int64_t rows = state.range(0), cols = state.range(1);
  const bool with_truth = state.range(2) != 0, correlated = state.range(3) != 0;
  cu::Stream s;
  Taps t(rows, cols, s, correlated);
  const cu::DevTensor truth = t.truth_t();
  auto out = std::make_unique<cu::DevTapTotals>();
  for (auto _ : state) {
    cu::device_tap_totals(t.ref_t(), t.path_t(), with_truth ? &truth : nullptr, cu::kDevBF16, 3.3895313892515355e38,
                          1e-2, 1e-2, *out, s);
    benchmark::DoNotOptimize(out->diff_sq);
  }
  // Where the device time goes, from events between the stages (separate calls).
  cu::DevTotalsProfile sum{}, p{};
  constexpr int kProfiled = 20;
  for (int i = 0; i < kProfiled; ++i) {
    cu::device_tap_totals(t.ref_t(), t.path_t(), with_truth ? &truth : nullptr, cu::kDevBF16, 3.3895313892515355e38,
                          1e-2, 1e-2, *out, s, &p);
    sum.memset_ms += p.memset_ms, sum.ref_sq_ms += p.ref_sq_ms, sum.totals_ms += p.totals_ms;
    sum.add_ms += p.add_ms, sum.copy_ms += p.copy_ms;
  }
  state.counters["elements"] = static_cast<double>(rows * cols);
  state.counters["memset_us"] = 1e3 * sum.memset_ms / kProfiled;
  state.counters["pass1_us"] = 1e3 * sum.ref_sq_ms / kProfiled;
  state.counters["pass2_us"] = 1e3 * sum.totals_ms / kProfiled;
  state.counters["add_us"] = 1e3 * sum.add_ms / kProfiled;
  state.counters["copy_us"] = 1e3 * sum.copy_ms / kProfiled;
}
BENCHMARK(BM_tap_totals)
    ->ArgNames({"rows", "cols", "truth", "close"})
    ->Args({1, 1024, 0, 0})        // decode b1 layer tap
    ->Args({8, 1024, 0, 0})
    ->Args({64, 1024, 0, 0})
    ->Args({512, 1024, 0, 0})      // prefill 512, hidden
    ->Args({512, 1024, 0, 1})      // the same, a close path (ULP distances 0)
    ->Args({512, 128, 0, 0})       // few elements per row
    ->Args({512, 3072, 0, 0})      // prefill 512, act
    ->Args({512, 3072, 1, 0})      // with the FP64 truth
    ->Args({512, 151936, 0, 0})    // prefill 512 logits
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

void BM_next_token(benchmark::State& state) {
  const std::int64_t rows = state.range(0), cols = state.range(1);
  cu::Stream s;
  Taps t(rows, cols, s);
  std::vector<double> kl(static_cast<std::size_t>(rows)), margin(static_cast<std::size_t>(rows));
  std::vector<int> match(static_cast<std::size_t>(rows));
  for (auto _ : state) {
    cu::device_next_token_rows(t.ref_t(), t.path_t(), kl.data(), margin.data(), match.data(), s);
    benchmark::DoNotOptimize(kl[0]);
  }
  state.counters["elements"] = static_cast<double>(rows * cols);
}
BENCHMARK(BM_next_token)->ArgNames({"rows", "cols"})->Args({512, 151936})->Args({1, 151936})->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("bench_device_metrics: skipped, no CUDA device\n");
    return 0;
  }
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
  std::printf("bench_device_metrics on %s (sm_%d%d), seed %llu\n", p.name, p.major, p.minor,
              static_cast<unsigned long long>(kSeed));
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("device", p.name);
  benchmark::AddCustomContext("seed", std::to_string(kSeed));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
