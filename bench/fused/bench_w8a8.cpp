// bench_w8a8: the fp8-w8a8 GEMMs (kernels/fused/w8a8.h) beside the bf16 cuBLASLt GEMM of the
// same shape (kernels/fused/gemm_lt.h, what fused-cuda runs), in one process, on the
// projections of llama-3-8b (q|k|v 6144x4096, o 4096x4096, gate|up 28672x4096, down
// 4096x14336) and qwen3-8b (the same q|k|v and o, gate|up 24576x4096, down 4096x12288), seeded random bf16 weights and activations (never zeros).
//   w8a8/<model>/decode_b<M>/<gemm>   M = 1, 8, 64, L2 flushed before every timed run (a
//                                     decode step streams the whole model, far beyond L2)
//   w8a8/<model>/prefill_2048/<gemm>  M = 2048, warm
//   w8a8/ceiling/<fp8|bf16>_8192^3    the FP8 ceiling of this run: cuBLASLt's heuristic
//                                     choice at 8192^3 (unit scales, FP32 D), and bf16's
// Counters (median of 20 timed runs each, CUDA events behind a spin kernel):
//   us           fp8 = quantize the activations + FP8 GEMM (unit scales) + epilogue (twin order)
//   us_quant, us_gemm, us_epilogue   its parts alone
//   us_outer     quantize + cuBLASLt's outer-vector scaled GEMM, bf16 out (-1: unsupported)
//   us_bf16      the bf16 cuBLASLt GEMM (LtGemm), same output type as the fp8 pipeline
//   speedup      us_bf16 / us; speedup_outer = us_bf16 / us_outer
//   pct_copy, pct_copy_bf16   weight bytes / time against the device copy bandwidth
//                (read + write) measured at start
//   TFLOP/s, pct_ceiling     2 M N K / time (fp8 pipeline), and against the FP8 ceiling
//   TFLOP/s_bf16, TFLOP/s_gemm   the bf16 GEMM; the FP8 GEMM alone
// Each case is validated before it is timed, else not timed: every output finite, sampled
// elements within w8a8_reference_tolerance of the double reference of the dequantized
// product (fp8 and outer; the codes read back from the device), and the fp8 output within
// relative L2 0.1 of the bf16 GEMM (two E4M3 roundings of 2^-4 relative at most: ~0.05 RMS).
// The last lines printed: the decode GEMM sums per model and batch (q|k|v + o + gate|up +
// down, fp8 against bf16): the bulk of a decode layer's FP8 gain (not the layer figure).
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "harness/core/dtype.h"
#include "harness/core/fp8.h"
#include "kernels/common/device_buffer.h"
#include "kernels/common/device_info.h"
#include "kernels/common/random_fill.h"
#include "kernels/common/stream.h"
#include "kernels/common/timing.h"
#include "kernels/fused/gemm_lt.h"
#include "kernels/fused/kv_fp8.h"
#include "kernels/fused/w8a8.h"

namespace fc = fusecheck;
using bf16 = __nv_bfloat16;
using fc::cuda::DeviceBuffer;

