// bench_kv_fp8: decode attention over an FP8 E4M3 KV cache (kernels/fused/kv_fp8.h)
// beside the bf16 split-KV decode attention of fused-cuda on the same values, at the
// decode cases of bench_fused (KV 1024, batch 1/8/64) and the attention shapes of
// qwen3-0.6b, llama-3-8b and qwen3-8b (qwen3-8b has llama-3-8b's 32/8 heads of 128: one entry serves both).
//   kvfp8/<model>/<case>/attn_fp8    the FP8 cache kernel (scales per kv head)
//   kvfp8/<model>/<case>/attn_bf16   launch_decode_attention on the bf16 cache
// Each case is validated before it is timed: every output finite, and the FP8 output
// within the FP8 cache's error of the bf16 one (relative L2 < 0.05; the cache rounds
// K and V to 4 significant bits, 2^-4 relative at most, averaging out over 1024 keys).
// Counters: us, GB/s and pct_copy (of the device copy bandwidth measured at start; bytes:
// the K and V caches read once, q read, out written).
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "harness/core/dtype.h"
#include "kernels/common/device_buffer.h"
#include "kernels/common/device_info.h"
#include "kernels/common/random_fill.h"
#include "kernels/common/timing.h"
#include "kernels/fused/attention_decode.h"
#include "kernels/fused/kv_fp8.h"

namespace fc = fusecheck;
using bf16 = __nv_bfloat16;

