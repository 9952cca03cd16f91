// The host work of `fusecheck run` at the nightly Qwen3-0.6B prefill-512 scenario's sizes
// (hidden 1024, intermediate 3072, vocab 151936, 512 tokens): compute_metrics on a layer
// tap and on a slice of the logits, next-token agreement on a logits slice, and a layer's
// weights converted to FP32 as ref32 uploads them, each beside the code it replaced
// (tests/run/metrics_before.h, TensorView::to_float) in the same process, so that the
// ratio is measured on the same data, machine and load. Every pair is checked equal
// before it is timed (STYLE.md 6). Element counts are reported as items (items/s).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "harness/checkpoint/float_chunks.h"
#include "harness/core/dtype.h"
#include "harness/run/host_memory.h"
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
// Small enough to stay in L2: the arithmetic's cost without the memory's.
const TapPair& cached_tap() {
  static const TapPair p = make_pair(16, 1024, 3);
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
BENCHMARK_CAPTURE(BM_compute_metrics_before, cached_16x1024, cached_tap)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_compute_metrics, cached_16x1024, cached_tap)->Unit(benchmark::kMicrosecond);
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
BENCHMARK_CAPTURE(BM_metrics_sums_phase, cached_16x1024, cached_tap)->Unit(benchmark::kMicrosecond);

// Refuses to time a next_token_agreement that differs from the code it replaced.
void check_agreement(const TapPair& p) {
  const NextTokenAgreement now = next_token_agreement(p.ref, p.path);
  const NextTokenAgreement old = before::next_token_agreement(p.ref, p.path);
  const bool same = now.kl.size() == old.kl.size() &&
                    std::memcmp(now.kl.data(), old.kl.data(), now.kl.size() * sizeof(double)) == 0 &&
                    std::memcmp(now.ref_margin.data(), old.ref_margin.data(), now.kl.size() * sizeof(double)) == 0 &&
                    now.top1_match == old.top1_match && same_bits(now.kl_mean, old.kl_mean);
  if (!same) {
    std::fprintf(stderr, "next_token_agreement differs from before\n");
    std::abort();
  }
}
void time_agreement(benchmark::State& state, bool old_code) {
  const TapPair& p = logits_slice();
  check_agreement(p);
  for (auto _ : state) {
    auto a = old_code ? before::next_token_agreement(p.ref, p.path) : next_token_agreement(p.ref, p.path);
    benchmark::DoNotOptimize(a);
  }
  state.SetItemsProcessed(state.iterations() * p.ref.size());
}
void BM_next_token_agreement_before(benchmark::State& state) { time_agreement(state, true); }
void BM_next_token_agreement(benchmark::State& state) { time_agreement(state, false); }
BENCHMARK(BM_next_token_agreement_before)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_next_token_agreement)->Unit(benchmark::kMillisecond);

