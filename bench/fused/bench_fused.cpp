// bench_fused: the fused-cuda decoder layer on real model shapes with seeded random bf16
// weights on the device (never zeros).
//   fused/<model>/<case>/<op>     each fused op alone (graph of one op), and layer(graph)
//   fused/<model>/<case>/from<k>  the layer from op k on: from<k> - from<k+1> is op k's
//                                 cost inside the layer (PDL overlap with op k+1 included;
//                                 an op alone that fits in L2 reads it from L2, this does not)
//   base/<model>/<case>/layer     the same layer on the GEMM route: one cuBLASLt GEMM per
//                                 projection, separate norm / add+norm / SwiGLU kernels (the
//                                 cuBLAS-per-op baseline; attention and RoPE kernels shared)
//   cublas/<model>/<case>/<gemm>  plain cublasGemmEx bf16 GEMMs on the projection shapes
//   path/<name>/<model>/<case>    Path::time_layer's layer(graph) median for standard-cuda
//                                 and fused-cuda built from the same random checkpoint
//                                 (one iteration each: the median of time_layer's 40)
//   invariant/<model>/<case>/layer(graph)[/<plan>]
//                                 the batch-invariant mode (fused-cuda:batch-invariant,
//                                 FusedLayer::set_batch_invariant) beside the default mode,
//                                 same layer, same buffers, the two graphs launched
//                                 alternately: us (invariant), us_default, ratio =
//                                 invariant / default. Both are validated first (outputs
//                                 finite and within 1e-2 relative L2 of each other) or not
//                                 timed. <plan>: the default BatchInvariantPlan, or one
//                                 field changed (no_split_k, skinny_decode, chunk64, ...) to see
//                                 what each choice costs.
//   invariant/<model>/<case>/op<i> one op of the batch-invariant layer (default plan) on
//                                 its own graph, labelled with its name.
//   invariant/<model>/<case>/skinny_op<i>
//                                 the same for the skinny_decode plan (decode cases).
//   fp8kv/<model>/<case>/layer(graph)/<recipe>
//                                 the fp8-kv layer (fused-cuda:fp8-kv*, FusedLayer::set_kv_fp8)
//                                 beside the default layer: same weights, same random cache
//                                 contents (stored as E4M3, scales from all cached positions),
//                                 same input, the two graphs launched alternately: us (fp8),
//                                 us_default, ratio = fp8 / default. Validated first (layer
//                                 outputs finite and within 2^-4 relative L2) or not timed.
//   fp8w8a8/<model>/<case>/layer(graph)
//                                 the fp8-w8a8 layer (fused-cuda:fp8-w8a8: FusedLayer::set_w8a8,
//                                 E4M3 projections quantized from the default layer's bf16
//                                 weights, FP8 GEMV kernels at 1-2 rows, cuBLASLt FP8 above; the
//                                 fp8-kv cache) beside the default bf16 layer, same input and
//                                 cache contents, the two graphs launched alternately: us (fp8),
//                                 us_default, ratio = fp8 / default, speedup = default / fp8
//                                 (issue 17's target: >= 1.7 at llama-3-8b decode_b1_kv1024),
//                                 pct_copy of the FP8 layer's bytes. Validated first (outputs
//                                 finite, within 1/8 relative L2 of the bf16 layer) or not timed.
//   fp8w8a8/<model>/<case>/op<i>  one op of that layer on its own graph, labelled with its name.
// Every entry: time per iteration = CUDA events around one graph launch queued behind a
// spin kernel; counters GB/s, pct_copy (of the device-to-device copy bandwidth measured at
// start, bytes read + written), TFLOP/s. Bytes are the least the op must move.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "harness/core/dtype.h"
#include "harness/core/model_spec.h"
#include "harness/core/path_registry.h"
#include "reference/random_checkpoint.h"
#include "kernels/common/cublas_handle.h"
#include "kernels/common/cuda_check.h"
#include "kernels/common/device_info.h"
#include "kernels/common/device_op.h"
#include "kernels/common/gemm.h"
#include "kernels/common/random_fill.h"
#include "kernels/common/stream.h"
#include "kernels/common/timing.h"
#include "kernels/fused/fused_layer.h"
#include "reference/recipe.h"

