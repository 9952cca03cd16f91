// The fp8-w8a8 GEMMs on the device (kernels/fused/w8a8.h) against the emulated twin
// (reference/w8a8.h). Host checks (always run): cuBLASLt's FP8 layout rules refused with the
// shape named, the scale floor shared with the twin. GPU checks (skip without an FP8 device):
//   - row quantization: codes and scales bit for bit, bf16 and FP32 inputs, rows with
//     outliers, an all-zero row (the floor scale), tiny rows, ties, saturation; NaN / Inf rows
//     an error naming the row;
//   - the GEMM, exact: small-integer E4M3 codes (every FP32 sum exact in any order), arbitrary
//     scales: the twin-order variant bit for bit; cuBLASLt's outer-vector scaling compared
//     with the twin's order (printed: "outer-vector scales:");
//   - the GEMM at the llama-3-8b / qwen3-8b projection shapes, M = 1, 8, 64, 512, on sampled
//     output channels: weight and activation codes bit for bit, the FP32 accumulator within
//     the FP32 summation bound of the exact sum (printed: "acc error / bound"), the output
//     within the derived bound of the twin and of a double reference.
#include <cuda_fp8.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fused_test_util.h"
#include "harness/core/error.h"
#include "harness/core/fp8.h"
#include "kernels/common/random_fill.h"
#include "kernels/fused/w8a8.h"
#include "reference/w8a8.h"