// One Qwen3-0.6B layer's matrices as stored bf16 (q, k, v, o, gate, up, down: 15.7M values),
// converted to FP32 as ref32 uploads them: before, TensorView::to_float (a fresh vector per
// tensor, one core); after, for_each_float_chunk through one reused buffer on every core.
// Only the host side: the copies to the device are not part of it.
struct LayerWeights {
  std::vector<std::vector<std::byte>> bytes;
  std::vector<TensorView> views;
};
const LayerWeights& layer_weights() {
  static const LayerWeights w = [] {
    const std::int64_t shapes[7][2] = {{2048, 1024}, {1024, 1024}, {1024, 1024}, {1024, 2048},
                                       {3072, 1024}, {3072, 1024}, {1024, 3072}};
    LayerWeights out;
    std::mt19937_64 rng(4);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (const auto& shape : shapes) {
      std::vector<std::byte> b(static_cast<std::size_t>(shape[0] * shape[1]) * 2);
      for (std::size_t i = 0; i < b.size(); i += 2) {
        const std::uint16_t v = float_to_bf16(normal(rng));
        std::memcpy(b.data() + i, &v, 2);
      }
      out.bytes.push_back(std::move(b));
    }
    for (std::size_t i = 0; i < out.bytes.size(); ++i) {
      TensorView t;
      t.name = "layer_weight_" + std::to_string(i);
      t.dtype = DType::BF16;
      t.shape = {shapes[i][0], shapes[i][1]};
      t.bytes = out.bytes[i];
      out.views.push_back(std::move(t));
    }
    return out;
  }();
  return w;
}
std::int64_t layer_weight_count() {
  std::int64_t n = 0;
  for (const auto& t : layer_weights().views) n += t.numel();
  return n;
}
void BM_layer_weights_to_float_before(benchmark::State& state) {
  layer_weights();  // made before timing
  for (auto _ : state) {
    for (const auto& t : layer_weights().views) {
      std::vector<float> f = t.to_float();
      benchmark::DoNotOptimize(f.data());
    }
  }
  state.SetItemsProcessed(state.iterations() * layer_weight_count());
}
void BM_layer_weights_to_float(benchmark::State& state) {
  std::vector<float> staging;
  for (const auto& t : layer_weights().views) {  // checked equal before timing
    std::vector<float> chunks;
    for_each_float_chunk(t, staging, [&](std::int64_t, std::span<const float> v) { chunks.insert(chunks.end(), v.begin(), v.end()); });
    if (chunks != t.to_float()) std::abort();
  }
  staging = {};
  for (auto _ : state) {
    for (const auto& t : layer_weights().views) {
      for_each_float_chunk(t, staging, [](std::int64_t, std::span<const float> v) { benchmark::DoNotOptimize(v.data()); });
    }
  }
  state.SetItemsProcessed(state.iterations() * layer_weight_count());
}
BENCHMARK(BM_layer_weights_to_float_before)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_layer_weights_to_float)->Unit(benchmark::kMillisecond);

// A layer's taps (standard-cuda's 17 at 512 tokens: 14.7M doubles) and one logits matrix
// (512 x 151936) copied into fresh matrices and dropped, as a layer and a head hand them
// over: with glibc's defaults (before), then with keep_freed_memory_for_reuse (after; it
// is process-wide, so "before" runs first). The copies are plain memcpy.
std::vector<Eigen::Index> tap_cols() {
  return {1024, 2048, 1024, 1024, 2048, 1024, 2048, 1024, 2048, 1024, 1024, 1024, 3072, 3072, 3072, 1024, 1024};
}
void copy_into_fresh(benchmark::State& state, const std::vector<Eigen::Index>& cols, Eigen::Index rows) {
  Eigen::Index widest = *std::max_element(cols.begin(), cols.end());
  const TapMatrix source = TapMatrix::Constant(rows, widest, 1.5);
  std::int64_t values = 0;
  for (Eigen::Index c : cols) values += rows * c;
  for (auto _ : state) {
    std::vector<TapMatrix> taps;
    for (Eigen::Index c : cols) {
      TapMatrix m(rows, c);
      std::memcpy(m.data(), source.data(), static_cast<std::size_t>(m.size()) * sizeof(double));
      taps.push_back(std::move(m));
    }
    benchmark::DoNotOptimize(taps.data());
  }
  state.SetBytesProcessed(state.iterations() * values * static_cast<std::int64_t>(sizeof(double)));
}
void BM_layer_taps_fresh_before(benchmark::State& state) { copy_into_fresh(state, tap_cols(), kTokens); }
void BM_logits_fresh_before(benchmark::State& state) { copy_into_fresh(state, {kVocab}, kTokens); }
void BM_layer_taps_fresh(benchmark::State& state) {
  keep_freed_memory_for_reuse();
  copy_into_fresh(state, tap_cols(), kTokens);
}
void BM_logits_fresh(benchmark::State& state) {
  keep_freed_memory_for_reuse();
  copy_into_fresh(state, {kVocab}, kTokens);
}
BENCHMARK(BM_layer_taps_fresh_before)->Unit(benchmark::kMillisecond)->MinTime(1.0);
BENCHMARK(BM_logits_fresh_before)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_layer_taps_fresh)->Unit(benchmark::kMillisecond)->MinTime(1.0);
BENCHMARK(BM_logits_fresh)->Unit(benchmark::kMillisecond)->MinTime(2.0);

}  // namespace
}  // namespace fusecheck::run

BENCHMARK_MAIN();