namespace fc = fusecheck;
using fc::fused::FusedLayer;
using fc::cuda::DeviceOp;

namespace {

double g_copy_gbs = 0;

fc::ModelSpec model(const std::string& name) {
  fc::ModelSpec s;
  s.architecture = name.rfind("qwen3", 0) == 0 ? "qwen3" : "llama";
  s.source_format = "hf-safetensors";
  s.dtype = "BF16";
  s.max_position = 8192;
  s.n_layers = 1;
  s.head_dim = 128;
  s.rope_dim = 128;
  s.vocab = 1024;
  if (name == "llama-3-8b") {
    s.hidden = 4096; s.n_heads = 32; s.n_kv_heads = 8; s.intermediate = 14336;
    s.rms_eps = 1e-5; s.rope_theta = 500000;
    s.rope_scaling.type = "llama3"; s.rope_scaling.factor = 8;
  } else if (name == "qwen3-8b") {
    s.hidden = 4096; s.n_heads = 32; s.n_kv_heads = 8; s.intermediate = 12288;
    s.has_qk_norm = true; s.rope_theta = 1e6;
  } else {  // qwen3-0.6b
    s.hidden = 1024; s.n_heads = 16; s.n_kv_heads = 8; s.intermediate = 3072;
    s.has_qk_norm = true; s.rope_theta = 1e6;
  }
  return s;
}

struct Case {
  std::string name;
  int batch, n, start;
};
const std::vector<Case> kCases = {{"decode_b1_kv1024", 1, 1, 1023},
                                  {"decode_b2_kv1024", 2, 1, 1023},
                                  {"decode_b4_kv1024", 4, 1, 1023},
                                  {"decode_b8_kv1024", 8, 1, 1023},
                                  {"decode_b64_kv1024", 64, 1, 1023},
                                  {"prefill_512", 1, 512, 0},
                                  {"prefill_2048", 1, 2048, 0}};

// One model and case on the device at a time (benchmarks run in registration order).
struct Context {
  std::string key;
  fc::cuda::Stream stream;
  std::unique_ptr<FusedLayer> layer;
  std::vector<DeviceOp> fused_ops, base_ops;
  std::map<std::string, std::vector<DeviceOp>> invariant_ops;  // by plan name
  std::map<std::string, std::unique_ptr<FusedLayer>> fp8_layers;  // by recipe, sharing layer's weights
  std::map<std::string, std::vector<DeviceOp>> fp8_ops;
  std::unique_ptr<FusedLayer> w8a8_layer;  // its own (E4M3) weights, from the same seed
  std::vector<DeviceOp> w8a8_ops;
  std::string w8a8_bad;                    // why the fp8-w8a8 layer is not timed ("" when it is)
  std::map<std::string, std::unique_ptr<fc::cuda::Graph>> graphs;
};
std::unique_ptr<Context> g_ctx;

Context& context(const std::string& model_name, const Case& c) {
  const std::string key = model_name + "/" + c.name;
  if (g_ctx && g_ctx->key == key) return *g_ctx;
  g_ctx.reset();
  auto ctx = std::make_unique<Context>();
  ctx->key = key;
  ctx->layer = std::make_unique<FusedLayer>(model(model_name));
  ctx->layer->init_random_weights(1, 42, ctx->stream);
  ctx->layer->reset(c.batch, c.start + c.n);
  ctx->layer->randomize_caches(7, ctx->stream);
  ctx->layer->force_gemm_route(true);  // baseline first: it sizes the GEMM-route buffers
  ctx->base_ops = ctx->layer->ops(0, c.n, c.start);
  ctx->layer->force_gemm_route(false);
  ctx->fused_ops = ctx->layer->ops(0, c.n, c.start);
  ctx->layer->randomize_input(c.batch * c.n, 9, ctx->stream);
  ctx->stream.synchronize();
  g_ctx = std::move(ctx);
  return *g_ctx;
}

void report(benchmark::State& st, double seconds_total, double bytes, double flops) {
  const double per_iter = seconds_total / static_cast<double>(st.iterations());
  const double gbs = bytes / per_iter / 1e9;
  st.counters["GB/s"] = gbs;
  st.counters["pct_copy"] = g_copy_gbs > 0 ? 100.0 * gbs / g_copy_gbs : 0;
  st.counters["TFLOP/s"] = flops / per_iter / 1e12;
  st.counters["us"] = per_iter * 1e6;
}

// Seconds of one launch, timed with events and queued behind a short spin (no host latency).
template <typename Launch>
double time_once(cudaStream_t s, fc::cuda::Event& start, fc::cuda::Event& stop, Launch launch) {
  fc::cuda::enqueue_delay(s, 30.0);
  start.record(s);
  launch();
  stop.record(s);
  return fc::cuda::elapsed_ms(start, stop) / 1e3;
}

// Times `launch` once per iteration (time_once), after 3 untimed launches.
template <typename Launch>
double timed_loop(benchmark::State& st, cudaStream_t s, Launch launch) {
  for (int i = 0; i < 3; ++i) launch();
  fc::cuda::Event start, stop;
  double total = 0;
  for (auto _ : st) {
    const double sec = time_once(s, start, stop, launch);
    st.SetIterationTime(sec);
    total += sec;
  }
  return total;
}

// op_index < 0: the whole layer from op `from` on (from > 0: a suffix of the layer; the
// difference between two suffixes is one op's cost inside the layer, PDL overlap included,
// with the previous replay's last op, not this op's weights, in L2).
void bench_ops(benchmark::State& st, const std::string& m, const Case& c, bool base, int op_index,
               int from = 0) {
  Context& ctx = context(m, c);
  const auto& ops = base ? ctx.base_ops : ctx.fused_ops;
  std::vector<const DeviceOp*> list;
  if (op_index < 0) {
    if (from >= static_cast<int>(ops.size())) {
      st.SkipWithError("no such op on this route");
      return;
    }
    for (std::size_t i = from; i < ops.size(); ++i) list.push_back(&ops[i]);
  } else {
    if (op_index >= static_cast<int>(ops.size())) {
      st.SkipWithError("no such op on this route");
      return;
    }
    list.push_back(&ops[op_index]);
  }
  const std::string gkey =
      std::string(base ? "b" : "f") + std::to_string(op_index) + "_" + std::to_string(from);
  auto& graph = ctx.graphs[gkey];
  if (!graph) {
    graph = std::make_unique<fc::cuda::Graph>();
    fc::cuda::capture(list, ctx.stream, *graph);
  }
  const fc::cuda::OpWork work = fc::cuda::total_work(list);
  const double total = timed_loop(st, ctx.stream, [&] { graph->launch(ctx.stream); });
  if (op_index >= 0) st.SetLabel(list[0]->name);
  report(st, total, work.bytes, work.flops);
}

// The graph of `ops` (the whole layer), captured once under `key`.
fc::cuda::Graph& layer_graph(Context& ctx, const std::string& key, const std::vector<DeviceOp>& ops) {
  auto& graph = ctx.graphs[key];
  if (!graph) {
    std::vector<const DeviceOp*> list;
    for (const DeviceOp& op : ops) list.push_back(&op);
    graph = std::make_unique<fc::cuda::Graph>();
    fc::cuda::capture(list, ctx.stream, *graph);
  }
  return *graph;
}

// The output (resid_out) of `layer` after `ops` ran once, launched directly (not from a
// graph: a cuBLASLt plan that fails throws here, before any capture) on its input.
std::vector<std::uint16_t> layer_output(Context& ctx, const FusedLayer& layer, const std::vector<DeviceOp>& ops,
                                        int rows) {
  fc::cuda::enqueue_all(ops, ctx.stream);
  ctx.stream.synchronize();
  std::vector<std::uint16_t> bits(static_cast<std::size_t>(rows) * layer.spec().hidden);
  CUDA_CHECK(cudaMemcpy(bits.data(), layer.resid_out(), bits.size() * 2, cudaMemcpyDeviceToHost));
  return bits;
}

// "" when a variant layer's output can stand for the default's: finite, not all zero, and
// within `max_rel_l2` relative L2 of it (each caller says why its limit).
std::string validate_against_default(const std::vector<std::uint16_t>& variant, const std::vector<std::uint16_t>& fused,
                                     double max_rel_l2) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < fused.size(); ++i) {
    const double x = fc::bf16_to_float(variant[i]), y = fc::bf16_to_float(fused[i]);
    if (!std::isfinite(x) || !std::isfinite(y)) return "NaN/Inf in the layer output";
    num += (x - y) * (x - y);
    den += y * y;
  }
  if (den == 0) return "the default layer output is all zeros";
  const double rel = std::sqrt(num / den);
  if (rel > max_rel_l2) return "vs default relative L2 " + std::to_string(rel) + " > " + std::to_string(max_rel_l2);
  return "";
}