namespace {

double g_copy_gbs = 0, g_ceiling_tflops = 0;
std::size_t g_l2_bytes = 0;

struct Gemm {
  std::string name;
  int N, K;
  bool fp32_out;  // fused-v1 keeps gate|up and down in FP32 inside their kernels
};
std::vector<Gemm> gemms(const std::string& model) {
  if (model == "llama-3-8b") {
    return {{"qkv", 6144, 4096, false}, {"o", 4096, 4096, false}, {"gate_up", 28672, 4096, true},
            {"down", 4096, 14336, true}};
  }
  // qwen3-8b: q|k|v and o are llama-3-8b's shapes (timed again so that its sums are whole).
  return {{"qkv", 6144, 4096, false}, {"o", 4096, 4096, false}, {"gate_up", 24576, 4096, true},
          {"down", 4096, 12288, true}};
}

// One projection's weights on the device (bf16 and its E4M3 twin), kept while the
// benchmarks of that projection run (registration order).
struct WeightContext {
  std::string key;
  DeviceBuffer<bf16> w;
  fc::fused::Fp8Weight w8;
};
std::unique_ptr<WeightContext> g_weights;
fc::cuda::Stream* g_stream = nullptr;
std::unique_ptr<fc::fused::Fp8Gemm> g_fp8;
std::unique_ptr<fc::fused::LtGemm> g_bf16;
std::unique_ptr<fc::cuda::L2Flusher> g_flusher;

WeightContext& weights(const std::string& model, const Gemm& g) {
  const std::string key = model + "/" + g.name;
  if (g_weights && g_weights->key == key) return *g_weights;
  g_weights.reset();
  auto ctx = std::make_unique<WeightContext>();
  ctx->key = key;
  ctx->w.resize(static_cast<std::size_t>(g.N) * g.K);
  fc::cuda::fill_uniform(ctx->w.data(), ctx->w.size(), 1000 + g.N + g.K, -0.05f, 0.05f, *g_stream);
  ctx->w8 = fc::fused::quantize_weight_e4m3(ctx->w.data(), g.N, g.K, key, *g_stream);
  g_weights = std::move(ctx);
  return *g_weights;
}

struct Sums {
  double fp8_us = 0, bf16_us = 0, outer_us = 0;
  bool outer = true;
};
std::map<std::string, Sums> g_decode_sums;  // "<model> decode_b<M>"

// A few rows and output channels of `y` (row-major [M x N], bf16 or FP32) against the double
// reference of the dequantized product, from the codes and scales read back.
std::string check_sampled(const fc::fused::Fp8Weight& w, const DeviceBuffer<__nv_fp8_e4m3>& a8,
                          const DeviceBuffer<float>& a_s, int M, const std::vector<float>& y, bool bf16_out) {
  const int N = w.n, K = w.k;
  const auto codes = a8.download();
  const auto as = a_s.download(), ws = w.scales.download();
  std::vector<int> rows = {0, M / 2, M - 1};
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  std::vector<std::uint8_t> wrow(K);
  for (int n = 3; n < N; n += N / 16 + 1) {
    CUDA_CHECK(cudaMemcpy(wrow.data(), w.codes.data() + static_cast<std::size_t>(n) * K, K, cudaMemcpyDeviceToHost));
    for (int m : rows) {
      double exact = 0, abs_sum = 0;
      for (int k = 0; k < K; ++k) {
        const double p = static_cast<double>(fc::e4m3_to_float(codes[static_cast<std::size_t>(m) * K + k].__x)) *
                         fc::e4m3_to_float(wrow[k]);
        exact += p;
        abs_sum += std::fabs(p);
      }
      const double scale = static_cast<double>(as[m]) * ws[n];
      const double got = y[static_cast<std::size_t>(m) * N + n];
      const double tol = fc::fused::w8a8_reference_tolerance(K, scale, abs_sum, exact, bf16_out);
      if (!(std::fabs(got - scale * exact) <= tol)) {
        return "y[" + std::to_string(m) + "," + std::to_string(n) + "] = " + std::to_string(got) + ", reference " +
               std::to_string(scale * exact) + " (tolerance " + std::to_string(tol) + ")";
      }
    }
  }
  return "";
}

std::vector<float> download_output(const void* y, std::size_t n, bool fp32) {
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> out(n);
  if (fp32) {
    CUDA_CHECK(cudaMemcpy(out.data(), y, n * 4, cudaMemcpyDeviceToHost));
  } else {
    std::vector<std::uint16_t> b(n);
    CUDA_CHECK(cudaMemcpy(b.data(), y, n * 2, cudaMemcpyDeviceToHost));
    for (std::size_t i = 0; i < n; ++i) out[i] = fc::bf16_to_float(b[i]);
  }
  return out;
}

bool all_finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

void bench_gemm(benchmark::State& st, const std::string& model, const Gemm& g, int M) {
  const bool decode = M <= 64;
  cudaStream_t s = *g_stream;
  WeightContext& wc = weights(model, g);
  const int N = g.N, K = g.K;
  const std::size_t out_n = static_cast<std::size_t>(M) * N;
  const std::size_t out_bytes = out_n * (g.fp32_out ? 4 : 2);

  DeviceBuffer<bf16> x(static_cast<std::size_t>(M) * K);
  fc::cuda::fill_uniform(x.data(), x.size(), 77 + M, -1.0f, 1.0f, s);
  DeviceBuffer<__nv_fp8_e4m3> a8(x.size());
  DeviceBuffer<float> a_s(M), acc(out_n);
  DeviceBuffer<unsigned char> y_fp8(out_bytes), y_bf16(out_bytes);
  DeviceBuffer<bf16> y_outer(out_n);
  y_fp8.fill_poison(s);
  y_bf16.fill_poison(s);
  y_outer.fill_poison(s);
  fc::fused::Fp8RowCheck rows;

  auto quantize = [&](cudaStream_t t) { fc::fused::launch_quantize_rows_e4m3(x.data(), M, K, a8.data(), a_s.data(), rows.flag(), t); };
  auto fp8 = [&](cudaStream_t t) {
    quantize(t);
    g_fp8->run(a8.data(), a_s.data(), wc.w8, M, nullptr, acc.data(), y_fp8.data(), g.fp32_out, t);
  };
  auto outer = [&](cudaStream_t t) {
    quantize(t);
    g_fp8->run_outer_scaled(a8.data(), a_s.data(), wc.w8, M, y_outer.data(), t);
  };
  auto bf16_gemm = [&](cudaStream_t t) {
    g_bf16->run(x.data(), wc.w.data(), M, N, K, y_bf16.data(), g.fp32_out, nullptr, nullptr, t);
  };

  // Validate, then time.
  rows.arm(s);
  fp8(s);
  rows.check(model + " " + g.name + " input", s);
  bf16_gemm(s);
  const auto got = download_output(y_fp8.data(), out_n, g.fp32_out);
  const auto want = download_output(y_bf16.data(), out_n, g.fp32_out);
  if (!all_finite(got) || !all_finite(want)) {
    st.SkipWithError("non-finite GEMM output: not timed");
    return;
  }
  std::string bad = check_sampled(wc.w8, a8, a_s, M, got, !g.fp32_out);
  if (!bad.empty()) {
    st.SkipWithError(("fp8 " + bad + ": not timed").c_str());
    return;
  }
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < out_n; ++i) {
    diff += (got[i] - want[i]) * static_cast<double>(got[i] - want[i]);
    norm += want[i] * static_cast<double>(want[i]);
  }
  const double rel = std::sqrt(diff / norm);
  st.counters["rel_l2_vs_bf16"] = rel;
  if (!(norm > 0) || !(rel < 0.1)) {
    st.SkipWithError(("fp8 output off the bf16 GEMM by relative L2 " + std::to_string(rel) + ": not timed").c_str());
    return;
  }
  std::string why_not_outer = g_fp8->outer_scaled_unsupported(M, N, K);
  if (why_not_outer.empty()) {
    try {
      outer(s);
    } catch (const std::exception& e) {  // offered by the heuristic, refused at launch
      why_not_outer = e.what();
    }
  }
  if (why_not_outer.empty()) {
    const auto got_outer = download_output(y_outer.data(), out_n, false);
    bad = all_finite(got_outer) ? check_sampled(wc.w8, a8, a_s, M, got_outer, true) : "non-finite output";
    if (!bad.empty()) {
      st.SkipWithError(("outer-vector scaled " + bad + ": not timed").c_str());
      return;
    }
  }

