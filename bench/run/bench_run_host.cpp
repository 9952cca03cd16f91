// The host work of `fusecheck run` at the nightly Qwen3-0.6B prefill-512 scenario's sizes
// (hidden 1024, intermediate 3072, vocab 151936, 512 tokens): compute_metrics on a layer
// tap and on a slice of the logits, next-token agreement on a logits slice, each beside
// the code it replaced (tests/run/metrics_before.h) in the same process, so that the
// ratio is measured on the same data, machine and load. Every pair is checked equal
// before it is timed (STYLE.md 6). Element counts are reported as items (items/s).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include "harness/core/dtype.h"
#include "harness/run/metrics.h"
#include "tests/run/metrics_before.h"

namespace fusecheck::run {
namespace {

constexpr int kTokens = 512;
constexpr int kIntermediate = 3072;
constexpr int kVocab = 151936;
constexpr int kLogitsRows = 32;  // a slice: the whole [512 x vocab] pair is 1.2 GB of doubles

// A float-exact reference (ref32's values) and a path that is the reference rounded to
// bf16 plus a relative error of about 2^-9 (a bf16 path's), seeded.
struct TapPair {
  TapMatrix ref, path;
};
TapPair make_pair(int rows, int cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  TapPair p{TapMatrix(rows, cols), TapMatrix(rows, cols)};
  for (Eigen::Index i = 0; i < p.ref.size(); ++i) {
    const double r = static_cast<float>(normal(rng) * 2.0);
    p.ref.data()[i] = r;
    p.path.data()[i] = bf16_to_float(double_to_bf16(r * (1.0 + std::ldexp(normal(rng), -9))));
  }
  return p;
}

const TapPair& layer_tap() {
  static const TapPair p = make_pair(kTokens, kIntermediate, 1);
  return p;
}
const TapPair& logits_slice() {
  static const TapPair p = make_pair(kLogitsRows, kVocab, 2);
  return p;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Refuses to time a compute_metrics that differs from the code it replaced.
void check_metrics(const TapPair& p) {
  const Tolerance tol = default_tolerance(DType::BF16);
  const TapMetrics now = compute_metrics(p.ref, p.path, DType::BF16, tol);
  const TapMetrics old = before::compute_metrics(p.ref, p.path, DType::BF16, tol);
  for (const auto& f : kMetricFields) {
    if (!same_bits(now.*(f.member), old.*(f.member))) {
      std::fprintf(stderr, "compute_metrics differs from before at %s\n", std::string(f.name).c_str());
      std::abort();
    }
  }
}

void time_metrics(benchmark::State& state, const TapPair& (*data)(), bool old_code) {
  const TapPair& p = data();
  check_metrics(p);
  const Tolerance tol = default_tolerance(DType::BF16);
  for (auto _ : state) {
    TapMetrics m = old_code ? before::compute_metrics(p.ref, p.path, DType::BF16, tol)
                           : compute_metrics(p.ref, p.path, DType::BF16, tol);
    benchmark::DoNotOptimize(m);
  }
  state.SetItemsProcessed(state.iterations() * p.ref.size());
  state.SetBytesProcessed(state.iterations() * p.ref.size() * 2 * static_cast<std::int64_t>(sizeof(double)));
}
void BM_compute_metrics_before(benchmark::State& state, const TapPair& (*data)()) { time_metrics(state, data, true); }
void BM_compute_metrics(benchmark::State& state, const TapPair& (*data)()) { time_metrics(state, data, false); }
BENCHMARK_CAPTURE(BM_compute_metrics_before, layer_512x3072, layer_tap)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_compute_metrics, layer_512x3072, layer_tap)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_compute_metrics_before, logits_32x151936, logits_slice)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_compute_metrics, logits_32x151936, logits_slice)->Unit(benchmark::kMillisecond);

// The two phases of TapMetricsInParts alone: the order-bound sums (one thread) and the
// element-wise rest (any number of threads).
void BM_metrics_sums_phase(benchmark::State& state, const TapPair& (*data)()) {
  const TapPair& p = data();
  TapMetricsInParts parts(p.ref, p.path, DType::BF16, default_tolerance(DType::BF16), 1);
  for (auto _ : state) parts.sums();
  state.SetItemsProcessed(state.iterations() * p.ref.size());
}
void BM_metrics_range_phase(benchmark::State& state, const TapPair& (*data)()) {
  const TapPair& p = data();
  for (auto _ : state) {
    TapMetricsInParts parts(p.ref, p.path, DType::BF16, default_tolerance(DType::BF16), 1);
    parts.sums();
    state.PauseTiming();
    state.ResumeTiming();
    parts.range(0);
    benchmark::DoNotOptimize(parts.finish());
  }
  state.SetItemsProcessed(state.iterations() * p.ref.size());
}
BENCHMARK_CAPTURE(BM_metrics_sums_phase, layer_512x3072, layer_tap)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_metrics_range_phase, layer_512x3072, layer_tap)->Unit(benchmark::kMillisecond);

void BM_next_token_agreement(benchmark::State& state) {
  const TapPair& p = logits_slice();
  for (auto _ : state) {
    auto a = next_token_agreement(p.ref, p.path);
    benchmark::DoNotOptimize(a);
  }
  state.SetItemsProcessed(state.iterations() * p.ref.size());
}
BENCHMARK(BM_next_token_agreement)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace fusecheck::run

BENCHMARK_MAIN();