// Times the graph of `ops` (the variant layer) and the default layer's graph launched
// alternately; reports the variant's figures, us_default and ratio = variant / default.
void time_beside_default(benchmark::State& st, Context& ctx, const std::string& key, const std::vector<DeviceOp>& ops) {
  fc::cuda::Graph& fused = layer_graph(ctx, "f-1_0", ctx.fused_ops);
  fc::cuda::Graph& variant = layer_graph(ctx, key, ops);
  for (int i = 0; i < 3; ++i) {
    fused.launch(ctx.stream);
    variant.launch(ctx.stream);
  }
  fc::cuda::Event start, stop;
  double total = 0, total_default = 0;
  for (auto _ : st) {
    total_default += time_once(ctx.stream, start, stop, [&] { fused.launch(ctx.stream); });
    const double sec = time_once(ctx.stream, start, stop, [&] { variant.launch(ctx.stream); });
    st.SetIterationTime(sec);
    total += sec;
  }
  std::vector<const DeviceOp*> list;
  for (const DeviceOp& op : ops) list.push_back(&op);
  const fc::cuda::OpWork work = fc::cuda::total_work(list);
  report(st, total, work.bytes, work.flops);
  st.counters["us_default"] = total_default / static_cast<double>(st.iterations()) * 1e6;
  st.counters["ratio"] = total / total_default;
}

