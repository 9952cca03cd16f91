// The FP8 KV cache kernels (kernels/fused/kv_fp8.h) against the host: harness/core/fp8.h
// against CUDA's own __nv_fp8_e4m3 conversion (host side, no GPU needed), the capability
// and scale errors, and on a GPU the calibrated scales and appended codes bit for bit
// against reference/kv_fp8.h and the decode attention against a double reference over
// the dequantized cache, at awkward shapes.
#include <cuda_fp8.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "fused_test_util.h"
#include "harness/core/error.h"
#include "harness/core/fp8.h"
#include "kernels/fused/kv_fp8.h"
#include "reference/kv_fp8.h"

namespace fusecheck::test {
namespace {

std::uint8_t cuda_code(float x) { return __nv_fp8_e4m3(x).__x; }

TEST(Fp8Conversion, HostEncoderMatchesCudaNvFp8E4m3) {
  // Every 97th float bit pattern (all exponents, both signs) plus every midpoint between
  // neighbouring E4M3 values and one float ulp either side.
  std::vector<float> xs;
  for (std::uint64_t bits = 0; bits <= 0xffffffffull; bits += 97) {
    xs.push_back(std::bit_cast<float>(static_cast<std::uint32_t>(bits)));
  }
  for (int c = 0; c < 0x7e; ++c) {
    const float mid = (e4m3_to_float(static_cast<std::uint8_t>(c)) + e4m3_to_float(static_cast<std::uint8_t>(c + 1))) / 2;
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  std::int64_t differ = 0;
  for (float x : xs) {
    const std::uint8_t ours = float_to_e4m3(x), theirs = cuda_code(x);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(e4m3_to_float(theirs)));
      continue;
    }
    if (ours != theirs && ++differ <= 5) ADD_FAILURE() << "x = " << x << ": ours " << int(ours) << ", CUDA " << int(theirs);
  }
  EXPECT_EQ(differ, 0) << "of " << xs.size();
  for (int c = 0; c < 256; ++c) {
    const float cuda_value = static_cast<float>(std::bit_cast<__nv_fp8_e4m3>(static_cast<std::uint8_t>(c)));
    const float ours = e4m3_to_float(static_cast<std::uint8_t>(c));
    if (std::isnan(ours)) {
      EXPECT_TRUE(std::isnan(cuda_value)) << c;
    } else {
      EXPECT_EQ(ours, cuda_value) << "code " << c;
    }
  }
}

TEST(Fp8Capability, BelowAdaIsAClearErrorNamingTheCapability) {
  try {
    fused::require_fp8_capability(8, 0, "NVIDIA A100-SXM4-80GB");
    FAIL() << "no error on 8.0";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("8.0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("8.9"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("A100"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fused::require_fp8_capability(8, 6, "RTX 3090"), InputError);
  EXPECT_NO_THROW(fused::require_fp8_capability(8, 9, "L40S"));
  EXPECT_NO_THROW(fused::require_fp8_capability(9, 0, "H200"));
}

TEST(Fp8Scales, ZeroNanOrInfScaleIsAClearError) {
  for (float bad : {0.0f, -1.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    EXPECT_THROW(fused::check_kv_fp8_scales({0.5f, bad}, "layer 0 k_cache"), InputError) << bad;
  }
  EXPECT_NO_THROW(fused::check_kv_fp8_scales({0.5f, 1e-30f}, "layer 0 k_cache"));
}

struct Shape {
  int batch, n_heads, n_kv_heads, head_dim, n;
  bool per_head;
  std::string name() const {
    return "b" + std::to_string(batch) + "_h" + std::to_string(n_heads) + "_kv" + std::to_string(n_kv_heads) + "_d" +
           std::to_string(head_dim) + "_n" + std::to_string(n) + (per_head ? "_perhead" : "_pertensor");
  }
};

class KvFp8Kernels : public ::testing::TestWithParam<Shape> {};

// Rows with a wide dynamic range (some heads 30x others, a few tiny values) so that
// per-head scales, subnormals and ties all occur.
Bits kv_rows(const Shape& s, std::uint64_t seed) {
  Bits b = random_bits(static_cast<std::size_t>(s.batch) * s.n * s.n_kv_heads * s.head_dim, seed, -3.0f, 3.0f);
  const int width = s.n_kv_heads * s.head_dim;
  for (std::size_t i = 0; i < b.size(); ++i) {
    const int head = static_cast<int>(i % width) / s.head_dim;
    float x = bf16_to_float(b[i]) * (head == 0 ? 30.0f : 1.0f);
    if (i % 53 == 0) x *= 1e-4f;
    b[i] = float_to_bf16(x);
  }
  return b;
}

TEST_P(KvFp8Kernels, ScalesAndAppendedCodesMatchTheEmulatedCacheBitForBit) {
  SKIP_WITHOUT_GPU();
  const Shape s = GetParam();
  const fused::KvFp8Layout layout{s.batch, s.n_kv_heads, s.head_dim, s.n + 3, s.per_head};
  const Bits rows = kv_rows(s, 1701);
  auto d_rows = to_device(rows);
  cuda::DeviceBuffer<float> scales(static_cast<std::size_t>(layout.scale_count()));
  fused::kv_fp8_calibrate(d_rows.data(), s.n, layout, 1.0f, scales.data(), "test k_cache", nullptr);
  cuda::DeviceBuffer<__nv_fp8_e4m3> cache(static_cast<std::size_t>(s.batch) * s.n_kv_heads * layout.capacity * s.head_dim);
  CUDA_CHECK(cudaMemset(cache.data(), 0x7f, cache.bytes()));  // NaN codes: unwritten shows
  fused::launch_kv_fp8_append(d_rows.data(), s.n, 2, layout, scales.data(), cache.data(), nullptr);

  const int width = s.n_kv_heads * s.head_dim;
  ref::Mat<float> host(static_cast<Eigen::Index>(s.batch) * s.n, width);
  for (Eigen::Index i = 0; i < host.size(); ++i) host.data()[i] = bf16_to_float(rows[static_cast<std::size_t>(i)]);
  ref::KvFp8Quantizer q(KvCacheFp8{.granularity = s.per_head ? KvScaleGranularity::per_head : KvScaleGranularity::per_tensor}, s.n_kv_heads);
  const ref::Mat<float> original = host;
  q.append(host, "test k_cache");
  EXPECT_EQ(scales.download(), q.scales());

  const auto codes = cache.download();
  int bad = 0;
  for (int b = 0; b < s.batch; ++b) {
    for (int t = 0; t < s.n; ++t) {
      for (int c = 0; c < width; ++c) {
        const int h = c / s.head_dim, d = c % s.head_dim;
        const std::size_t at = ((static_cast<std::size_t>(b) * s.n_kv_heads + h) * layout.capacity + 2 + t) * s.head_dim + d;
        const float scale = q.scales()[s.per_head ? h : 0];
        const std::uint8_t want = float_to_e4m3(original(b * s.n + t, c) / scale);
        if (codes[at].__x != want && ++bad <= 5) {
          ADD_FAILURE() << s.name() << " b" << b << " t" << t << " c" << c << ": " << int(codes[at].__x) << " vs " << int(want);
        }
        // The emulated cache reads back exactly the dequantized code.
        if (e4m3_to_float(codes[at].__x) * scale != host(b * s.n + t, c) && ++bad <= 5) {
          ADD_FAILURE() << s.name() << ": dequantized value differs at b" << b << " t" << t << " c" << c;
        }
      }
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST_P(KvFp8Kernels, DecodeAttentionMatchesADoubleReferenceOverTheDequantizedCache) {
  SKIP_WITHOUT_GPU();
  const Shape s = GetParam();
  const int kv_len = s.n;
  const fused::KvFp8Layout layout{s.batch, s.n_kv_heads, s.head_dim, kv_len + 5, s.per_head};
  const Bits k_rows = kv_rows(s, 11), v_rows = kv_rows(s, 12);
  auto dk = to_device(k_rows), dv = to_device(v_rows);
  const std::size_t groups = static_cast<std::size_t>(layout.scale_count());
  cuda::DeviceBuffer<float> ks(groups), vs(groups);
  fused::kv_fp8_calibrate(dk.data(), kv_len, layout, 1.0f, ks.data(), "k", nullptr);
  fused::kv_fp8_calibrate(dv.data(), kv_len, layout, 1.0f, vs.data(), "v", nullptr);
  const std::size_t cache_n = static_cast<std::size_t>(s.batch) * s.n_kv_heads * layout.capacity * s.head_dim;
  cuda::DeviceBuffer<__nv_fp8_e4m3> kc(cache_n), vc(cache_n);
  CUDA_CHECK(cudaMemset(kc.data(), 0x7f, kc.bytes()));
  CUDA_CHECK(cudaMemset(vc.data(), 0x7f, vc.bytes()));
  fused::launch_kv_fp8_append(dk.data(), kv_len, 0, layout, ks.data(), kc.data(), nullptr);
  fused::launch_kv_fp8_append(dv.data(), kv_len, 0, layout, vs.data(), vc.data(), nullptr);
  const Bits q = random_bits(static_cast<std::size_t>(s.batch) * s.n_heads * s.head_dim, 13, -1.0f, 1.0f);
  auto dq = to_device(q);
  auto out = poisoned(q.size());
  fused::KvFp8DecodeArgs a;
  a.q = dq.data();
  a.k_cache = kc.data();
  a.v_cache = vc.data();
  a.k_scales = ks.data();
  a.v_scales = vs.data();
  a.layout = layout;
  a.n_heads = s.n_heads;
  a.kv_len = kv_len;
  a.out = out.data();
  fused::launch_kv_fp8_decode_attention(a, nullptr);
  const Bits got = to_host(out);
  // The split decode (chunks of 16 positions here, merged by the second kernel) against the
  // same reference: only the FP32 order of the sums differs.
  a.chunk = 16;
  cuda::DeviceBuffer<float> partial(
      fused::kv_fp8_decode_partial_floats(s.batch, s.n_heads, s.head_dim, kv_len, a.chunk));
  partial.fill_poison();
  a.partial = partial.data();
  auto split_out = poisoned(q.size());
  a.out = split_out.data();
  fused::launch_kv_fp8_decode_attention(a, nullptr);
  const Bits split_got = to_host(split_out);

  const auto kcodes = kc.download(), vcodes = vc.download();
  const auto kscale = ks.download(), vscale = vs.download();
  std::vector<double> ref(q.size()), tol(q.size());
  const int group = s.n_heads / s.n_kv_heads, D = s.head_dim;
  for (int b = 0; b < s.batch; ++b) {
    for (int h = 0; h < s.n_heads; ++h) {
      const int g = h / group;
      const double ksc = kscale[s.per_head ? g : 0], vsc = vscale[s.per_head ? g : 0];
      auto at = [&](int p, int d) { return ((static_cast<std::size_t>(b) * s.n_kv_heads + g) * layout.capacity + p) * D + d; };
      std::vector<double> w(static_cast<std::size_t>(kv_len));
      double mx = -INFINITY, sum = 0;
      for (int p = 0; p < kv_len; ++p) {
        double dot = 0;
        for (int d = 0; d < D; ++d) dot += val(q, (static_cast<std::size_t>(b) * s.n_heads + h) * D + d) * (static_cast<double>(e4m3_to_float(kcodes[at(p, d)].__x)) * ksc);
        w[static_cast<std::size_t>(p)] = dot / std::sqrt(static_cast<double>(D));
        mx = std::max(mx, w[static_cast<std::size_t>(p)]);
      }
      for (auto& x : w) sum += (x = std::exp(x - mx));
      for (int d = 0; d < D; ++d) {
        double o = 0;
        for (int p = 0; p < kv_len; ++p) o += w[static_cast<std::size_t>(p)] * e4m3_to_float(vcodes[at(p, d)].__x) * vsc;
        const std::size_t i = (static_cast<std::size_t>(b) * s.n_heads + h) * D + d;
        ref[i] = o / sum;
        // One bf16 rounding of the output (1 ulp: the FP32 value may sit near a tie) plus
        // the FP32 sums over kv_len terms and expf's rescalings, relative to amax(v) =
        // 448 x scale: a random walk of sqrt(1031) x 2^-24 x a few, bounded by 2^-16.
        tol[i] = bf16_ulp(ref[i]) + std::ldexp(vsc * 448.0, -16);
      }
    }
  }
  expect_within("attn " + s.name(), got, ref, tol);
  expect_within("attn split in chunks of 16 " + s.name(), split_got, ref, tol);
}

// A causal chunk of n queries per sequence (the fused-cuda:fp8-kv* prefill): query t of
// `queries` sits at position kv_len - queries + t and sees the dequantized keys up to it.
TEST_P(KvFp8Kernels, CausalChunkAttentionMatchesADoubleReferenceOverTheDequantizedCache) {
  SKIP_WITHOUT_GPU();
  const Shape s = GetParam();
  const int kv_len = s.n, queries = std::min(s.n, 7);
  const fused::KvFp8Layout layout{s.batch, s.n_kv_heads, s.head_dim, kv_len + 2, s.per_head};
  auto dk = to_device(kv_rows(s, 31)), dv = to_device(kv_rows(s, 32));
  const std::size_t groups = static_cast<std::size_t>(layout.scale_count());
  cuda::DeviceBuffer<float> ks(groups), vs(groups);
  fused::kv_fp8_calibrate(dk.data(), kv_len, layout, 1.0f, ks.data(), "k", nullptr);
  fused::kv_fp8_calibrate(dv.data(), kv_len, layout, 1.0f, vs.data(), "v", nullptr);
  const std::size_t cache_n = static_cast<std::size_t>(s.batch) * s.n_kv_heads * layout.capacity * s.head_dim;
  cuda::DeviceBuffer<__nv_fp8_e4m3> kc(cache_n), vc(cache_n);
  CUDA_CHECK(cudaMemset(kc.data(), 0x7f, kc.bytes()));  // NaN codes past kv_len: a read beyond shows
  CUDA_CHECK(cudaMemset(vc.data(), 0x7f, vc.bytes()));
  fused::launch_kv_fp8_append(dk.data(), kv_len, 0, layout, ks.data(), kc.data(), nullptr);
  fused::launch_kv_fp8_append(dv.data(), kv_len, 0, layout, vs.data(), vc.data(), nullptr);
  const int D = s.head_dim, group = s.n_heads / s.n_kv_heads;
  const Bits q = random_bits(static_cast<std::size_t>(s.batch) * queries * s.n_heads * D, 33, -1.0f, 1.0f);
  auto dq = to_device(q);
  auto out = poisoned(q.size());
  fused::KvFp8DecodeArgs a;
  a.q = dq.data();
  a.k_cache = kc.data();
  a.v_cache = vc.data();
  a.k_scales = ks.data();
  a.v_scales = vs.data();
  a.layout = layout;
  a.n_heads = s.n_heads;
  a.kv_len = kv_len;
  a.n = queries;
  a.out = out.data();
  fused::launch_kv_fp8_decode_attention(a, nullptr);
  const Bits got = to_host(out);

  const auto kcodes = kc.download(), vcodes = vc.download();
  const auto kscale = ks.download(), vscale = vs.download();
  std::vector<double> ref(q.size()), tol(q.size());
  for (int b = 0; b < s.batch; ++b) {
    for (int t = 0; t < queries; ++t) {
      const int row = b * queries + t, seen = kv_len - queries + t + 1;
      for (int h = 0; h < s.n_heads; ++h) {
        const int g = h / group;
        const double ksc = kscale[s.per_head ? g : 0], vsc = vscale[s.per_head ? g : 0];
        auto at = [&](int p, int d) { return ((static_cast<std::size_t>(b) * s.n_kv_heads + g) * layout.capacity + p) * D + d; };
        std::vector<double> w(static_cast<std::size_t>(seen));
        double mx = -INFINITY, sum = 0;
        for (int p = 0; p < seen; ++p) {
          double dot = 0;
          for (int d = 0; d < D; ++d) {
            dot += val(q, (static_cast<std::size_t>(row) * s.n_heads + h) * D + d) *
                   (static_cast<double>(e4m3_to_float(kcodes[at(p, d)].__x)) * ksc);
          }
          w[static_cast<std::size_t>(p)] = dot / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, w[static_cast<std::size_t>(p)]);
        }
        for (auto& x : w) sum += (x = std::exp(x - mx));
        for (int d = 0; d < D; ++d) {
          double o = 0;
          for (int p = 0; p < seen; ++p) o += w[static_cast<std::size_t>(p)] * e4m3_to_float(vcodes[at(p, d)].__x) * vsc;
          const std::size_t i = (static_cast<std::size_t>(row) * s.n_heads + h) * D + d;
          ref[i] = o / sum;
          tol[i] = bf16_ulp(ref[i]) + std::ldexp(vsc * 448.0, -16);  // as the decode test above
        }
      }
    }
  }
  expect_within("causal attn " + s.name(), got, ref, tol);
}

// The fused path appends from its bf16 cache (strided rows) and counts what it stores:
// codes and counts as reference/kv_fp8.h's quantizer, with scales x 1/4 so that values
// clip (|x / s| up to 4 x 448) and with tiny values that flush to zero.
TEST_P(KvFp8Kernels, AppendFromACacheCountsWhatTheEmulatedQuantizerCounts) {
  SKIP_WITHOUT_GPU();
  const Shape s = GetParam();
  const int past = 2, D = s.head_dim, width = s.n_kv_heads * D;
  const fused::KvFp8Layout layout{s.batch, s.n_kv_heads, D, past + s.n + 1, s.per_head};
  const Bits rows = kv_rows(s, 41);
  // The rows as a bf16 cache holds them: [batch x kv_heads x capacity x D] at past...
  Bits cache_bits(static_cast<std::size_t>(s.batch) * s.n_kv_heads * layout.capacity * D, 0xFFFF);
  for (int b = 0; b < s.batch; ++b)
    for (int t = 0; t < s.n; ++t)
      for (int c = 0; c < width; ++c) {
        cache_bits[((static_cast<std::size_t>(b) * s.n_kv_heads + c / D) * layout.capacity + past + t) * D + c % D] =
            rows[(static_cast<std::size_t>(b) * s.n + t) * width + c];
      }
  auto d_cache = to_device(cache_bits);
  const fused::KvRows view = fused::KvRows::cache_rows(d_cache.data(), past, layout);
  const std::size_t groups = static_cast<std::size_t>(layout.scale_count());
  cuda::DeviceBuffer<float> scales(groups);
  cuda::DeviceBuffer<unsigned int> amax(groups);
  cuda::DeviceBuffer<fused::KvFp8Counters> counters(1);
  CUDA_CHECK(cudaMemset(counters.data(), 0, counters.bytes()));
  fused::launch_kv_fp8_calibrate(view, s.n, layout, 0.25f, scales.data(), amax.data(), nullptr);
  cuda::DeviceBuffer<__nv_fp8_e4m3> codes(cache_bits.size());
  CUDA_CHECK(cudaMemset(codes.data(), 0x7f, codes.bytes()));
  fused::launch_kv_fp8_append(view, s.n, past, layout, scales.data(), codes.data(), counters.data(), nullptr);

  ref::Mat<float> host(static_cast<Eigen::Index>(s.batch) * s.n, width);
  for (Eigen::Index i = 0; i < host.size(); ++i) host.data()[i] = bf16_to_float(rows[static_cast<std::size_t>(i)]);
  const ref::Mat<float> original = host;
  ref::KvFp8Quantizer q(KvCacheFp8{.granularity = s.per_head ? KvScaleGranularity::per_head : KvScaleGranularity::per_tensor,
                                   .scale_multiplier = 0.25f},
                        s.n_kv_heads);
  q.append(host, "test k_cache");
  EXPECT_EQ(scales.download(), q.scales());
  const auto got = codes.download();
  int bad = 0;
  for (int b = 0; b < s.batch; ++b)
    for (int t = 0; t < s.n; ++t)
      for (int c = 0; c < width; ++c) {
        const std::size_t at = ((static_cast<std::size_t>(b) * s.n_kv_heads + c / D) * layout.capacity + past + t) * D + c % D;
        const std::uint8_t want = float_to_e4m3(original(b * s.n + t, c) / q.scales()[s.per_head ? c / D : 0]);
        if (got[at].__x != want && ++bad <= 5) ADD_FAILURE() << s.name() << " b" << b << " t" << t << " c" << c;
      }
  EXPECT_EQ(bad, 0);
  const fused::KvFp8Counters c = counters.download()[0];
  const ref::KvFp8Stats& want = q.stats();
  EXPECT_GT(want.n_clipped, 0) << s.name() << ": the x1/4 scales must clip";
  EXPECT_EQ(static_cast<std::int64_t>(c.n_values), want.n_values) << s.name();
  EXPECT_EQ(static_cast<std::int64_t>(c.n_clipped), want.n_clipped) << s.name();
  EXPECT_EQ(static_cast<std::int64_t>(c.n_flushed), want.n_flushed) << s.name();
  EXPECT_EQ(static_cast<std::int64_t>(c.n_nonfinite), want.n_nonfinite) << s.name();
  EXPECT_EQ(static_cast<double>(std::bit_cast<float>(c.max_abs_scaled_bits)), want.max_abs_scaled) << s.name();
}

// head_dim 8 and 16 (stories260K, the odd test shapes) take part of a warp's lanes.
INSTANTIATE_TEST_SUITE_P(
    Shapes, KvFp8Kernels,
    ::testing::Values(Shape{1, 4, 2, 64, 37, false}, Shape{2, 8, 2, 128, 129, true}, Shape{3, 6, 3, 96, 1, true},
                      Shape{1, 16, 8, 128, 1031, false}, Shape{2, 9, 3, 8, 13, true}, Shape{3, 5, 1, 16, 40, false}),
    [](const ::testing::TestParamInfo<Shape>& i) { return i.param.name(); });

// The kernel-level scale delivery check: cache and attention with the calibrated scales x
// `multiplier`; `drop_scales` hands attention scales of 1 (the broken variant).
Bits attention_with_scales(const Shape& s, float multiplier, bool drop_scales) {
  const fused::KvFp8Layout layout{s.batch, s.n_kv_heads, s.head_dim, s.n, s.per_head};
  auto dk = to_device(kv_rows(s, 21)), dv = to_device(kv_rows(s, 22));
  const std::size_t groups = static_cast<std::size_t>(layout.scale_count());
  cuda::DeviceBuffer<float> ks(groups), vs(groups), ones(groups);
  fused::kv_fp8_calibrate(dk.data(), s.n, layout, multiplier, ks.data(), "k", nullptr);
  fused::kv_fp8_calibrate(dv.data(), s.n, layout, multiplier, vs.data(), "v", nullptr);
  ones.upload(std::vector<float>(groups, 1.0f));
  const std::size_t cache_n = static_cast<std::size_t>(s.batch) * s.n_kv_heads * s.n * s.head_dim;
  cuda::DeviceBuffer<__nv_fp8_e4m3> kc(cache_n), vc(cache_n);
  fused::launch_kv_fp8_append(dk.data(), s.n, 0, layout, ks.data(), kc.data(), nullptr);
  fused::launch_kv_fp8_append(dv.data(), s.n, 0, layout, vs.data(), vc.data(), nullptr);
  auto dq = to_device(random_bits(static_cast<std::size_t>(s.batch) * s.n_heads * s.head_dim, 23, -1.0f, 1.0f));
  auto out = poisoned(dq.size());
  fused::KvFp8DecodeArgs a;
  a.q = dq.data();
  a.k_cache = kc.data();
  a.v_cache = vc.data();
  a.k_scales = drop_scales ? ones.data() : ks.data();
  a.v_scales = drop_scales ? ones.data() : vs.data();
  a.layout = layout;
  a.n_heads = s.n_heads;
  a.kv_len = s.n;
  a.out = out.data();
  fused::launch_kv_fp8_decode_attention(a, nullptr);
  return to_host(out);
}

// Out-of-tolerance elements of `got` against `base`: powers-of-two multipliers change only
// the values pushed into E4M3's subnormals, so 2 bf16 ulps plus 2^-10 of the output's
// largest magnitude cover them.
int moved(const Bits& got, const Bits& base) {
  double amax = 0;
  for (std::size_t i = 0; i < base.size(); ++i) amax = std::max(amax, std::fabs(val(base, i)));
  int n = 0;
  for (std::size_t i = 0; i < base.size(); ++i) {
    if (!(std::fabs(val(got, i) - val(base, i)) <= 2 * bf16_ulp(val(base, i)) + std::ldexp(amax, -10))) ++n;
  }
  return n;
}

TEST_P(KvFp8Kernels, ScaleDeliveryMultipliersKeepTheOutputAndDroppedScalesAreCaught) {
  SKIP_WITHOUT_GPU();
  const Shape s = GetParam();
  const Bits x1 = attention_with_scales(s, 1.0f, false);
  EXPECT_EQ(moved(attention_with_scales(s, 4.0f, false), x1), 0) << s.name() << " x4";
  EXPECT_EQ(moved(attention_with_scales(s, 16.0f, false), x1), 0) << s.name() << " x16";
  const Bits broken_x1 = attention_with_scales(s, 1.0f, true);
  EXPECT_GT(moved(attention_with_scales(s, 16.0f, true), broken_x1), static_cast<int>(x1.size() / 2))
      << s.name() << ": dropped scales must move the output with the multiplier";
}

TEST(KvFp8KernelsErrors, ZeroRowsGiveAClearScaleError) {
  SKIP_WITHOUT_GPU();
  const fused::KvFp8Layout layout{1, 2, 32, 8, true};
  const Bits zeros(2 * 64, float_to_bf16(0.0f));
  Bits mixed = integer_bits(2 * 64, 5, 1, 9);
  for (std::size_t i = 0; i < mixed.size(); ++i) {
    if ((i % 64) >= 32) mixed[i] = zeros[i];  // kv head 1 all zero
  }
  auto d = to_device(mixed);
  cuda::DeviceBuffer<float> scales(2);
  try {
    fused::kv_fp8_calibrate(d.data(), 2, layout, 1.0f, scales.data(), "layer 5 v_cache", nullptr);
    FAIL() << "no error for an all-zero kv head";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 5 v_cache scale of kv head 1 is 0"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fusecheck::test