  fc::cuda::L2Flusher* flusher = decode ? g_flusher.get() : nullptr;
  auto median_us = [&](const std::function<void(cudaStream_t)>& work) {
    return fc::cuda::time_on_stream(work, s, 3, 20, flusher).median_ms * 1e3;
  };
  double us = 0, us_bf16 = 0, us_outer = -1, us_quant = 0, us_gemm = 0, us_epi = 0;
  for (auto _ : st) {
    us = median_us(fp8);
    us_bf16 = median_us(bf16_gemm);
    if (why_not_outer.empty()) us_outer = median_us(outer);
    us_quant = median_us(quantize);
    us_gemm = median_us([&](cudaStream_t t) { g_fp8->gemm_unit_scales(a8.data(), wc.w8.codes.data(), M, N, K, acc.data(), t); });
    us_epi = median_us([&](cudaStream_t t) {
      fc::fused::launch_w8a8_epilogue(acc.data(), a_s.data(), wc.w8.scales.data(), nullptr, M, N, y_fp8.data(), g.fp32_out, t);
    });
    st.SetIterationTime(us / 1e6);
  }
  const double flops = 2.0 * M * N * static_cast<double>(K);
  const double w_bytes = static_cast<double>(N) * K;
  st.counters["us"] = us;
  st.counters["us_bf16"] = us_bf16;
  st.counters["us_outer"] = us_outer;
  st.counters["us_quant"] = us_quant;
  st.counters["us_gemm"] = us_gemm;
  st.counters["us_epilogue"] = us_epi;
  st.counters["speedup"] = us_bf16 / us;
  if (us_outer > 0) st.counters["speedup_outer"] = us_bf16 / us_outer;
  st.counters["pct_copy"] = g_copy_gbs > 0 ? 100.0 * (w_bytes / (us * 1e-6) / 1e9) / g_copy_gbs : 0;
  st.counters["pct_copy_bf16"] = g_copy_gbs > 0 ? 100.0 * (2 * w_bytes / (us_bf16 * 1e-6) / 1e9) / g_copy_gbs : 0;
  st.counters["TFLOP/s"] = flops / (us * 1e-6) / 1e12;
  st.counters["TFLOP/s_gemm"] = flops / (us_gemm * 1e-6) / 1e12;
  st.counters["TFLOP/s_bf16"] = flops / (us_bf16 * 1e-6) / 1e12;
  if (!decode && g_ceiling_tflops > 0) st.counters["pct_ceiling"] = 100.0 * flops / (us * 1e-6) / 1e12 / g_ceiling_tflops;
  if (!why_not_outer.empty()) st.SetLabel("outer-vector scales: " + why_not_outer);
  if (decode) {
    Sums& sum = g_decode_sums[model + " decode_b" + std::to_string(M)];
    sum.fp8_us += us;
    sum.bf16_us += us_bf16;
    sum.outer_us += us_outer;
    sum.outer = sum.outer && us_outer > 0;
  }
}