// The batch-invariant layer beside the default one (see the file comment).
void bench_invariant(benchmark::State& st, const std::string& m, const Case& c, const std::string& plan_name,
                     fc::fused::BatchInvariantPlan plan) {
  Context& ctx = context(m, c);
  auto& ops = ctx.invariant_ops[plan_name];
  if (ops.empty()) {
    ctx.layer->set_batch_invariant(plan);
    ops = ctx.layer->ops(0, c.n, c.start);
    ctx.layer->set_batch_invariant(std::nullopt);
  }
  const int rows = c.batch * c.n;
  std::string bad;
  try {
    // The two modes share fused-v1's rounding points and differ only in FP32 summation
    // order, which flips a bf16 rounding (2^-8 relative) for a small share of elements; a
    // wrong chunk or algorithm gives O(1).
    bad = validate_against_default(layer_output(ctx, *ctx.layer, ops, rows),
                                   layer_output(ctx, *ctx.layer, ctx.fused_ops, rows), 1e-2);
  } catch (const std::exception& e) {
    bad = e.what();
  }
  if (!bad.empty()) {
    st.SkipWithError(("not timed: " + bad).c_str());
    return;
  }
  time_beside_default(st, ctx, "i_" + plan_name, ops);
}

// One op of the batch-invariant layer (default plan) on its own graph: where its time goes
// against the default layer's ops (fused/<model>/<case>/op<i>). Label: the op's name.
void bench_invariant_op(benchmark::State& st, const std::string& m, const Case& c, int op_index,
                        const std::string& plan_name, fc::fused::BatchInvariantPlan plan) {
  Context& ctx = context(m, c);
  auto& ops = ctx.invariant_ops[plan_name];
  if (ops.empty()) {
    ctx.layer->set_batch_invariant(plan);
    ops = ctx.layer->ops(0, c.n, c.start);
    ctx.layer->set_batch_invariant(std::nullopt);
  }
  if (op_index >= static_cast<int>(ops.size())) {
    st.SkipWithError("no such op on this route");
    return;
  }
  auto& graph = ctx.graphs["iop" + plan_name + std::to_string(op_index)];
  const std::vector<const DeviceOp*> list = {&ops[op_index]};
  if (!graph) {
    graph = std::make_unique<fc::cuda::Graph>();
    fc::cuda::capture(list, ctx.stream, *graph);
  }
  const fc::cuda::OpWork work = fc::cuda::total_work(list);
  const double total = timed_loop(st, ctx.stream, [&] { graph->launch(ctx.stream); });
  st.SetLabel(ops[op_index].name);
  report(st, total, work.bytes, work.flops);
}

