// bench_flashinfer: flashinfer-cuda beside fused-cuda and standard-cuda, one layer of the
// llama-3-8b, qwen3-8b and qwen3-0.6b shapes (harness/checkpoint/profiles.cpp, seeded
// random bf16 weights: never zeros), at decode b1/b8/b64 over KV 1024 and prefill 512/2048.
//   flashinfer/<model>/<case>/<op>   each op of flashinfer-cuda's layer (Path::time_layer:
//                                    CUDA events behind a spin kernel, median of 40 or
//                                    FUSECHECK_BENCH_REPS)
//   path/<name>/<model>/<case>/layer the whole layer of each of the three paths, with each
//                                    of its ops as counters "us:<op>" (fused-cuda
//                                    and standard-cuda replay it from a CUDA graph; the
//                                    FlashInfer layer is launched op by op, as engines
//                                    without graphs run it; its decode is one batch
//                                    paged decode per layer, planned before the clocks
//                                    start, FUSECHECK_FLASHINFER_DECODE=single for the
//                                    earlier per-sequence route)
// Counters: GB/s, pct_copy (of the device-to-device copy bandwidth measured at start),
// TFLOP/s, from the least bytes and the FLOPs each op declares. Before any time is taken
// each path runs the case once through layer() and must give finite, non-zero outputs
// within 0.1 relative L2 of the first path's (validate()).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness/checkpoint/profiles.h"
#include "harness/core/path_registry.h"
#include "harness/paths/plugin_loader.h"
#include "kernels/common/device_info.h"
#include "reference/random_checkpoint.h"

namespace fc = fusecheck;

namespace {

double g_copy_gbs = 0;
// Timed repetitions per op (median taken): FUSECHECK_BENCH_REPS, default 40
// (scripts/gpu-check-16 takes fewer to fit its time budget).
int g_repetitions = 40;

// One layer of a profile's shape (vocab cut to 1024: the head is not timed).
fc::ModelSpec one_layer(const std::string& profile) {
  const fc::SynthProfile& p = fc::synth_profile(profile);
  fc::ModelSpec s;
  s.architecture = p.model_type;
  s.source_format = "hf-safetensors";
  s.n_layers = 1, s.hidden = p.hidden, s.n_heads = p.heads, s.n_kv_heads = p.kv_heads, s.head_dim = p.head_dim;
  s.rope_dim = p.head_dim, s.intermediate = p.intermediate, s.vocab = 1024, s.rms_eps = p.rms_eps;
  s.rope_theta = p.rope_theta, s.has_qk_norm = p.qk_norm, s.has_qkv_bias = p.qkv_bias, s.max_position = 8192;
  s.dtype = "BF16";
  return s;
}

struct Case {
  std::string name;
  int batch, n, start;
};
const std::vector<Case> kCases = {{"decode_b1_kv1024", 1, 1, 1023},
                                  {"decode_b8_kv1024", 8, 1, 1023},
                                  {"decode_b64_kv1024", 64, 1, 1023},
                                  {"prefill_512", 1, 512, 0},
                                  {"prefill_2048", 1, 2048, 0}};

// The first validated path's layer output per model and case: the others must agree.
std::map<std::string, fc::TapMatrix> g_first_output;

// Runs the case's new tokens once through layer() (on an empty cache: the decode cases
// as a first step) and refuses to time a path whose output is not finite, all zero, or
// more than 0.1 relative L2 from the first path's on the same input: the three paths
// compute the same bf16 layer (a layer's bf16 differences stay near 1e-2 even on the
// Qwen3 profile, docs/flashinfer.md), while a wrong weight, shape or stale buffer gives
// an unrelated output (relative L2 near 1.4).
void validate(fc::Path& p, const fc::ModelSpec& s, const std::string& model, const Case& c) {
  p.reset(c.batch, c.n);
  p.keep_taps(std::vector<fc::Tap>{});  // resid_out only
  fc::TapMatrix x(static_cast<Eigen::Index>(c.batch) * c.n, s.hidden);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = std::cos(0.11 * double(i));
  const fc::TapSet taps = p.layer(0, x);
  const fc::TapMatrix& out = taps.at(fc::Tap::resid_out);
  if (!out.allFinite() || out.norm() == 0) {
    throw std::runtime_error(p.name() + ": layer output not finite or all zero; not timed");
  }
  const auto [first, inserted] = g_first_output.emplace(model + "/" + c.name, out);
  const double rel = (out - first->second).norm() / first->second.norm();
  if (!inserted && !(rel <= 0.1)) {
    throw std::runtime_error(p.name() + ": layer output " + std::to_string(rel) +
                             " relative L2 from the first path's on " + model + "/" + c.name + "; not timed");
  }
  p.keep_taps(std::nullopt);
}

// time_layer results per path/model/case, measured once (after validation) and reported
// by every benchmark of that key.
std::map<std::string, std::vector<fc::OpTiming>> g_timings;
std::map<std::string, std::unique_ptr<fc::ref::RandomCheckpoint>> g_ckpts;

const std::vector<fc::OpTiming>& timings(const std::string& path, const std::string& m, const Case& c) {
  const std::string key = path + "/" + m + "/" + c.name;
  auto it = g_timings.find(key);
  if (it != g_timings.end()) return it->second;
  const fc::ModelSpec spec = one_layer(m);
  auto& ckpt = g_ckpts[m];
  if (!ckpt) ckpt = std::make_unique<fc::ref::RandomCheckpoint>(spec, 3, fc::DType::BF16);
  auto p = fc::make_path(path, *ckpt, fc::PathOptions{});
  validate(*p, spec, m, c);
  p->reset(c.batch, c.start + c.n);
  fc::TimingOptions opts;
  opts.warmup = 3;
  opts.repetitions = g_repetitions;
  opts.graph = true;
  return g_timings[key] = p->time_layer(0, c.n, c.start, opts);
}

void report(benchmark::State& st, const fc::OpTiming& t) {
  for (auto _ : st) st.SetIterationTime(t.median_ms / 1e3);
  const double s = t.median_ms / 1e3;
  const double gbs = s > 0 ? t.bytes / s / 1e9 : 0;
  st.counters["GB/s"] = gbs;
  st.counters["pct_copy"] = g_copy_gbs > 0 ? 100.0 * gbs / g_copy_gbs : 0;
  st.counters["TFLOP/s"] = s > 0 ? t.flops / s / 1e12 : 0;
  st.counters["us"] = t.median_ms * 1e3;
}

// The whole-layer entry of a path's timings ("layer(graph)" for the built-in paths).
const fc::OpTiming& layer_of(const std::vector<fc::OpTiming>& ops) {
  for (const auto& t : ops)
    if (t.op == "layer" || t.op == "layer(graph)") return t;
  throw std::runtime_error("time_layer gave no whole-layer entry");
}

}  // namespace