namespace fusecheck::test {
namespace {

using fused::Fp8Gemm;
using fused::Fp8RowCheck;
using fused::Fp8Weight;
using Codes = std::vector<__nv_fp8_e4m3>;

constexpr double kU32 = 0x1p-24;  // unit roundoff of FP32

// gamma_K = K u / (1 - K u): |fl(sum) - sum| <= gamma_K * sum |p_i| for FP32 recursive
// summation of K terms in ANY order and any tree (Higham, Thm 4.4 and its pairwise form);
// cuBLASLt's split-K, tile order and the twin's Eigen blocking are all such orders.
double gamma32(int K) { return K * kU32 / (1 - K * kU32); }

bool fp8_device(std::string& why) {
  if (cuda::visible_device_count() == 0) {
    why = cuda::no_device_reason();
    return false;
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  if (prop.major * 10 + prop.minor < 89) {
    why = std::string(prop.name) + " has compute capability " + std::to_string(prop.major) + "." +
          std::to_string(prop.minor) + ", FP8 needs 8.9";
    return false;
  }
  return true;
}
#define SKIP_WITHOUT_FP8_GPU()                 \
  do {                                         \
    std::string why_;                          \
    if (!fp8_device(why_)) GTEST_SKIP() << why_; \
  } while (0)

std::uint8_t code_of(__nv_fp8_e4m3 c) { return c.__x; }
__nv_fp8_e4m3 e4m3_of(std::uint8_t c) { return std::bit_cast<__nv_fp8_e4m3>(c); }

// ---------------------------------------------------------------- host checks

TEST(W8a8Layout, KNotAMultipleOf16IsRefusedNamingK) {
  try {
    fused::check_fp8_gemm_layout(1, 4096, 4100, nullptr, nullptr, nullptr);
    FAIL() << "K = 4100 accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("K = 4100"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("multiple of 16"), std::string::npos) << e.what();
  }
}

TEST(W8a8Layout, NNotAMultipleOf16IsRefusedNamingN) {
  try {
    fused::check_fp8_gemm_layout(8, 4104, 4096, nullptr, nullptr, nullptr);
    FAIL() << "N = 4104 accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("N = 4104"), std::string::npos) << e.what();
  }
}

TEST(W8a8Layout, MisalignedPointerIsRefusedNamingTheOperand) {
  alignas(16) static unsigned char buf[64];
  try {
    fused::check_fp8_gemm_layout(1, 16, 16, buf + 8, buf, buf);
    FAIL() << "pointer at offset 8 accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("activation codes"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("16-byte"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fused::check_fp8_gemm_layout(1, 16, 16, buf, buf, buf + 4), InputError);
  EXPECT_NO_THROW(fused::check_fp8_gemm_layout(1, 16, 16, buf, buf + 16, buf + 32));
}

TEST(W8a8Layout, EmptyShapeIsRefused) {
  EXPECT_THROW(fused::check_fp8_gemm_layout(0, 16, 16, nullptr, nullptr, nullptr), InputError);
  EXPECT_THROW(fused::check_fp8_gemm_layout(1, 16, -16, nullptr, nullptr, nullptr), InputError);
}

TEST(W8a8Scales, DeviceFloorIsTheTwinsFloor) {
  EXPECT_EQ(std::bit_cast<std::uint32_t>(fused::kW8a8MinRowScale), std::bit_cast<std::uint32_t>(ref::kFp8MinRowScale));
}

// ---------------------------------------------------------------- row quantization

struct QuantCase {
  int rows, cols;
  bool fp32_input;
  std::string name() const {
    return std::string(fp32_input ? "f32" : "bf16") + "_r" + std::to_string(rows) + "_c" + std::to_string(cols);
  }
};

// Rows that reach every branch of the scale and the conversion: row 0 all zeros (floor
// scale, zero codes), row 1 tiny (amax < 2^-9: floor scale, subnormal codes), row 2 one
// outlier 1e4x the rest (most codes subnormal or flushed), row 3 amax 448 (scale 1) with
// E4M3 midpoints (ties to even), then rows of random magnitude 10^[-3, 3]. FP32 inputs keep
// all 24 bits (no bf16 rounding), so the division sees full-precision values.
std::vector<float> quant_rows(const QuantCase& c, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f), mag(-3.0f, 3.0f);
  std::vector<float> x(static_cast<std::size_t>(c.rows) * c.cols);
  for (int r = 0; r < c.rows; ++r) {
    float* row = x.data() + static_cast<std::size_t>(r) * c.cols;
    const float scale = std::pow(10.0f, mag(rng));
    for (int j = 0; j < c.cols; ++j) {
      float v = u(rng);
      switch (r) {
        case 0: v = 0; break;
        case 1: v *= 1e-4f; break;
        case 2: v = j == c.cols / 2 ? 1e4f : v; break;
        case 3: {
          static const float ties[] = {448.0f, 1.0625f, -17.0f, 432.0f, 0.0068359375f, -3.25f, 0.009765625f};
          v = ties[j % 7];
          break;
        }
        default: v *= scale;
      }
      row[j] = c.fp32_input ? v : round_to_bf16(v);
    }
  }
  return x;
}

class W8a8Quantize : public ::testing::TestWithParam<QuantCase> {};

TEST_P(W8a8Quantize, CodesAndScalesMatchTheTwinBitForBit) {
  SKIP_WITHOUT_FP8_GPU();
  const QuantCase c = GetParam();
  const std::vector<float> x = quant_rows(c, 4242 + c.rows);
  const std::size_t n = x.size();
  cuda::DeviceBuffer<__nv_fp8_e4m3> codes(n);
  CUDA_CHECK(cudaMemset(codes.data(), 0x7f, codes.bytes()));  // NaN codes: an unwritten code shows
  cuda::DeviceBuffer<float> scales(static_cast<std::size_t>(c.rows));
  scales.fill_poison();
  Fp8RowCheck check;
  check.arm(nullptr);
  cuda::DeviceBuffer<float> in_f32;
  cuda::DeviceBuffer<bf16> in_bf16;
  if (c.fp32_input) {
    in_f32.upload(x);
    fused::launch_quantize_rows_e4m3(in_f32.data(), c.rows, c.cols, codes.data(), scales.data(), check.flag(), nullptr);
  } else {
    Bits b(n);
    for (std::size_t i = 0; i < n; ++i) b[i] = float_to_bf16(x[i]);
    in_bf16 = to_device(b);
    fused::launch_quantize_rows_e4m3(in_bf16.data(), c.rows, c.cols, codes.data(), scales.data(), check.flag(), nullptr);
  }
  EXPECT_NO_THROW(check.check("test rows", nullptr));

  ref::Mat<float> twin(c.rows, c.cols);
  std::memcpy(twin.data(), x.data(), n * sizeof(float));
  ref::Fp8Stats stats;
  const std::vector<float> twin_scales = ref::quantize_rows_e4m3(twin, stats, "test rows");
  const std::vector<float> got_scales = scales.download();
  for (int r = 0; r < c.rows; ++r) {
    EXPECT_EQ(std::bit_cast<std::uint32_t>(got_scales[r]), std::bit_cast<std::uint32_t>(twin_scales[r]))
        << c.name() << " row " << r << ": scale " << got_scales[r] << ", twin " << twin_scales[r];
  }
  EXPECT_EQ(got_scales[0], ref::kFp8MinRowScale) << "the all-zero row takes the floor";
  EXPECT_EQ(got_scales[1], ref::kFp8MinRowScale) << "a row with amax < 2^-9 takes the floor";
  EXPECT_EQ(got_scales[3], 1.0f) << "amax 448 gives scale 1";

  // The twin leaves e4m3_to_float(code) in place of each value: compare those bits (so +0
  // and -0 differ), which is code equality here (no NaN codes from finite rows).
  const Codes got = codes.download();
  int bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const float v = e4m3_to_float(code_of(got[i]));
    if (std::bit_cast<std::uint32_t>(v) != std::bit_cast<std::uint32_t>(twin.data()[i]) && ++bad <= 5) {
      ADD_FAILURE() << c.name() << " row " << i / c.cols << " col " << i % c.cols << ": x = " << x[i] << ", code "
                    << int(code_of(got[i])) << " (" << v << "), twin " << twin.data()[i];
    }
  }
  EXPECT_EQ(bad, 0) << c.name() << ": codes differing from the twin, of " << n;
  // ~2% of the outlier row's values fall below half the smallest subnormal: on wide rows the
  // flush branch is reached for sure.
  if (c.cols >= 1000) {
    EXPECT_GT(stats.n_flushed, 0) << "the outlier row must flush some values";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, W8a8Quantize,
                         // bf16 rows of 8k values up to 16384 take the vectorized kernel, the
                         // others (and FP32) the plain one: both are covered.
                         ::testing::Values(QuantCase{7, 4096, false}, QuantCase{7, 4096, true},
                                           QuantCase{5, 1000, false}, QuantCase{5, 1001, false},
                                           QuantCase{6, 17, true}, QuantCase{67, 14336, false},
                                           QuantCase{9, 12288, true}, QuantCase{4, 16392, false}),
                         [](const auto& info) { return info.param.name(); });

TEST(W8a8QuantizeErrors, NanOrInfRowIsAnErrorNamingTheRowAndItsScaleIsNan) {
  SKIP_WITHOUT_FP8_GPU();
  const int rows = 6, cols = 40;
  std::vector<float> x(static_cast<std::size_t>(rows) * cols, 0.5f);
  x[4 * cols + 7] = std::numeric_limits<float>::infinity();
  x[5 * cols + 1] = std::numeric_limits<float>::quiet_NaN();
  cuda::DeviceBuffer<float> in;
  in.upload(x);
  cuda::DeviceBuffer<__nv_fp8_e4m3> codes(x.size());
  cuda::DeviceBuffer<float> scales(rows);
  Fp8RowCheck check;
  check.arm(nullptr);
  fused::launch_quantize_rows_e4m3(in.data(), rows, cols, codes.data(), scales.data(), check.flag(), nullptr);
  try {
    check.check("layer 3 down input", nullptr);
    FAIL() << "an Inf row passed";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 3 down input row 4"), std::string::npos) << e.what();
  }
  const auto s = scales.download();
  EXPECT_TRUE(std::isnan(s[4]) && std::isnan(s[5]));
  EXPECT_EQ(s[0], 0.5f / 448.0f);
  // Re-armed, a clean launch passes.
  check.arm(nullptr);
  fused::launch_quantize_rows_e4m3(in.data(), 4, cols, codes.data(), scales.data(), check.flag(), nullptr);
  EXPECT_NO_THROW(check.check("layer 3 down input", nullptr));
}

TEST(W8a8QuantizeErrors, WeightWithNanIsAnErrorNamingTheChannel) {
  SKIP_WITHOUT_FP8_GPU();
  Bits w = random_bits(32 * 16, 77, -1.0f, 1.0f);
  w[19 * 16 + 3] = 0x7fc0;  // bf16 NaN
  auto d = to_device(w);
  try {
    fused::quantize_weight_e4m3(d.data(), 32, 16, "layer 0 q", nullptr);
    FAIL() << "a NaN weight passed";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 0 q (output channel) row 19"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- GEMM, exact

struct ExactCase {
  int M, N, K;
  bool bias;
  std::string name() const {
    return "M" + std::to_string(M) + "_N" + std::to_string(N) + "_K" + std::to_string(K) + (bias ? "_bias" : "");
  }
};

class W8a8GemmExact : public ::testing::TestWithParam<ExactCase> {};

// Codes of integers in [-4, 4]: products <= 16, every partial sum an integer below 2^17, exact
// in FP32 and in the tensor core's accumulator whatever the order; so acc is exact and the
// output must equal the twin's epilogue a_s[m] * (w_s[n] * acc) (reference/w8a8.h,
// fp8_scaled_gemm) bit for bit, bf16 and FP32. Scales are random FP32 (no powers of two) so
// that the multiplication order shows.
TEST_P(W8a8GemmExact, TwinOrderVariantMatchesTheTwinBitForBit) {
  SKIP_WITHOUT_FP8_GPU();
  const ExactCase c = GetParam();
  std::mt19937_64 rng(99 + c.M);
  std::uniform_int_distribution<int> small(-4, 4);
  std::uniform_real_distribution<float> scale(1e-4f, 1e-2f);
  std::vector<std::uint8_t> a8(static_cast<std::size_t>(c.M) * c.K), w8(static_cast<std::size_t>(c.N) * c.K);
  for (auto& v : a8) v = float_to_e4m3(static_cast<float>(small(rng)));
  for (auto& v : w8) v = float_to_e4m3(static_cast<float>(small(rng)));
  std::vector<float> a_s(c.M), w_s(c.N);
  for (auto& s : a_s) s = scale(rng);
  for (auto& s : w_s) s = scale(rng);
  Bits bias = integer_bits(static_cast<std::size_t>(c.N), 5, -3, 3);

  Codes a_codes(a8.size()), w_codes(w8.size());
  std::transform(a8.begin(), a8.end(), a_codes.begin(), e4m3_of);
  std::transform(w8.begin(), w8.end(), w_codes.begin(), e4m3_of);
  cuda::DeviceBuffer<__nv_fp8_e4m3> d_a;
  d_a.upload(a_codes);
  Fp8Weight w;
  w.n = c.N;
  w.k = c.K;
  w.codes.upload(w_codes);
  w.scales.upload(w_s);
  cuda::DeviceBuffer<float> d_as;
  d_as.upload(a_s);
  auto d_bias = to_device(bias);
  const std::size_t out_n = static_cast<std::size_t>(c.M) * c.N;
  cuda::DeviceBuffer<float> acc(out_n), y32(out_n);
  auto y16 = poisoned(out_n);
  y32.fill_poison();

  Fp8Gemm gemm;
  const bf16* b = c.bias ? d_bias.data() : nullptr;
  gemm.run(d_a.data(), d_as.data(), w, c.M, b, acc.data(), y16.data(), false, nullptr);
  gemm.run(d_a.data(), d_as.data(), w, c.M, b, acc.data(), y32.data(), true, nullptr);
  const Bits got16 = to_host(y16);
  const std::vector<float> got32 = y32.download();

  std::vector<std::int64_t> a_int(a8.size()), w_int(w8.size());
  std::transform(a8.begin(), a8.end(), a_int.begin(), [](std::uint8_t v) { return std::int64_t(e4m3_to_float(v)); });
  std::transform(w8.begin(), w8.end(), w_int.begin(), [](std::uint8_t v) { return std::int64_t(e4m3_to_float(v)); });
  int bad = 0;
  std::vector<float> exact_acc(out_n);
  for (int m = 0; m < c.M; ++m) {
    for (int n = 0; n < c.N; ++n) {
      std::int64_t sum = 0;
      for (int k = 0; k < c.K; ++k) {
        sum += a_int[static_cast<std::size_t>(m) * c.K + k] * w_int[static_cast<std::size_t>(n) * c.K + k];
      }
      const std::size_t i = static_cast<std::size_t>(m) * c.N + n;
      exact_acc[i] = static_cast<float>(sum);
      // The twin's epilogue, as reference/w8a8.h writes it, then the bias in FP32.
      float y = a_s[m] * (w_s[n] * exact_acc[i]);
      if (c.bias) y = y + bf16_to_float(bias[n]);
      if ((std::bit_cast<std::uint32_t>(got32[i]) != std::bit_cast<std::uint32_t>(y) ||
           got16[i] != float_to_bf16(y)) && ++bad <= 5) {
        ADD_FAILURE() << c.name() << " [" << m << "," << n << "]: fp32 " << got32[i] << " bf16 " << bf16_to_float(got16[i])
                      << ", twin " << y << " (acc " << sum << ")";
      }
    }
  }
  EXPECT_EQ(bad, 0) << c.name() << ": elements differing from the twin, of " << out_n;
  EXPECT_NE(std::count(exact_acc.begin(), exact_acc.end(), 0.0f), static_cast<long>(out_n)) << "all-zero products";

  // cuBLASLt's own per-row / per-column scaling on the same codes: report which order it
  // matches (bit for bit against each candidate), require it within one bf16 ulp of the twin.
  const std::string why_not = gemm.outer_scaled_unsupported(c.M, c.N, c.K);
  if (!why_not.empty() || c.bias) {
    if (!c.bias) std::printf("outer-vector scales: not supported: %s\n", why_not.c_str());
    return;
  }
  auto outer = poisoned(out_n);
  try {
    gemm.run_outer_scaled(d_a.data(), d_as.data(), w, c.M, outer.data(), nullptr);
  } catch (const std::exception& e) {  // the heuristic offered it but the launch refused it
    std::printf("outer-vector scales: not supported: %s\n", e.what());
    return;
  }
  const Bits got_outer = to_host(outer);
  long same_twin = 0, same_aw_first = 0, same_a_first = 0, far = 0;
  for (int m = 0; m < c.M; ++m) {
    for (int n = 0; n < c.N; ++n) {
      const std::size_t i = static_cast<std::size_t>(m) * c.N + n;
      const float acc_i = exact_acc[i];
      const float twin = a_s[m] * (w_s[n] * acc_i);
      same_twin += got_outer[i] == float_to_bf16(twin);
      same_aw_first += got_outer[i] == float_to_bf16((a_s[m] * w_s[n]) * acc_i);
      same_a_first += got_outer[i] == float_to_bf16(w_s[n] * (a_s[m] * acc_i));
      far += !(std::fabs(bf16_to_float(got_outer[i]) - twin) <= bf16_ulp(twin));
    }
  }
  std::printf("outer-vector scales: %s: bf16 equal to the twin's a*(w*acc) %ld, (a*w)*acc %ld, w*(a*acc) %ld of %zu\n",
              c.name().c_str(), same_twin, same_aw_first, same_a_first, out_n);
  EXPECT_EQ(far, 0) << c.name() << ": cuBLASLt-scaled outputs more than one bf16 ulp from the twin";
}

INSTANTIATE_TEST_SUITE_P(Shapes, W8a8GemmExact,
                         ::testing::Values(ExactCase{1, 16, 16, false}, ExactCase{5, 48, 272, false},
                                           ExactCase{5, 48, 272, true}, ExactCase{67, 1024, 4112, false}),
                         [](const auto& info) { return info.param.name(); });

// ---------------------------------------------------------------- GEMM, model shapes

// qwen3-8b's q|k|v and o_proj are llama-3-8b's (4096 hidden, 32/8 heads of 128): listed once.
struct Projection {
  const char* model;
  const char* gemm;
  int N, K;
  bool fp32_out;  // fused-v1 keeps gate|up and down in FP32 inside their kernels
};
constexpr Projection kProjections[] = {
    {"llama3_8b", "qkv", 6144, 4096, false},     {"llama3_8b", "o", 4096, 4096, false},
    {"llama3_8b", "gate_up", 28672, 4096, true}, {"llama3_8b", "down", 4096, 14336, true},
    {"qwen3_8b", "gate_up", 24576, 4096, true},  {"qwen3_8b", "down", 4096, 12288, true},
};

struct ModelCase {
  Projection p;
  int M;
  std::string name() const { return std::string(p.model) + "_" + p.gemm + "_N" + std::to_string(p.N) + "_K" +
                                    std::to_string(p.K) + "_M" + std::to_string(M); }
};

std::vector<ModelCase> model_cases() {
  std::vector<ModelCase> v;
  for (const Projection& p : kProjections)
    for (int M : {1, 8, 64, 512}) v.push_back({p, M});
  return v;
}

// Output channels checked against the twin: the edges, the middle, and ~128 spread over N
// at a prime stride (the twin's per-channel quantization makes a subset exact to check).
std::vector<int> sampled_channels(int N) {
  std::vector<int> ch = {0, 1, N / 2, N - 1};
  for (int n = 7; n < N; n += std::max(1, N / 128) + 3) ch.push_back(n);
  std::sort(ch.begin(), ch.end());
  ch.erase(std::unique(ch.begin(), ch.end()), ch.end());
  return ch;
}

// Activations as GEMM inputs look: most channels O(1), a few outlier channels 40x, row
// magnitudes spread over 10^[-2, 1], and (M > 1) one all-zero row (padding: the floor scale).
Bits activations(int M, int K, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f), mag(-2.0f, 1.0f);
  Bits b(static_cast<std::size_t>(M) * K);
  for (int m = 0; m < M; ++m) {
    const float row_scale = (M > 1 && m == M / 2) ? 0.0f : std::pow(10.0f, mag(rng));
    for (int k = 0; k < K; ++k) {
      const float gain = (k % 997 == 13) ? 40.0f : 1.0f;
      b[static_cast<std::size_t>(m) * K + k] = float_to_bf16(u(rng) * gain * row_scale);
    }
  }
  return b;
}

// A sampled weight row: magnitude 10^[-3, 0] per channel, one outlier value in every fifth
// row, channel N - 1 all zeros (a pruned channel: the floor scale, zero outputs).
std::vector<std::uint16_t> weight_row(int n, int N, int K, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f), mag(-3.0f, 0.0f);
  const float s = n == N - 1 ? 0.0f : std::pow(10.0f, mag(rng));
  std::vector<std::uint16_t> row(K);
  for (int k = 0; k < K; ++k) row[k] = float_to_bf16(u(rng) * s * ((n % 5 == 2 && k == n % K) ? 30.0f : 1.0f));
  return row;
}

class W8a8GemmModel : public ::testing::TestWithParam<ModelCase> {};

TEST_P(W8a8GemmModel, MatchesTheTwinWithinTheFp32SummationBound) {
  SKIP_WITHOUT_FP8_GPU();
  const ModelCase c = GetParam();
  const int M = c.M, N = c.p.N, K = c.p.K;
  const std::vector<int> ch = sampled_channels(N);
  const int S = static_cast<int>(ch.size());

  // Weight: seeded device fill, the sampled channels overwritten with host rows.
  cuda::DeviceBuffer<bf16> w_bf16(static_cast<std::size_t>(N) * K);
  cuda::fill_uniform(w_bf16.data(), w_bf16.size(), 1234 + N, -0.05f, 0.05f);
  std::mt19937_64 rng(777 + N + K);
  ref::Mat<float> w_sampled(S, K);
  for (int s = 0; s < S; ++s) {
    const auto row = weight_row(ch[s], N, K, rng);
    CUDA_CHECK(cudaMemcpy(w_bf16.data() + static_cast<std::size_t>(ch[s]) * K, row.data(), K * 2, cudaMemcpyHostToDevice));
    for (int k = 0; k < K; ++k) w_sampled(s, k) = bf16_to_float(row[k]);
  }
  const Bits x = activations(M, K, 31 + M);
  auto d_x = to_device(x);

  // Device: weight once, then the call's quantization, GEMM and epilogue.
  const Fp8Weight w = fused::quantize_weight_e4m3(w_bf16.data(), N, K, c.name() + " weight", nullptr);
  cuda::DeviceBuffer<__nv_fp8_e4m3> a8(static_cast<std::size_t>(M) * K);
  cuda::DeviceBuffer<float> a_s(M), acc(static_cast<std::size_t>(M) * N);
  cuda::DeviceBuffer<float> y32(c.p.fp32_out ? static_cast<std::size_t>(M) * N : 0);
  auto y16 = poisoned(c.p.fp32_out ? 0 : static_cast<std::size_t>(M) * N);
  if (c.p.fp32_out) y32.fill_poison();
  acc.fill_poison();
  Fp8RowCheck check;
  check.arm(nullptr);
  fused::launch_quantize_rows_e4m3(d_x.data(), M, K, a8.data(), a_s.data(), check.flag(), nullptr);
  check.check(c.name() + " input", nullptr);
  Fp8Gemm gemm;
  gemm.run(a8.data(), a_s.data(), w, M, nullptr, acc.data(),
           c.p.fp32_out ? static_cast<void*>(y32.data()) : static_cast<void*>(y16.data()), c.p.fp32_out, nullptr);
  const std::vector<float> got_acc = acc.download();
  std::vector<float> got_y(static_cast<std::size_t>(M) * N);
  if (c.p.fp32_out) {
    got_y = y32.download();
  } else {
    const Bits b = to_host(y16);
    for (std::size_t i = 0; i < b.size(); ++i) got_y[i] = bf16_to_float(b[i]);
  }
  const Codes got_a8 = a8.download(), got_w8 = w.codes.download();
  const std::vector<float> got_as = a_s.download(), got_ws = w.scales.download();

  // Twin: weight rows quantized per channel, the input per row, FP32 GEMM and epilogue.
  ref::Fp8Stats w_stats, a_stats;
  ref::Mat<float> w8_twin = w_sampled;
  const std::vector<float> ws_twin = ref::quantize_rows_e4m3(w8_twin, w_stats, "twin weight");
  ref::Mat<float> x_twin(M, K);
  for (Eigen::Index i = 0; i < x_twin.size(); ++i) x_twin.data()[i] = bf16_to_float(x[static_cast<std::size_t>(i)]);
  ref::Mat<float> a8_twin = x_twin;
  const std::vector<float> as_twin = ref::quantize_rows_e4m3(a8_twin, a_stats, "twin input");
  const ref::Mat<float> y_twin = ref::fp8_scaled_gemm(x_twin, w8_twin, ws_twin, a_stats, "twin input");

  // Codes and scales bit for bit (weights on the sampled channels, activations all).
  int bad_codes = 0;
  for (int s = 0; s < S; ++s) {
    bad_codes += std::bit_cast<std::uint32_t>(got_ws[ch[s]]) != std::bit_cast<std::uint32_t>(ws_twin[s]);
    for (int k = 0; k < K; ++k) {
      const float v = e4m3_to_float(code_of(got_w8[static_cast<std::size_t>(ch[s]) * K + k]));
      bad_codes += std::bit_cast<std::uint32_t>(v) != std::bit_cast<std::uint32_t>(w8_twin(s, k));
    }
  }
  for (int m = 0; m < M; ++m) {
    bad_codes += std::bit_cast<std::uint32_t>(got_as[m]) != std::bit_cast<std::uint32_t>(as_twin[m]);
    for (int k = 0; k < K; ++k) {
      const float v = e4m3_to_float(code_of(got_a8[static_cast<std::size_t>(m) * K + k]));
      bad_codes += std::bit_cast<std::uint32_t>(v) != std::bit_cast<std::uint32_t>(a8_twin(m, k));
    }
  }
  EXPECT_EQ(bad_codes, 0) << c.name() << ": codes or scales differing from the twin";

  // Per element: the exact sum (every E4M3 product has <= 8 significant bits between 2^-18
  // and 2^18, so a double sum of K <= 2^14 of them is exact), sum|p|, and the bounds:
  //   acc:       |acc - exact| <= gamma_K sum|p|                  (any FP32 order)
  //   vs twin:   |y - y_twin| <= |a_s w_s| (2 gamma_K sum|p| (1 + 2.01u) + 4.01u |acc|)
  //              (both sums within gamma_K sum|p| of the exact one; two epilogue roundings each)
  //   vs double: |y - a_s w_s exact| <= |a_s w_s| (gamma_K sum|p| (1 + 2.01u) + 2.01u |exact|)
  //              (fused::w8a8_reference_tolerance)
  //   a bf16 output adds one bf16 ulp of the larger magnitude (each side rounds by half).
  const double g = gamma32(K);
  double worst_acc_ratio = 0, worst_twin_ratio = 0, ref_norm = 0;
  int bad_acc = 0, bad_twin = 0, bad_ref = 0, non_finite = 0;
  for (int m = 0; m < M; ++m) {
    for (int s = 0; s < S; ++s) {
      const int n = ch[s];
      const std::size_t i = static_cast<std::size_t>(m) * N + n;
      double exact = 0, abs_sum = 0;
      for (int k = 0; k < K; ++k) {
        const double p = static_cast<double>(a8_twin(m, k)) * w8_twin(s, k);
        exact += p;
        abs_sum += std::fabs(p);
      }
      const double sc = static_cast<double>(as_twin[m]) * ws_twin[s];
      const double yt = y_twin(m, s), y64 = sc * exact;
      ref_norm += y64 * y64;
      if (!std::isfinite(got_y[i]) || !std::isfinite(got_acc[i])) {
        if (++non_finite <= 3) ADD_FAILURE() << c.name() << " [" << m << "," << n << "] not finite";
        continue;
      }
      const double acc_err = std::fabs(got_acc[i] - exact), acc_bound = g * abs_sum;
      if (acc_bound > 0) worst_acc_ratio = std::max(worst_acc_ratio, acc_err / acc_bound);
      if (!(acc_err <= acc_bound) && ++bad_acc <= 3) {
        ADD_FAILURE() << c.name() << " acc[" << m << "," << n << "] = " << got_acc[i] << ", exact " << exact
                      << ", bound " << acc_bound;
      }
      const double bf16_term = c.p.fp32_out ? 0.0 : 1.0;
      double tol_twin = std::fabs(sc) * (2 * g * abs_sum * (1 + 2.01 * kU32) + 4.01 * kU32 * std::fabs(got_acc[i]));
      tol_twin += bf16_term * bf16_ulp(std::fabs(yt) + tol_twin);
      const double tol_ref = fused::w8a8_reference_tolerance(K, sc, abs_sum, exact, !c.p.fp32_out);
      const double yt_rounded = c.p.fp32_out ? yt : bf16_to_float(float_to_bf16(static_cast<float>(yt)));
      const double d_twin = std::fabs(got_y[i] - yt_rounded);
      if (tol_twin > 0) worst_twin_ratio = std::max(worst_twin_ratio, d_twin / tol_twin);
      if (!(d_twin <= tol_twin) && ++bad_twin <= 3) {
        ADD_FAILURE() << c.name() << " y[" << m << "," << n << "] = " << got_y[i] << ", twin " << yt_rounded
                      << ", tolerance " << tol_twin;
      }
      if (!(std::fabs(got_y[i] - y64) <= tol_ref) && ++bad_ref <= 3) {
        ADD_FAILURE() << c.name() << " y[" << m << "," << n << "] = " << got_y[i] << ", double " << y64
                      << ", tolerance " << tol_ref;
      }
    }
  }
  EXPECT_GT(ref_norm, 0) << "reference all zeros: the test would pass by accident";
  EXPECT_EQ(non_finite + bad_acc + bad_twin + bad_ref, 0)
      << c.name() << ": non-finite " << non_finite << ", acc " << bad_acc << ", twin " << bad_twin << ", double "
      << bad_ref << " of " << M * S;
  std::printf("acc error / bound: %s: max |acc - exact| / (gamma_K sum|p|) = %.3g, max |y - twin| / tolerance = %.3g\n",
              c.name().c_str(), worst_acc_ratio, worst_twin_ratio);
  RecordProperty("acc_error_over_bound", std::to_string(worst_acc_ratio));
}

INSTANTIATE_TEST_SUITE_P(Projections, W8a8GemmModel, ::testing::ValuesIn(model_cases()),
                         [](const auto& info) { return info.param.name(); });

}  // namespace
}  // namespace fusecheck::test