// The fp8-kv layer of `recipe` beside the default one (see the file comment).
void bench_fp8kv(benchmark::State& st, const std::string& m, const Case& c, const std::string& recipe) {
  Context& ctx = context(m, c);
  auto& layer = ctx.fp8_layers[recipe];
  auto& ops = ctx.fp8_ops[recipe];
  const int rows = c.batch * c.n;
  std::string bad;
  try {
    if (!layer) {
      layer = std::make_unique<FusedLayer>(model(m));
      layer->share_weights(ctx.layer->shared_weights());
      layer->set_kv_fp8(*fc::find_recipe(recipe).kv_fp8);
      layer->reset(c.batch, c.start + c.n);
      layer->randomize_caches(7, ctx.stream);  // the default layer's cache contents, then E4M3
      ops = layer->ops(0, c.n, c.start);
      layer->randomize_input(rows, 9, ctx.stream);
    }
    // E4M3 keeps 4 significant bits: each cached value moves by at most 2^-4 relative (the
    // subnormals by far less in absolute terms), so attention's output by at most about
    // that; the layer output also carries the residual. Anything O(1) is a wrong cache.
    bad = validate_against_default(layer_output(ctx, *layer, ops, rows),
                                   layer_output(ctx, *ctx.layer, ctx.fused_ops, rows), 0.0625);
  } catch (const std::exception& e) {
    bad = e.what();
  }
  if (!bad.empty()) {
    st.SkipWithError(("not timed: " + bad).c_str());
    return;
  }
  time_beside_default(st, ctx, "fp8_" + recipe, ops);
}

// The fp8-w8a8 layer of the context, built and validated once (see the file comment).
FusedLayer* w8a8_layer(Context& ctx, const std::string& m, const Case& c) {
  const int rows = c.batch * c.n;
  if (!ctx.w8a8_layer && ctx.w8a8_bad.empty()) {
    try {
      auto layer = std::make_unique<FusedLayer>(model(m));
      layer->init_random_weights(1, 42, ctx.stream);  // the default layer's bf16 weights
      fc::fused::quantize_weights_w8a8(layer->weights()[0], 0, ctx.stream);
      layer->set_kv_fp8(*fc::find_recipe("fp8-w8a8").kv_fp8);
      layer->set_w8a8();
      layer->reset(c.batch, c.start + c.n);
      layer->randomize_caches(7, ctx.stream);  // the default layer's cache contents, then E4M3
      ctx.w8a8_ops = layer->ops(0, c.n, c.start);
      layer->randomize_input(rows, 9, ctx.stream);
      // E4M3 keeps 4 significant bits: weights and GEMM inputs each move by at most 2^-4
      // relative, a product by at most about 2^-3, and the layer output also carries the
      // residual; the FP8 cache adds its 2^-4. Anything O(1) is a wrong code or scale.
      for (int g = 0; g < fc::fused::kW8a8Gemms; ++g) layer->w8a8_row_check(g).arm(ctx.stream);
      const auto out = layer_output(ctx, *layer, ctx.w8a8_ops, rows);
      for (int g = 0; g < fc::fused::kW8a8Gemms; ++g)
        layer->w8a8_row_check(g).check(fc::fused::kW8a8GemmNames[g], ctx.stream);
      ctx.w8a8_bad = validate_against_default(out, layer_output(ctx, *ctx.layer, ctx.fused_ops, rows), 0.125);
      ctx.w8a8_layer = std::move(layer);
    } catch (const std::exception& e) {
      ctx.w8a8_bad = e.what();
    }
  }
  return ctx.w8a8_bad.empty() ? ctx.w8a8_layer.get() : nullptr;
}

