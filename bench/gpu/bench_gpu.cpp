// bench_gpu: per-op timing of the standard-cuda path (one kernel per op, cuBLAS bf16
// GEMMs) at published model shapes, with the ceilings measured in the same run: a
// device-to-device copy (GB/s) and cuBLAS bf16 and strict-FP32 GEMMs (TFLOP/s).
// Each op is validated (outputs poisoned, then checked finite) before it is timed; each
// iteration is one op between two CUDA events behind a spin kernel, with L2 flushed
// before it (cold: a real model's other layers evict this one's weights). Counters:
// GB/s and TFLOP/s from the op's declared bytes and FLOPs, and pct_of_ceiling against the
// copy bandwidth or the bf16 GEMM rate, whichever bounds the op (its arithmetic intensity
// against the ridge point). Weights and activations are seeded random values on device.
// JSON through --benchmark_out=FILE --benchmark_out_format=json.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "harness/checkpoint/profiles.h"
#include "harness/core/version.h"
#include "kernels/common/device_info.h"
#include "kernels/common/gemm.h"
#include "kernels/common/random_fill.h"
#include "kernels/common/stream.h"
#include "kernels/common/timing.h"
#include "kernels/standard/decoder_engine.h"

namespace fc = fusecheck;
namespace cu = fusecheck::cuda;
using bf16 = __nv_bfloat16;