int main(int argc, char** argv) {
  if (fc::cuda::visible_device_count() == 0) {
    std::fprintf(stderr, "bench_flashinfer: %s\n", fc::cuda::no_device_reason().c_str());
    return 0;
  }
  if (const char* reps = std::getenv("FUSECHECK_BENCH_REPS")) {
    const int r = std::atoi(reps);
    if (r < 3 || r > 10000) {
      std::fprintf(stderr, "bench_flashinfer: FUSECHECK_BENCH_REPS=%s: want 3..10000\n", reps);
      return 2;
    }
    g_repetitions = r;
  }
  fc::register_builtin_paths();
  fc::load_plugin(FUSECHECK_FLASHINFER_PLUGIN);
  const fc::cuda::DeviceProvenance dev = fc::cuda::query_device(0, true);
  g_copy_gbs = dev.copy_bandwidth_gbs;
  benchmark::AddCustomContext("device", dev.name);
  benchmark::AddCustomContext("copy_bandwidth_gbs", std::to_string(g_copy_gbs));
  std::printf("device %s, copy bandwidth %.0f GB/s (read + write)\n", dev.name.c_str(), g_copy_gbs);

  // The ops of flashinfer-cuda's layer (kernels/flashinfer/flashinfer_path.cpp, layer_ops);
  // one its time_layer does not report shows as an error entry, not a silent gap.
  for (const std::string m : {"llama-3-8b", "qwen3-8b", "qwen3-0.6b"}) {
    for (const Case& c : kCases) {
      const std::string p = m + "/" + c.name;
      for (const char* path : {"flashinfer-cuda", "fused-cuda", "standard-cuda"})
        benchmark::RegisterBenchmark(("path/" + std::string(path) + "/" + p + "/layer").c_str(),
                                     [=](benchmark::State& st) {
                                       const auto& ops = timings(path, m, c);
                                       report(st, layer_of(ops));
                                       // Each op of this path's layer beside it ("us:<op>"): the
                                       // three paths' ops side by side from the same run.
                                       for (const auto& t : ops) st.counters["us:" + t.op] = t.median_ms * 1e3;
                                     })
            ->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
      const std::vector<std::string> ops = {"attn_norm", "qkv_proj", "q_norm", "k_norm", "rope_qk", "kv_append",
                                            c.n == 1 ? "attention_decode" : "attention_prefill", "o_proj", "tap_copies",
                                            "fused_add_rmsnorm", "gate_up_proj", "silu_and_mul", "down_proj",
                                            "resid_add_mlp"};
      for (const std::string& op : ops) {
        if ((op == "q_norm" || op == "k_norm") && !fc::synth_profile(m).qk_norm) continue;
        benchmark::RegisterBenchmark(("flashinfer/" + p + "/" + op).c_str(),
                                     [=](benchmark::State& st) {
                                       for (const auto& t : timings("flashinfer-cuda", m, c))
                                         if (t.op == op) return report(st, t);
                                       st.SkipWithError(("no op " + op).c_str());
                                     })
            ->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