void bench_w8a8(benchmark::State& st, const std::string& m, const Case& c) {
  Context& ctx = context(m, c);
  if (!w8a8_layer(ctx, m, c)) {
    st.SkipWithError(("not timed: " + ctx.w8a8_bad).c_str());
    return;
  }
  time_beside_default(st, ctx, "w8a8", ctx.w8a8_ops);
  st.counters["speedup"] = 1.0 / st.counters["ratio"];
}

void bench_w8a8_op(benchmark::State& st, const std::string& m, const Case& c, int op) {
  Context& ctx = context(m, c);
  if (!w8a8_layer(ctx, m, c)) {
    st.SkipWithError(("not timed: " + ctx.w8a8_bad).c_str());
    return;
  }
  if (op >= static_cast<int>(ctx.w8a8_ops.size())) {
    st.SkipWithError("no such op on this route");
    return;
  }
  const std::vector<DeviceOp> one = {ctx.w8a8_ops[static_cast<std::size_t>(op)]};
  fc::cuda::Graph& graph = layer_graph(ctx, "w8a8_op" + std::to_string(op), one);
  const fc::cuda::OpWork work = fc::cuda::total_work({&one[0]});
  const double total = timed_loop(st, ctx.stream, [&] { graph.launch(ctx.stream); });
  st.SetLabel(one[0].name);
  report(st, total, work.bytes, work.flops);
}

// Plain cuBLAS (cublasGemmEx, bf16 out) on one projection shape of the case.
void bench_cublas(benchmark::State& st, const std::string& m, const Case& c, int which) {
  const fc::ModelSpec s = model(m);
  const int rows = c.batch * c.n;
  const int shapes[4][2] = {{s.q_width() + 2 * s.kv_width(), s.hidden},
                            {s.hidden, s.q_width()},
                            {2 * s.intermediate, s.hidden},
                            {s.hidden, s.intermediate}};
  const int N = shapes[which][0], K = shapes[which][1];
  fc::cuda::Stream stream;
  fc::cuda::CublasHandle h(stream);
  fc::cuda::DeviceBuffer<__nv_bfloat16> x(std::size_t(rows) * K), w(std::size_t(N) * K),
      y(std::size_t(rows) * N);
  fc::cuda::fill_uniform(x.data(), x.size(), 1, -1.f, 1.f, stream);
  fc::cuda::fill_uniform(w.data(), w.size(), 2, -0.02f, 0.02f, stream);
  const double total = timed_loop(st, stream, [&] {
    fc::cuda::gemm_xwt(h, rows, N, K, x.data(), w.data(), y.data());
  });
  const char* names[4] = {"qkv", "o_proj", "gate_up", "down"};
  st.SetLabel(names[which]);
  report(st, total, 2.0 * (double(rows) * K + double(N) * K + double(rows) * N),
         fc::cuda::gemm_flops(rows, N, K));
}

// One random checkpoint (one layer, bf16) per model, shared by the path benchmarks.
std::map<std::string, std::unique_ptr<fc::ref::RandomCheckpoint>> g_ckpts;

void bench_path(benchmark::State& st, const std::string& path, const std::string& m, const Case& c) {
  g_ctx.reset();  // free the FusedLayer context's device memory first
  auto& ckpt = g_ckpts[m];
  if (!ckpt) ckpt = std::make_unique<fc::ref::RandomCheckpoint>(model(m), 3, fc::DType::BF16);
  fc::register_builtin_paths();
  auto p = fc::make_path(path, *ckpt, fc::PathOptions{});
  p->reset(c.batch, c.start + c.n);
  fc::TimingOptions opts;
  opts.warmup = 3;
  opts.repetitions = 40;
  opts.graph = true;
  fc::OpTiming layer;
  for (auto _ : st) {
    for (const auto& t : p->time_layer(0, c.n, c.start, opts))
      if (t.op == "layer(graph)") layer = t;
    st.SetIterationTime(layer.median_ms / 1e3);
  }
  report(st, layer.median_ms / 1e3, layer.bytes, layer.flops);
}

}  // namespace