// The FP8 and bf16 ceilings of this run: cuBLASLt's heuristic choice at 8192^3, warm.
void bench_ceiling(benchmark::State& st, bool fp8) {
  const int n = 8192;
  cudaStream_t s = *g_stream;
  const std::size_t count = static_cast<std::size_t>(n) * n;
  DeviceBuffer<float> d(count);
  double us = 0;
  if (fp8) {
    DeviceBuffer<bf16> src(count);
    fc::cuda::fill_uniform(src.data(), count, 5, -1.0f, 1.0f, s);
    const fc::fused::Fp8Weight a = fc::fused::quantize_weight_e4m3(src.data(), n, n, "ceiling A", s);
    fc::cuda::fill_uniform(src.data(), count, 6, -1.0f, 1.0f, s);
    const fc::fused::Fp8Weight b = fc::fused::quantize_weight_e4m3(src.data(), n, n, "ceiling B", s);
    for (auto _ : st) {
      us = fc::cuda::time_on_stream(
               [&](cudaStream_t t) { g_fp8->gemm_unit_scales(a.codes.data(), b.codes.data(), n, n, n, d.data(), t); },
               s, 3, 10)
               .median_ms * 1e3;
      st.SetIterationTime(us / 1e6);
    }
  } else {
    DeviceBuffer<bf16> a(count), b(count);
    fc::cuda::fill_uniform(a.data(), count, 5, -1.0f, 1.0f, s);
    fc::cuda::fill_uniform(b.data(), count, 6, -1.0f, 1.0f, s);
    for (auto _ : st) {
      us = fc::cuda::time_on_stream(
               [&](cudaStream_t t) { g_bf16->run(a.data(), b.data(), n, n, n, d.data(), true, nullptr, nullptr, t); },
               s, 3, 10)
               .median_ms * 1e3;
      st.SetIterationTime(us / 1e6);
    }
  }
  const double tflops = 2.0 * n * n * static_cast<double>(n) / (us * 1e-6) / 1e12;
  if (fp8) g_ceiling_tflops = tflops;
  st.counters["us"] = us;
  st.counters["TFLOP/s"] = tflops;
}