namespace {

struct Ceilings {
  double copy_gbs = 0, bf16_tflops = 0, fp32_tflops = 0;
};
Ceilings g_ceil;
int g_iterations = 30;

// Median of `reps` timed runs of `work`, in ms.
double median_ms(const std::function<void(cudaStream_t)>& work, cudaStream_t s, int reps) {
  return cu::time_on_stream(work, s, 2, reps).median_ms;
}

double gemm_ceiling_tflops(bool bf16_operands, int n, int reps) {
  cu::Stream s;
  cu::CublasHandle h(s.get());
  const std::size_t count = static_cast<std::size_t>(n) * n;
  double ms = 0;
  if (bf16_operands) {
    cu::DeviceBuffer<bf16> a(count), b(count), c(count);
    cu::fill_uniform(a.data(), count, 1, -1.f, 1.f, s);
    cu::fill_uniform(b.data(), count, 2, -1.f, 1.f, s);
    ms = median_ms([&](cudaStream_t) { cu::gemm_xwt(h.get(), n, n, n, a.data(), b.data(), c.data()); }, s, reps);
  } else {
    cu::DeviceBuffer<float> a(count), b(count), c(count);
    cu::fill_uniform(a.data(), count, 1, -1.f, 1.f, s);
    cu::fill_uniform(b.data(), count, 2, -1.f, 1.f, s);
    ms = median_ms([&](cudaStream_t) { cu::gemm_xwt(h.get(), n, n, n, a.data(), b.data(), c.data()); }, s, reps);
  }
  return cu::gemm_flops(n, n, n) / (ms * 1e-3) / 1e12;
}

fc::ModelSpec spec_of(const std::string& profile) {
  const fc::SynthProfile& p = fc::synth_profile(profile);
  fc::ModelSpec s;
  s.architecture = p.model_type;
  s.n_layers = 1;  // one layer is timed; the others have the same shape
  s.hidden = p.hidden;
  s.n_heads = p.heads;
  s.n_kv_heads = p.kv_heads;
  s.head_dim = p.head_dim;
  s.rope_dim = p.head_dim;
  s.intermediate = p.intermediate;
  s.vocab = p.vocab;
  s.rms_eps = p.rms_eps;
  s.rope_theta = p.rope_theta;
  s.has_qk_norm = p.qk_norm;
  s.has_qkv_bias = p.qkv_bias;
  return s;
}

// Matrices uniform with variance 1/in (activations keep their scale), norm weights in
// [0.5, 1.5], seeded per tensor.
cu::DeviceBuffer<bf16> random_tensor(std::size_t n, std::uint64_t seed, float lo, float hi) {
  cu::DeviceBuffer<bf16> b(n);
  cu::fill_uniform(b.data(), n, seed, lo, hi);
  return b;
}

std::unique_ptr<cu::DecoderEngine<bf16>> make_engine(const fc::ModelSpec& s) {
  const auto h = static_cast<std::size_t>(s.hidden), qw = static_cast<std::size_t>(s.q_width()),
             kvw = static_cast<std::size_t>(s.kv_width()), in = static_cast<std::size_t>(s.intermediate);
  auto mat = [](std::size_t out, std::size_t fan_in, std::uint64_t seed) {
    const float a = std::sqrt(3.0f / static_cast<float>(fan_in));
    return random_tensor(out * fan_in, seed, -a, a);
  };
  std::vector<cu::DeviceLayer<bf16>> layers(1);
  cu::DeviceLayer<bf16>& L = layers[0];
  L.attn_norm = random_tensor(h, 10, 0.5f, 1.5f);
  L.wq = mat(qw, h, 11);
  L.wk = mat(kvw, h, 12);
  L.wv = mat(kvw, h, 13);
  if (s.has_qk_norm) {
    L.q_norm = random_tensor(static_cast<std::size_t>(s.head_dim), 14, 0.5f, 1.5f);
    L.k_norm = random_tensor(static_cast<std::size_t>(s.head_dim), 15, 0.5f, 1.5f);
  }
  L.wo = mat(h, qw, 16);
  L.mlp_norm = random_tensor(h, 17, 0.5f, 1.5f);
  L.w_gate = mat(in, h, 18);
  L.w_up = mat(in, h, 19);
  L.w_down = mat(h, in, 20);
  cu::DeviceHead<bf16> head;
  cu::EngineOptions opts;
  opts.rope_angles = cu::RopeAngles::fp32;
  return std::make_unique<cu::DecoderEngine<bf16>>(s, std::move(layers), std::move(head), opts);
}

struct Phase {
  std::string name;
  int batch, n_new, kv_len;
};

// Everything a registered benchmark points at lives here until exit.
struct Case {
  std::unique_ptr<cu::DecoderEngine<bf16>> engine;
  std::vector<std::unique_ptr<cu::DecoderState<bf16>>> states;
};
std::vector<std::unique_ptr<Case>> g_cases;
std::unique_ptr<cu::L2Flusher> g_flusher;

// Runs the layer once on poisoned buffers and checks that every tap is finite.
bool validate(cu::DecoderEngine<bf16>& e, cu::DecoderState<bf16>& st, const std::vector<cu::DeviceOp>& ops, int rows) {
  st.act.poison(e.stream());
  e.run(ops);
  CUDA_CHECK(cudaStreamSynchronize(e.stream()));
  auto& A = st.act;
  const fc::ModelSpec& s = e.spec();
  const std::vector<std::pair<const cu::DeviceBuffer<bf16>*, std::size_t>> outs = {
      {&A.attn_norm, s.hidden}, {&A.q_rope, s.q_width()}, {&A.k_rope, s.kv_width()},
      {&A.attn, s.q_width()}, {&A.resid_mid, s.hidden}, {&A.act, s.intermediate}, {&A.resid_out, s.hidden}};
  for (const auto& [buf, width] : outs) {
    std::vector<bf16> host(static_cast<std::size_t>(rows) * width);
    CUDA_CHECK(cudaMemcpy(host.data(), buf->data(), host.size() * sizeof(bf16), cudaMemcpyDeviceToHost));
    for (bf16 v : host) {
      if (!std::isfinite(__bfloat162float(v))) return false;
    }
  }
  return true;
}

void time_op(benchmark::State& state, cu::DecoderEngine<bf16>* e, cu::DeviceOp op) {
  cudaStream_t s = e->stream();
  cu::Event start, stop;
  std::vector<float> ms;
  op.enqueue(s);  // warm-up
  for (auto _ : state) {
    g_flusher->flush(s);
    cu::enqueue_delay(s);
    start.record(s);
    op.enqueue(s);
    stop.record(s);
    const float t = cu::elapsed_ms(start, stop);
    ms.push_back(t);
    state.SetIterationTime(t * 1e-3);
  }
  const cu::TimingStats st = cu::summarize_ms(ms);
  const double sec = st.median_ms * 1e-3;
  const double gbs = op.bytes / sec / 1e9, tflops = op.flops / sec / 1e12;
  const double ridge = g_ceil.bf16_tflops * 1e12 / (g_ceil.copy_gbs * 1e9);  // FLOP per byte
  const bool compute_bound = op.bytes > 0 && op.flops / op.bytes > ridge;
  state.counters["median_us"] = st.median_ms * 1e3;
  state.counters["GB/s"] = gbs;
  state.counters["TFLOP/s"] = tflops;
  state.counters["pct_of_ceiling"] =
      compute_bound ? 100.0 * tflops / g_ceil.bf16_tflops : 100.0 * gbs / g_ceil.copy_gbs;
  state.SetLabel(compute_bound ? "compute-bound (bf16 GEMM ceiling)" : "memory-bound (copy ceiling)");
}

void time_layer_graph(benchmark::State& state, cu::DecoderEngine<bf16>* e, std::vector<cu::DeviceOp> ops) {
  cudaStream_t s = e->stream();
  std::vector<const cu::DeviceOp*> list;
  for (const cu::DeviceOp& op : ops) list.push_back(&op);
  cu::Graph g;
  cu::capture(list, s, g);
  g.launch(s);
  cu::Event start, stop;
  std::vector<float> ms;
  const auto [bytes, flops] = cu::total_work(list);
  for (auto _ : state) {
    g_flusher->flush(s);
    cu::enqueue_delay(s);
    start.record(s);
    g.launch(s);
    stop.record(s);
    const float t = cu::elapsed_ms(start, stop);
    ms.push_back(t);
    state.SetIterationTime(t * 1e-3);
  }
  const cu::TimingStats st = cu::summarize_ms(ms);
  state.counters["median_us"] = st.median_ms * 1e3;
  state.counters["GB/s"] = bytes / (st.median_ms * 1e-3) / 1e9;
  state.counters["TFLOP/s"] = flops / (st.median_ms * 1e-3) / 1e12;
  state.counters["pct_of_ceiling"] = 100.0 * (bytes / (st.median_ms * 1e-3) / 1e9) / g_ceil.copy_gbs;
  state.SetLabel("whole layer, CUDA graph replay");
}

void register_model(const std::string& profile, const std::vector<Phase>& phases) {
  const fc::ModelSpec s = spec_of(profile);
  auto c = std::make_unique<Case>();
  c->engine = make_engine(s);
  cu::DecoderEngine<bf16>* e = c->engine.get();
  for (const Phase& ph : phases) {
    auto st = std::make_unique<cu::DecoderState<bf16>>(e->make_state(ph.batch, ph.kv_len + ph.n_new));
    const int rows = ph.batch * ph.n_new;
    st->act.ensure(s, rows);
    e->ensure_cache(*st, 0);
    st->cached[0] = ph.kv_len;
    cu::fill_uniform(st->act.input.data(), st->act.input.size(), 100, -1.f, 1.f, e->stream());
    cu::fill_uniform(st->k_cache[0].data(), st->k_cache[0].size(), 101, -1.f, 1.f, e->stream());
    cu::fill_uniform(st->v_cache[0].data(), st->v_cache[0].size(), 102, -1.f, 1.f, e->stream());
    std::vector<cu::DeviceOp> ops = e->layer_ops(*st, 0, ph.n_new);
    const std::string prefix = "standard/" + profile + "/" + ph.name + "/";
    if (!validate(*e, *st, ops, rows)) {
      std::fprintf(stderr, "bench_gpu: %s failed validation (non-finite output); not timed\n", prefix.c_str());
      continue;
    }
    for (const cu::DeviceOp& op : ops) {
      benchmark::RegisterBenchmark((prefix + op.name).c_str(), time_op, e, op)
          ->UseManualTime()->Iterations(g_iterations)->Unit(benchmark::kMicrosecond);
    }
    benchmark::RegisterBenchmark((prefix + "layer").c_str(), time_layer_graph, e, ops)
        ->UseManualTime()->Iterations(g_iterations)->Unit(benchmark::kMicrosecond);
    c->states.push_back(std::move(st));
  }
  g_cases.push_back(std::move(c));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (cu::visible_device_count() == 0) {
    std::printf("bench_gpu: skipped: %s\n", cu::no_device_reason().c_str());
    return 0;
  }
  const cu::DeviceProvenance dev = cu::query_device(0, true, std::size_t(1) << 30);
  g_ceil.copy_gbs = dev.copy_bandwidth_gbs;
  g_ceil.bf16_tflops = gemm_ceiling_tflops(true, 8192, 10);
  g_ceil.fp32_tflops = gemm_ceiling_tflops(false, 8192, 5);
  for (const auto& [k, v] : dev.attributes()) benchmark::AddCustomContext(k, v);
  benchmark::AddCustomContext("fusecheck_version", fc::version_string());
  benchmark::AddCustomContext("git_sha", fc::git_sha());
  benchmark::AddCustomContext("ceiling_copy_gbs", std::to_string(g_ceil.copy_gbs));
  benchmark::AddCustomContext("ceiling_bf16_gemm_tflops", std::to_string(g_ceil.bf16_tflops));
  benchmark::AddCustomContext("ceiling_fp32_gemm_tflops", std::to_string(g_ceil.fp32_tflops));
  benchmark::AddCustomContext("timing", "CUDA events, L2 flushed before each iteration, median in counters");
  std::printf("bench_gpu: %s; ceilings: copy %.0f GB/s, bf16 GEMM %.0f TFLOP/s, FP32 GEMM %.1f TFLOP/s\n",
              dev.summary().c_str(), g_ceil.copy_gbs, g_ceil.bf16_tflops, g_ceil.fp32_tflops);
  g_flusher = std::make_unique<cu::L2Flusher>(dev.l2_bytes);

  const std::vector<Phase> phases = {{"decode_b1_kv1024", 1, 1, 1024},
                                     {"decode_b8_kv1024", 8, 1, 1024},
                                     {"decode_b64_kv1024", 64, 1, 1024},
                                     {"prefill_512", 1, 512, 0},
                                     {"prefill_2048", 1, 2048, 0}};
  register_model("qwen3-0.6b", phases);
  register_model("llama-3-8b", phases);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_cases.clear();
  g_flusher.reset();
  return 0;
}