int main(int argc, char** argv) {
  if (fc::cuda::visible_device_count() == 0) {
    std::fprintf(stderr, "bench_fused: %s\n", fc::cuda::no_device_reason().c_str());
    return 0;
  }
  const fc::cuda::DeviceProvenance dev = fc::cuda::query_device(0, true);
  g_copy_gbs = dev.copy_bandwidth_gbs;
  benchmark::AddCustomContext("device", dev.name);
  benchmark::AddCustomContext("copy_bandwidth_gbs", std::to_string(g_copy_gbs));
  std::printf("device %s, copy bandwidth %.0f GB/s (read + write)\n", dev.name.c_str(), g_copy_gbs);

  for (const std::string m : {"llama-3-8b", "qwen3-8b", "qwen3-0.6b"}) {
    for (const Case& c : kCases) {
      const std::string p = m + "/" + c.name + "/";
      benchmark::RegisterBenchmark(("fused/" + p + "layer(graph)").c_str(),
                                   [=](benchmark::State& st) { bench_ops(st, m, c, false, -1); })
          ->UseManualTime()->Iterations(60)->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("base/" + p + "layer(graph)").c_str(),
                                   [=](benchmark::State& st) { bench_ops(st, m, c, true, -1); })
          ->UseManualTime()->Iterations(60)->Unit(benchmark::kMicrosecond);
      for (const char* path : {"standard-cuda", "fused-cuda"})
        benchmark::RegisterBenchmark(("path/" + std::string(path) + "/" + p + "layer(graph)").c_str(),
                                     [=](benchmark::State& st) { bench_path(st, path, m, c); })
            ->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
      for (int from = 1; from < 9; ++from)
        benchmark::RegisterBenchmark(("fused/" + p + "from" + std::to_string(from)).c_str(),
                                     [=](benchmark::State& st) { bench_ops(st, m, c, false, -1, from); })
            ->UseManualTime()->Iterations(60)->Unit(benchmark::kMicrosecond);
      for (int op = 0; op < 9; ++op)
        benchmark::RegisterBenchmark(("fused/" + p + "op" + std::to_string(op)).c_str(),
                                     [=](benchmark::State& st) { bench_ops(st, m, c, false, op); })
            ->UseManualTime()->Iterations(60)->Unit(benchmark::kMicrosecond);
      if (c.n > 1 || c.batch > 8)
        for (int g = 0; g < 4; ++g)
          benchmark::RegisterBenchmark(("cublas/" + p + "gemm" + std::to_string(g)).c_str(),
                                       [=](benchmark::State& st) { bench_cublas(st, m, c, g); })
              ->UseManualTime()->Iterations(60)->Unit(benchmark::kMicrosecond);
    }
  }
  // The batch-invariant mode on the target cases (issue 20): its default plan, and
  // each plan field moved once (decode cases: the chunk and the decode GEMM rows; prefill:
  // the prefill GEMM rows).
  const std::vector<std::string> targets = {"decode_b1_kv1024", "decode_b8_kv1024", "decode_b64_kv1024",
                                            "prefill_512"};
  for (const std::string m : {"llama-3-8b", "qwen3-8b", "qwen3-0.6b"}) {
    for (const Case& c : kCases) {
      if (std::find(targets.begin(), targets.end(), c.name) == targets.end()) continue;
      std::vector<std::pair<std::string, fc::fused::BatchInvariantPlan>> plans = {{"", {}}};
      auto vary = [&](const std::string& name, auto field, int value) {
        fc::fused::BatchInvariantPlan p;
        p.*field = value;
        plans.emplace_back("/" + name, p);
      };
      fc::fused::BatchInvariantPlan no_split;
      no_split.gemm_split_k = false;
      plans.emplace_back("/no_split_k", no_split);
      if (c.n == 1) {
        // The decode projections on the skinny tensor-core GEMM (kernels/fused/skinny_gemm.h)
        // instead of cuBLASLt's algorithm fixed at 64 rows.
        fc::fused::BatchInvariantPlan sk;
        sk.skinny_decode = true;
        plans.emplace_back("/skinny_decode", sk);
        // The attention's fold and in-kernel merge at one wave (same bits; off by default).
        fc::fused::BatchInvariantPlan fu;
        fu.one_wave_fusions = true;
        plans.emplace_back("/one_wave_fusions", fu);
        vary("chunk32", &fc::fused::BatchInvariantPlan::decode_chunk, 32);
        vary("chunk64", &fc::fused::BatchInvariantPlan::decode_chunk, 64);
        // The skinny GEMM with the default mode's 32-position chunks and one-wave fusions.
        sk.decode_chunk = 32;
        sk.one_wave_fusions = true;
        plans.emplace_back("/skinny_chunk32", sk);
        vary("chunk256", &fc::fused::BatchInvariantPlan::decode_chunk, 256);
        vary("gemm_rows1", &fc::fused::BatchInvariantPlan::decode_gemm_rows, 1);
        vary("gemm_rows8", &fc::fused::BatchInvariantPlan::decode_gemm_rows, 8);
      } else {
        vary("gemm_rows128", &fc::fused::BatchInvariantPlan::prefill_gemm_rows, 128);
        vary("gemm_rows2048", &fc::fused::BatchInvariantPlan::prefill_gemm_rows, 2048);
      }
      for (const auto& [plan_name, plan] : plans)
        benchmark::RegisterBenchmark(("invariant/" + m + "/" + c.name + "/layer(graph)" + plan_name).c_str(),
                                     [=](benchmark::State& st) { bench_invariant(st, m, c, plan_name, plan); })
            ->UseManualTime()->Iterations(60)->Unit(benchmark::kMicrosecond);
      for (int op = 0; op < 10; ++op)
        benchmark::RegisterBenchmark(("invariant/" + m + "/" + c.name + "/op" + std::to_string(op)).c_str(),
                                     [=](benchmark::State& st) {
                                       bench_invariant_op(st, m, c, op, "", fc::fused::BatchInvariantPlan{});
                                     })
            ->UseManualTime()->Iterations(60)->Unit(benchmark::kMicrosecond);
      if (c.n == 1)  // the skinny plan's ops (its default norm folding)
        for (int op = 0; op < 10; ++op) {
          fc::fused::BatchInvariantPlan sk;
          sk.skinny_decode = true;
          benchmark::RegisterBenchmark(("invariant/" + m + "/" + c.name + "/skinny_op" + std::to_string(op)).c_str(),
                                       [=](benchmark::State& st) { bench_invariant_op(st, m, c, op, "/skinny_decode", sk); })
              ->UseManualTime()->Iterations(60)->Unit(benchmark::kMicrosecond);
        }
    }
  }
  // The fp8-kv layer (issue 17) at decode over KV 1024: static and dynamic per-tensor scales.
  for (const std::string m : {"llama-3-8b", "qwen3-8b", "qwen3-0.6b"}) {
    for (const Case& c : kCases) {
      if (c.name != "decode_b1_kv1024" && c.name != "decode_b8_kv1024" && c.name != "decode_b64_kv1024") continue;
      for (const std::string recipe : {"fp8-kv", "fp8-kv-dynamic"})
        benchmark::RegisterBenchmark(("fp8kv/" + m + "/" + c.name + "/layer(graph)/" + recipe).c_str(),
                                     [=](benchmark::State& st) { bench_fp8kv(st, m, c, recipe); })
            ->UseManualTime()->Iterations(60)->Unit(benchmark::kMicrosecond);
    }
  }
  // The fp8-w8a8 layer (issue 17): decode over KV 1024, the GEMV route at b1 and b2, the
  // cuBLASLt FP8 route at b8.
  for (const std::string m : {"llama-3-8b", "qwen3-8b", "qwen3-0.6b"}) {
    for (const Case& c : kCases) {
      if (c.name != "decode_b1_kv1024" && c.name != "decode_b2_kv1024" && c.name != "decode_b8_kv1024") continue;
      benchmark::RegisterBenchmark(("fp8w8a8/" + m + "/" + c.name + "/layer(graph)").c_str(),
                                   [=](benchmark::State& st) { bench_w8a8(st, m, c); })
          ->UseManualTime()->Iterations(60)->Unit(benchmark::kMicrosecond);
      for (int op = 0; op < 9; ++op)
        benchmark::RegisterBenchmark(("fp8w8a8/" + m + "/" + c.name + "/op" + std::to_string(op)).c_str(),
                                     [=](benchmark::State& st) { bench_w8a8_op(st, m, c, op); })
            ->UseManualTime()->Iterations(60)->Unit(benchmark::kMicrosecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_ctx.reset();
  return 0;
}