// A failed cuBLASLt call or a bad input row ends that entry, not the run.
template <typename Bench>
void guarded(benchmark::State& st, Bench bench) {
  try {
    bench();
  } catch (const std::exception& e) {
    st.SkipWithError((std::string(e.what()) + ": not timed").c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (fc::cuda::visible_device_count() == 0) {
    std::fprintf(stderr, "bench_w8a8: %s\n", fc::cuda::no_device_reason().c_str());
    return 0;
  }
  const fc::cuda::DeviceProvenance dev = fc::cuda::query_device(0, true);
  fc::fused::require_fp8_device(0);
  g_copy_gbs = dev.copy_bandwidth_gbs;
  g_l2_bytes = dev.l2_bytes;
  fc::cuda::Stream stream;
  g_stream = &stream;
  g_fp8 = std::make_unique<fc::fused::Fp8Gemm>();
  g_bf16 = std::make_unique<fc::fused::LtGemm>();
  g_flusher = std::make_unique<fc::cuda::L2Flusher>(g_l2_bytes);
  benchmark::AddCustomContext("device", dev.name);
  benchmark::AddCustomContext("copy_bandwidth_gbs", std::to_string(g_copy_gbs));
  benchmark::AddCustomContext("cublas_version", std::to_string(CUBLAS_VERSION));
  std::printf("device %s, copy bandwidth %.0f GB/s (read + write), cuBLAS %d\n", dev.name.c_str(), g_copy_gbs,
              CUBLAS_VERSION);

  // The ceilings first: the prefill entries report against the FP8 one.
  for (bool fp8 : {true, false})
    benchmark::RegisterBenchmark(fp8 ? "w8a8/ceiling/fp8_8192^3" : "w8a8/ceiling/bf16_8192^3",
                                 [=](benchmark::State& st) { guarded(st, [&] { bench_ceiling(st, fp8); }); })
        ->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
  for (const std::string m : {"llama-3-8b", "qwen3-8b"}) {
    for (const Gemm& g : gemms(m)) {
      for (int M : {1, 8, 64, 2048}) {
        const std::string name = "w8a8/" + m + "/" + (M == 2048 ? std::string("prefill_2048") : "decode_b" + std::to_string(M)) +
                                 "/" + g.name;
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) { guarded(st, [&] { bench_gemm(st, m, g, M); }); })
            ->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  for (const auto& [key, sum] : g_decode_sums) {
    std::printf("w8a8 decode GEMMs %s: fp8 %.1f us, bf16 %.1f us, speedup %.2fx", key.c_str(), sum.fp8_us, sum.bf16_us,
                sum.bf16_us / sum.fp8_us);
    if (sum.outer) std::printf("; outer-vector scaled %.1f us, speedup %.2fx", sum.outer_us, sum.bf16_us / sum.outer_us);
    std::printf("\n");
  }
  g_weights.reset();
  g_flusher.reset();
  g_bf16.reset();
  g_fp8.reset();
  return 0;
}
