// CPU benchmarks of the reference paths (timings are CPU wall time, labelled as such):
// ref32-cpu on one Qwen3-0.6B-shaped layer at 16 and 128 tokens beside Eigen's own float
// GEMMs on the same shapes (the ceiling a layer of GEMMs can reach on this machine), and a
// full 28-layer Qwen3-0.6B-shaped ref64-cpu forward of 16 tokens, cold (weights converted
// from bf16) and warm (converted weights cached). Each path is validated before timing.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <stdexcept>

#include <benchmark/benchmark.h>

#include "reference/decoder_path.h"
#include "reference/random_checkpoint.h"

namespace fusecheck::ref {
namespace {

ModelSpec qwen3_06b(int layers, int vocab) {
  ModelSpec s;
  s.architecture = "qwen3";
  s.n_layers = layers;
  s.hidden = 1024;
  s.n_heads = 16;
  s.n_kv_heads = 8;
  s.head_dim = 128;
  s.intermediate = 3072;
  s.vocab = vocab;
  s.rms_eps = 1e-6;
  s.rope_theta = 1e6;
  s.rope_dim = 128;
  s.has_qk_norm = true;
  s.tied_embeddings = true;
  s.max_position = 40960;
  return s;
}

// FLOPs of one layer on n new tokens over a cache of n (prefill): the seven projections
// and the two attention products (causal: about half of n x n per head).
double layer_flops(const ModelSpec& s, double n) {
  const double h = s.hidden, qw = s.q_width(), kw = s.kv_width(), im = s.intermediate;
  const double gemm = 2 * n * (h * qw + 2 * h * kw + qw * h + 3 * h * im);
  const double attention = 2 * 2 * s.n_heads * s.head_dim * n * (n + 1) / 2;
  return gemm + attention;
}

std::vector<std::int32_t> tokens(int n, int vocab) {
  std::vector<std::int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 7919 + 13) % vocab;
  return t;
}

const Checkpoint& one_layer_checkpoint() {
  static RandomCheckpoint ckpt(qwen3_06b(1, 4096), 42, DType::BF16);
  return ckpt;
}

void require(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("validation failed before timing: ") + what);
}

void BM_Ref32Layer(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const Checkpoint& ckpt = one_layer_checkpoint();
  Ref32Path path(ckpt, "ref32-cpu");
  Ref64Path gold(ckpt, "ref64-cpu");
  path.reset(1, n);
  gold.reset(1, n);
  const TapMatrix input = path.embed(tokens(n, 4096));
  const TapMatrix got = path.layer(0, input).at(Tap::resid_out);
  const TapMatrix want = gold.layer(0, input).at(Tap::resid_out);
  require(got.allFinite() && want.norm() > 0, "ref32 layer output not finite");
  // FP32 through sums of 3072 terms: 1e-5 relative is FP32 accuracy here.
  require((got - want).norm() / want.norm() < 1e-5, "ref32 layer differs from ref64");
  for (auto _ : state) {
    path.reset(1, n);
    benchmark::DoNotOptimize(path.layer(0, input));
  }
  state.counters["GFLOP/s"] = benchmark::Counter(layer_flops(ckpt.spec(), n) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel("CPU wall time, weights cached");
}

// The same seven GEMM shapes through Eigen directly: what the layer's GEMMs could reach.
void BM_EigenGemmsOfTheLayer(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const ModelSpec s = qwen3_06b(1, 4096);
  using M = Mat<float>;
  const M x = M::Random(n, s.hidden), xq = M::Random(n, s.q_width()), xi = M::Random(n, s.intermediate);
  const M wq = M::Random(s.q_width(), s.hidden), wk = M::Random(s.kv_width(), s.hidden),
          wv = M::Random(s.kv_width(), s.hidden), wo = M::Random(s.hidden, s.q_width()),
          wg = M::Random(s.intermediate, s.hidden), wu = M::Random(s.intermediate, s.hidden),
          wd = M::Random(s.hidden, s.intermediate);
  M q(n, s.q_width()), k(n, s.kv_width()), v(n, s.kv_width()), o(n, s.hidden),
      g(n, s.intermediate), u(n, s.intermediate), d(n, s.hidden);
  for (auto _ : state) {
    q.noalias() = x * wq.transpose();
    k.noalias() = x * wk.transpose();
    v.noalias() = x * wv.transpose();
    o.noalias() = xq * wo.transpose();
    g.noalias() = x * wg.transpose();
    u.noalias() = x * wu.transpose();
    d.noalias() = xi * wd.transpose();
    benchmark::DoNotOptimize(d.data());
    benchmark::ClobberMemory();
  }
  const double h = s.hidden, qw = s.q_width(), kw = s.kv_width(), im = s.intermediate;
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * (h * qw + 2 * h * kw + qw * h + 3 * h * im) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel("CPU wall time, Eigen float GEMM");
}

const Checkpoint& full_checkpoint() {
  static RandomCheckpoint ckpt(qwen3_06b(28, 151936), 42, DType::BF16);
  return ckpt;
}

// Full 28-layer forward of 16 tokens and the head; the first iteration converts weights.
void BM_Ref64Forward28Layers(benchmark::State& state) {
  const Checkpoint& ckpt = full_checkpoint();
  const int n = 16;
  auto path = std::make_unique<Ref64Path>(ckpt, "ref64-cpu");
  const bool warm = state.range(0) == 1;
  auto forward = [&](Ref64Path& p) {
    p.reset(1, n);
    TapMatrix h = p.embed(tokens(n, 151936));
    for (int l = 0; l < 28; ++l) h = p.layer(l, h).at(Tap::resid_out);
    return p.head(h.bottomRows(1)).at(Tap::logits);
  };
  if (warm) {
    const TapMatrix logits = forward(*path);  // converts and caches; validates
    require(logits.allFinite() && logits.norm() > 0, "ref64 logits not finite");
  }
  for (auto _ : state) {
    if (!warm) {
      state.PauseTiming();
      path = std::make_unique<Ref64Path>(ckpt, "ref64-cpu");
      state.ResumeTiming();
    }
    const TapMatrix logits = forward(*path);
    benchmark::DoNotOptimize(logits.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      (28 * layer_flops(ckpt.spec(), n) + 2.0 * 151936 * 1024) * 1e-9,
      benchmark::Counter::kIsIterationInvariantRate);
  state.counters["cached_GB"] = static_cast<double>(path->cached_weight_bytes()) * 1e-9;
  state.SetLabel(warm ? "CPU wall time, weights cached" : "CPU wall time, including bf16->double conversion");
}

BENCHMARK(BM_Ref32Layer)->Arg(16)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_EigenGemmsOfTheLayer)->Arg(16)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Ref64Forward28Layers)->ArgName("warm")->Arg(0)->Arg(1)->Iterations(2)
    ->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace fusecheck::ref

BENCHMARK_MAIN();