namespace {

double g_copy_gbs = 0;

struct Shape {
  int n_heads, n_kv_heads, head_dim;
};
Shape shape_of(const std::string& m) { return m == "qwen3-0.6b" ? Shape{16, 8, 128} : Shape{32, 8, 128}; }

std::vector<float> to_float(const fc::cuda::DeviceBuffer<bf16>& d) {
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto v = d.download();
  std::vector<float> f(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) f[i] = __bfloat162float(v[i]);
  return f;
}

void bench(benchmark::State& st, const std::string& m, int batch, bool fp8) {
  const Shape s = shape_of(m);
  const int kv_len = 1024, cap = kv_len;
  const fc::fused::KvFp8Layout layout{batch, s.n_kv_heads, s.head_dim, cap, true};
  const std::size_t cache_n = static_cast<std::size_t>(batch) * s.n_kv_heads * cap * s.head_dim;
  const std::size_t q_n = static_cast<std::size_t>(batch) * s.n_heads * s.head_dim;
  cudaStream_t stream = nullptr;

  // Rows in append order ([batch * kv_len x n_kv * hd]) for calibration and the FP8 cache;
  // the bf16 cache holds the same values in the cache layout.
  fc::cuda::DeviceBuffer<bf16> k_rows(cache_n), v_rows(cache_n), k_bf16(cache_n), v_bf16(cache_n), q(q_n);
  fc::cuda::fill_uniform(k_rows.data(), cache_n, 101, -4.0f, 4.0f, stream);
  fc::cuda::fill_uniform(v_rows.data(), cache_n, 102, -1.0f, 1.0f, stream);
  fc::cuda::fill_uniform(q.data(), q_n, 103, -1.0f, 1.0f, stream);
  const std::size_t width = static_cast<std::size_t>(s.n_kv_heads) * s.head_dim;
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < s.n_kv_heads; ++h) {
      // Row-major [kv_len x width] slice of head h -> [kv_len x head_dim] block.
      const std::size_t src = static_cast<std::size_t>(b) * kv_len * width + static_cast<std::size_t>(h) * s.head_dim;
      const std::size_t dst = (static_cast<std::size_t>(b) * s.n_kv_heads + h) * cap * s.head_dim;
      CUDA_CHECK(cudaMemcpy2DAsync(k_bf16.data() + dst, s.head_dim * sizeof(bf16), k_rows.data() + src,
                                   width * sizeof(bf16), s.head_dim * sizeof(bf16), kv_len,
                                   cudaMemcpyDeviceToDevice, stream));
      CUDA_CHECK(cudaMemcpy2DAsync(v_bf16.data() + dst, s.head_dim * sizeof(bf16), v_rows.data() + src,
                                   width * sizeof(bf16), s.head_dim * sizeof(bf16), kv_len,
                                   cudaMemcpyDeviceToDevice, stream));
    }
  }
  fc::cuda::DeviceBuffer<float> ks(layout.scale_count()), vs(layout.scale_count());
  fc::fused::kv_fp8_calibrate(k_rows.data(), kv_len, layout, 1.0f, ks.data(), "bench k_cache", stream);
  fc::fused::kv_fp8_calibrate(v_rows.data(), kv_len, layout, 1.0f, vs.data(), "bench v_cache", stream);
  fc::cuda::DeviceBuffer<__nv_fp8_e4m3> k8(cache_n), v8(cache_n);
  fc::fused::launch_kv_fp8_append(k_rows.data(), kv_len, 0, layout, ks.data(), k8.data(), stream);
  fc::fused::launch_kv_fp8_append(v_rows.data(), kv_len, 0, layout, vs.data(), v8.data(), stream);

  fc::cuda::DeviceBuffer<bf16> out_fp8(q_n), out_bf16(q_n);
  out_fp8.fill_poison(stream);
  out_bf16.fill_poison(stream);
  fc::fused::KvFp8DecodeArgs fa;
  fa.q = q.data();
  fa.k_cache = k8.data();
  fa.v_cache = v8.data();
  fa.k_scales = ks.data();
  fa.v_scales = vs.data();
  fa.layout = layout;
  fa.n_heads = s.n_heads;
  fa.kv_len = kv_len;
  fa.out = out_fp8.data();
  // Split over chunks as the fused-cuda:fp8-kv* paths do (kv_fp8_decode_chunk; until
  // 2026-12-03 this benchmark left it out and timed one block per head over all 1024 keys).
  fa.chunk = fc::fused::kv_fp8_decode_chunk(batch, s.n_heads, kv_len);
  fc::cuda::DeviceBuffer<float> fp8_partial(
      std::max<std::size_t>(1, fc::fused::kv_fp8_decode_partial_floats(batch, s.n_heads, s.head_dim, kv_len, fa.chunk)));
  fa.partial = fa.chunk > 0 ? fp8_partial.data() : nullptr;
  st.counters["chunk"] = fa.chunk;

  fc::cuda::DeviceBuffer<float> scratch(fc::fused::decode_attention_scratch_floats(batch, s.n_heads, s.head_dim, kv_len));
  fc::cuda::DeviceBuffer<unsigned int> counters(fc::fused::decode_attention_counters(batch, s.n_heads));
  CUDA_CHECK(cudaMemsetAsync(counters.data(), 0, counters.bytes(), stream));
  fc::fused::DecodeAttentionArgs da{};
  da.q = q.data();
  da.k_cache = k_bf16.data();
  da.v_cache = v_bf16.data();
  da.batch = batch;
  da.n_heads = s.n_heads;
  da.n_kv_heads = s.n_kv_heads;
  da.head_dim = s.head_dim;
  da.capacity = cap;
  da.kv_len = kv_len;
  const std::size_t acc_n = static_cast<std::size_t>(batch) * s.n_heads * fc::fused::decode_attention_splits(kv_len) * s.head_dim;
  da.partial_acc = scratch.data();
  da.partial_ml = scratch.data() + acc_n;
  da.counters = counters.data();
  da.out = out_bf16.data();

  // Validate, then time.
  fc::fused::launch_kv_fp8_decode_attention(fa, stream);
  fc::fused::launch_decode_attention(da, stream);
  const auto got = to_float(out_fp8), want = to_float(out_bf16);
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(want[i])) {
      st.SkipWithError("non-finite attention output: not timed");
      return;
    }
    diff += (got[i] - want[i]) * static_cast<double>(got[i] - want[i]);
    norm += want[i] * static_cast<double>(want[i]);
  }
  const double rel = std::sqrt(diff / norm);
  st.counters["rel_l2_vs_bf16"] = rel;
  if (!(norm > 0) || !(rel < 0.05)) {
    st.SkipWithError(("FP8 attention off by relative L2 " + std::to_string(rel) + ": not timed").c_str());
    return;
  }

  std::vector<float> ms;
  for (auto _ : st) {
    const auto t = fc::cuda::time_on_stream(
        [&](cudaStream_t s2) {
          if (fp8) {
            fc::fused::launch_kv_fp8_decode_attention(fa, s2);
          } else {
            fc::fused::launch_decode_attention(da, s2);
          }
        },
        stream, 3, 20);
    st.SetIterationTime(t.median_ms / 1e3);
    ms.push_back(static_cast<float>(t.median_ms));
  }
  const double per_iter_s = fc::cuda::summarize_ms(ms).median_ms / 1e3;
  const double bytes = 2.0 * static_cast<double>(cache_n) * (fp8 ? 1 : 2) + 2.0 * 2 * static_cast<double>(q_n);
  const double gbs = bytes / per_iter_s / 1e9;
  st.counters["us"] = per_iter_s * 1e6;
  st.counters["GB/s"] = gbs;
  st.counters["pct_copy"] = g_copy_gbs > 0 ? 100.0 * gbs / g_copy_gbs : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (fc::cuda::visible_device_count() == 0) {
    std::fprintf(stderr, "bench_kv_fp8: %s\n", fc::cuda::no_device_reason().c_str());
    return 0;
  }
  const fc::cuda::DeviceProvenance dev = fc::cuda::query_device(0, true);
  fc::fused::require_fp8_device(0);
  g_copy_gbs = dev.copy_bandwidth_gbs;
  benchmark::AddCustomContext("device", dev.name);
  benchmark::AddCustomContext("copy_bandwidth_gbs", std::to_string(g_copy_gbs));
  std::printf("device %s, copy bandwidth %.0f GB/s (read + write)\n", dev.name.c_str(), g_copy_gbs);
  for (const std::string m : {"llama-3-8b", "qwen3-0.6b"}) {
    for (int batch : {1, 8, 64}) {
      for (bool fp8 : {true, false}) {
        const std::string name = "kvfp8/" + m + "/decode_b" + std::to_string(batch) + "_kv1024/" + (fp8 ? "attn_fp8" : "attn_bf16");
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) { bench(st, m, batch, fp8); })
            ->UseManualTime()->Iterations(5)->Unit(benchmark::kMicrosecond);
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
