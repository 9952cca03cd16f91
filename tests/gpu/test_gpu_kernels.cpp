// Unit tests of the one-kernel-per-op CUDA kernels (kernels/standard/ops.h) and the cuBLAS
// GEMM wrapper, for float and bf16 storage: bit-exact checks on small integers at awkward
// sizes (odd, prime, vector and scalar paths, misaligned pointers), statistical checks on
// seeded random data against host FP64/FP32 references, and sentinels past every output.
// These small cases are also what scripts/gpu-test runs under compute-sanitizer.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "kernels/common/cublas_handle.h"
#include "kernels/common/gemm.h"
#include "kernels/common/random_fill.h"
#include "kernels/standard/ops.h"
#include "tests/gpu/gpu_test_util.h"

namespace fusecheck::gpu_test {
namespace {

namespace ops = cuda::ops;

// Sentinel elements after each output; 0xFF bytes are NaN in float and bf16.
constexpr std::size_t kSentinel = 37;

template <class T>
bool is_poison(T v) {
  unsigned char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  return std::all_of(b, b + sizeof(T), [](unsigned char c) { return c == 0xFF; });
}

// An output buffer of n elements plus sentinels, poisoned; check() downloads the n values
// and fails if any sentinel was written or any output left unwritten.
template <class T>
struct Output {
  explicit Output(std::size_t n) : n(n), buf(n + kSentinel) { buf.fill_poison(); }
  T* data() { return buf.data(); }
  std::vector<float> check() {
    std::vector<T> all = buf.download();
    for (std::size_t i = n; i < all.size(); ++i) {
      EXPECT_TRUE(is_poison(all[i])) << "sentinel " << i - n << " past the output was written";
    }
    all.resize(n);
    std::vector<float> f = to_float(all);
    const auto unwritten = std::count_if(all.begin(), all.end(), [](T v) { return is_poison(v); });
    EXPECT_EQ(unwritten, 0) << "output elements left unwritten";
    return f;
  }
  std::size_t n;
  cuda::DeviceBuffer<T> buf;
};

template <class T>
class Kernels : public ::testing::Test {
 protected:
  void SetUp() override { FUSECHECK_REQUIRE_GPU(); }
};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(Kernels, StorageTypes);

// ------------------------------------------------------------------ RMSNorm
// Rows of +-2 have mean(x^2) = 4, so with eps = 0 the scale is exactly 0.5 and
// w * x * 0.5 with small-integer w is exact in both formats.
TYPED_TEST(Kernels, RmsNormIsExactOnRowsOfPlusMinusTwo) {
  using T = TypeParam;
  for (int cols : {7, 13, 96, 1003, 4096}) {  // scalar (odd) and 16-byte vector paths
    const int rows = 5;
    std::vector<float> x = small_integers(static_cast<std::size_t>(rows) * cols, cols, 1);
    for (float& v : x) v = v >= 0 ? 2.0f : -2.0f;
    std::vector<float> w = small_integers(static_cast<std::size_t>(cols), cols + 1, 4);
    auto dx = device_copy(to_storage<T>(x));
    auto dw = device_copy(to_storage<T>(w));
    Output<T> y(x.size());
    ops::rms_norm(dx.data(), dw.data(), y.data(), rows, cols, 0.0f, nullptr);
    const std::vector<float> got = y.check();
    for (std::size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], w[i % cols] * x[i] * 0.5f) << "cols " << cols << " element " << i;
    }
  }
}

TYPED_TEST(Kernels, RmsNormMatchesTheRecipeOnRandomRows) {
  using T = TypeParam;
  const int rows = 67, cols = 200;  // 200 % 8 == 0: vector path; 67 rows: partial block
  const double eps = 1e-6;
  const std::vector<float> x = to_float(to_storage<T>(random_values(rows * cols, 1, -3, 3)));
  const std::vector<float> w = to_float(to_storage<T>(random_values(cols, 2, 0.5, 4)));
  auto dx = device_copy(to_storage<T>(x));
  auto dw = device_copy(to_storage<T>(w));
  Output<T> y(x.size());
  ops::rms_norm(dx.data(), dw.data(), y.data(), rows, cols, static_cast<float>(eps), nullptr);
  const std::vector<float> got = y.check();
  std::vector<double> want(got.size());
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int c = 0; c < cols; ++c) ss += double(x[r * cols + c]) * x[r * cols + c];
    const double inv = 1.0 / std::sqrt(ss / cols + eps);
    for (int c = 0; c < cols; ++c) {
      // The recipe's two roundings, from the FP64 value.
      const float normalized = round_to<T>(static_cast<float>(x[r * cols + c] * inv));
      want[r * cols + c] = round_to<T>(w[c] * normalized);
    }
  }
  // FP32: 1/sqrt and the sum order differ by a few ulps (1e-7). bf16: the same ulps flip
  // an occasional rounding by one bf16 ulp (2^-8 relative), far below 1e-3 in L2.
  EXPECT_LT(rel_l2(got, want), (std::is_same_v<T, float> ? 1e-6 : 1e-3));
}

// ------------------------------------------------------------------ RoPE
// Angles that are multiples of pi/2 make cos and sin exactly 0 and +-1: outputs are exact
// sign flips and swaps of small integers, so pairing and position indexing show bit for bit.
TYPED_TEST(Kernels, RopeRotatesTheRightPairsAtTheRightPositions) {
  using T = TypeParam;
  const int batch = 2, n = 3, heads = 3, head_dim = 6, start = 4, positions = start + n;
  const int half = head_dim / 2, rows = batch * n;
  std::vector<float> cos(positions * half), sin(positions * half);
  for (int p = 0; p < positions; ++p) {
    for (int i = 0; i < half; ++i) {
      const int quarter = (p * (i + 1)) % 4;  // angle = quarter * pi / 2
      cos[p * half + i] = quarter == 0 ? 1.f : quarter == 2 ? -1.f : 0.f;
      sin[p * half + i] = quarter == 1 ? 1.f : quarter == 3 ? -1.f : 0.f;
    }
  }
  const std::vector<float> x = small_integers(static_cast<std::size_t>(rows) * heads * head_dim, 3, 5);
  auto dx = device_copy(to_storage<T>(x));
  auto dc = device_copy(to_storage<T>(cos));
  auto ds = device_copy(to_storage<T>(sin));
  for (bool interleaved : {false, true}) {
    Output<T> y(x.size());
    ops::rope(dx.data(), y.data(), rows, n, heads, head_dim, interleaved, dc.data(), ds.data(), start, nullptr);
    const std::vector<float> got = y.check();
    for (int r = 0; r < rows; ++r) {
      const int p = start + r % n;
      for (int h = 0; h < heads; ++h) {
        const float* v = &x[(r * heads + h) * head_dim];
        const float* o = &got[(r * heads + h) * head_dim];
        for (int i = 0; i < half; ++i) {
          const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
          const float c = cos[p * half + i], s = sin[p * half + i];
          ASSERT_EQ(o[ia], v[ia] * c - v[ib] * s) << "row " << r << " head " << h << " pair " << i;
          ASSERT_EQ(o[ib], v[ib] * c + v[ia] * s) << "row " << r << " head " << h << " pair " << i;
        }
      }
    }
  }
}

// ------------------------------------------------------------------ attention
struct AttnCase {
  int batch, n_new, start, heads, kv_heads, head_dim;
};

// FP64 causal GQA from the same (already rounded) q, K, V, rounding through T where the
// hf-bf16 recipe does (scores, scaled scores, probs; identity for float).
template <class T>
std::vector<double> attention_ref(const std::vector<float>& q, const std::vector<float>& kc,
                                  const std::vector<float>& vc, const AttnCase& c, int cap) {
  const float scale = static_cast<float>(1.0 / std::sqrt(double(c.head_dim)));
  const int D = c.head_dim, qw = c.heads * D, kvw = c.kv_heads * D, group = c.heads / c.kv_heads;
  std::vector<double> out(static_cast<std::size_t>(c.batch) * c.n_new * qw);
  for (int b = 0; b < c.batch; ++b) {
    for (int t = 0; t < c.n_new; ++t) {
      const int visible = c.start + t + 1;
      for (int h = 0; h < c.heads; ++h) {
        const int g = h / group;
        std::vector<double> s(visible);
        double m = -INFINITY;
        for (int j = 0; j < visible; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) {
            dot += double(q[(b * c.n_new + t) * qw + h * D + d]) * kc[(b * cap + j) * kvw + g * D + d];
          }
          s[j] = round_to<T>(round_to<T>(static_cast<float>(dot)) * scale);
          m = std::max(m, s[j]);
        }
        double sum = 0;
        for (double& e : s) sum += (e = std::exp(e - m));
        for (int d = 0; d < D; ++d) {
          double acc = 0;
          for (int j = 0; j < visible; ++j) {
            acc += round_to<T>(static_cast<float>(s[j] / sum)) * double(vc[(b * cap + j) * kvw + g * D + d]);
          }
          out[(b * c.n_new + t) * qw + h * D + d] = acc;
        }
      }
    }
  }
  return out;
}

TYPED_TEST(Kernels, AttentionMatchesTheRecipeAtAwkwardShapes) {
  using T = TypeParam;
  const AttnCase cases[] = {
      {2, 5, 3, 6, 2, 24},    // prefill over a partly filled cache, head_dim not a multiple of 32
      {3, 1, 37, 4, 4, 16},   // decode, no grouping, batch <= kv heads (GEMMs batched over heads)
      {1, 4, 0, 18, 1, 8},    // one kv head shared by 18 query heads
      {2, 1, 0, 8, 2, 130},   // first token, head_dim 130 (rows not 16-byte aligned)
      {5, 1, 29, 6, 2, 32},   // decode, batch > kv heads (GEMMs batched over sequences)
      {3, 3, 11, 4, 2, 16},   // prefill, batch * group > heads (batched over sequences)
      {1, 9, 300, 4, 2, 64},  // long rows: vector chunks straddle the causal bound
  };
  cuda::CublasHandle h;
  for (const AttnCase& c : cases) {
    const int cap = c.start + c.n_new + 2;  // spare rows, poisoned: must never be read
    const int qw = c.heads * c.head_dim, kvw = c.kv_heads * c.head_dim;
    const std::vector<float> q = to_float(to_storage<T>(random_values(std::size_t(c.batch) * c.n_new * qw, 11, -2, 2)));
    std::vector<float> kc = to_float(to_storage<T>(random_values(std::size_t(c.batch) * cap * kvw, 12, -2, 2)));
    std::vector<float> vc = to_float(to_storage<T>(random_values(std::size_t(c.batch) * cap * kvw, 13, -1, 1)));
    std::vector<T> kc_t = to_storage<T>(kc), vc_t = to_storage<T>(vc);
    for (int b = 0; b < c.batch; ++b) {
      for (std::size_t i = std::size_t(b * cap + c.start + c.n_new) * kvw; i < std::size_t(b + 1) * cap * kvw; ++i) {
        std::memset(static_cast<void*>(&kc_t[i]), 0xFF, sizeof(T));
        std::memset(static_cast<void*>(&vc_t[i]), 0xFF, sizeof(T));
      }
    }
    auto dq = device_copy(to_storage<T>(q));
    auto dk = device_copy(kc_t);
    auto dv = device_copy(vc_t);
    Output<T> out(q.size());
    ops::AttentionShape a{c.batch, c.n_new, c.start, c.heads, c.kv_heads, c.head_dim, cap,
                          static_cast<float>(1.0 / std::sqrt(double(c.head_dim)))};
    // Poisoned workspace: every score the softmax reads must have come from the GEMM.
    cuda::DeviceBuffer<T> ws(ops::attention_workspace_elems(a));
    ws.fill_poison();
    ops::attention(h.get(), dq.data(), dk.data(), dv.data(), out.data(), ws.data(), ws.size(), a, nullptr);
    const std::vector<float> got = out.check();
    const double e = rel_l2(got, attention_ref<T>(q, kc, vc, c, cap));
    // FP32: sums over <= 310 terms and a softmax: ~1e-7. bf16: the reference rounds at the
    // same points; FP32 sum order flips an occasional rounding (2^-8) and the output's own
    // rounding (2^-9) remains: well under 5e-3.
    EXPECT_LT(e, (std::is_same_v<T, float> ? 2e-6 : 5e-3))
        << "batch " << c.batch << " n_new " << c.n_new << " start " << c.start << " heads " << c.heads;
  }
}

// The probabilities the softmax leaves in the workspace: each causal row sums to ~1 and
// every masked key (and the padding) is exactly 0, so P @ V cannot pick up a future key.
TYPED_TEST(Kernels, AttentionProbabilitiesAreCausalAndNormalized) {
  using T = TypeParam;
  const AttnCase c{2, 6, 5, 4, 2, 16};
  const int cap = c.start + c.n_new, qw = c.heads * c.head_dim, kvw = c.kv_heads * c.head_dim;
  auto dq = device_copy(to_storage<T>(random_values(std::size_t(c.batch) * c.n_new * qw, 41, -2, 2)));
  auto dk = device_copy(to_storage<T>(random_values(std::size_t(c.batch) * cap * kvw, 42, -2, 2)));
  auto dv = device_copy(to_storage<T>(random_values(std::size_t(c.batch) * cap * kvw, 43, -1, 1)));
  Output<T> out(std::size_t(c.batch) * c.n_new * qw);
  ops::AttentionShape a{c.batch, c.n_new, c.start, c.heads, c.kv_heads, c.head_dim, cap, 0.25f};
  cuda::DeviceBuffer<T> ws(ops::attention_workspace_elems(a));
  ws.fill_poison();
  cuda::CublasHandle h;
  ops::attention(h.get(), dq.data(), dk.data(), dv.data(), out.data(), ws.data(), ws.size(), a, nullptr);
  out.check();
  const std::vector<float> p = to_float(ws.download());
  const int ld = ops::attention_scores_ld(cap);
  ASSERT_EQ(p.size(), std::size_t(c.batch) * c.heads * c.n_new * ld);
  for (std::size_t row = 0; row < p.size() / ld; ++row) {
    const int visible = c.start + static_cast<int>(row % c.n_new) + 1;
    double sum = 0;
    for (int j = 0; j < ld; ++j) {
      const float v = p[row * ld + j];
      if (j < visible) {
        ASSERT_GT(v, 0.0f) << "row " << row << " key " << j;
        sum += v;
      } else {
        ASSERT_EQ(v, 0.0f) << "row " << row << " masked key " << j;
      }
    }
    // Each probability is rounded once with relative error <= 2^-9 (bf16), so the row
    // sums to 1 within 2^-9; FP32: a few ulps.
    const double tol = std::is_same_v<T, float> ? 1e-6 : 2e-3;
    EXPECT_NEAR(sum, 1.0, tol) << "row " << row;
  }
}

TYPED_TEST(Kernels, AttentionRejectsASmallWorkspaceAndAForeignStream) {
  using T = TypeParam;
  const AttnCase c{1, 2, 3, 2, 1, 8};
  const int cap = c.start + c.n_new;
  auto dq = device_copy(to_storage<T>(random_values(std::size_t(c.n_new) * c.heads * c.head_dim, 51)));
  auto dk = device_copy(to_storage<T>(random_values(std::size_t(cap) * c.kv_heads * c.head_dim, 52)));
  cuda::DeviceBuffer<T> out(std::size_t(c.n_new) * c.heads * c.head_dim);
  ops::AttentionShape a{c.batch, c.n_new, c.start, c.heads, c.kv_heads, c.head_dim, cap, 0.5f};
  const std::size_t need = ops::attention_workspace_elems(a);
  cuda::DeviceBuffer<T> ws(need);
  cuda::CublasHandle h;
  EXPECT_THROW(ops::attention(h.get(), dq.data(), dk.data(), dk.data(), out.data(), ws.data(), need - 1, a, nullptr),
               cuda::CudaError);
  cudaStream_t other = nullptr;
  ASSERT_EQ(cudaStreamCreate(&other), cudaSuccess);
  EXPECT_THROW(ops::attention(h.get(), dq.data(), dk.data(), dk.data(), out.data(), ws.data(), need, a, other),
               cuda::CudaError);
  cudaStreamDestroy(other);
}

// ------------------------------------------------------------------ elementwise
TYPED_TEST(Kernels, ResidualAddIsExactAndWritesOnlyItsOutput) {
  using T = TypeParam;
  // 4096: vector path; 1001: scalar (n % 8); offset 1: misaligned pointers, scalar.
  for (std::size_t n : {std::size_t(1), std::size_t(1001), std::size_t(4096)}) {
    for (int offset : {0, 1}) {
      const std::vector<float> a = small_integers(n + offset, n, 50), b = small_integers(n + offset, n + 7, 50);
      auto da = device_copy(to_storage<T>(a));
      auto db = device_copy(to_storage<T>(b));
      Output<T> out(n);
      ops::add(da.data() + offset, db.data() + offset, out.data(), n, nullptr);
      const std::vector<float> got = out.check();
      for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], a[i + offset] + b[i + offset]) << "n " << n << " i " << i;
    }
  }
}

TYPED_TEST(Kernels, SiluMulFollowsTheRecipe) {
  using T = TypeParam;
  for (std::size_t n : {std::size_t(7), std::size_t(8 * 1237), std::size_t(8 * 1237 + 3)}) {
    const std::vector<float> g = to_float(to_storage<T>(random_values(n, 21, -8, 8)));
    const std::vector<float> u = to_float(to_storage<T>(random_values(n, 22, -2, 2)));
    auto dg = device_copy(to_storage<T>(g));
    auto du = device_copy(to_storage<T>(u));
    Output<T> out(n);
    ops::silu_mul(dg.data(), du.data(), out.data(), n, nullptr);
    const std::vector<float> got = out.check();
    std::vector<double> want(n);
    for (std::size_t i = 0; i < n; ++i) {
      const double silu = g[i] / (1.0 + std::exp(-double(g[i])));
      want[i] = round_to<T>(round_to<T>(static_cast<float>(silu)) * u[i]);
    }
    // expf on the device is within 2 ulps of FP64: FP32 1e-6; bf16 flips a rare rounding.
    EXPECT_LT(rel_l2(got, want), (std::is_same_v<T, float> ? 1e-6 : 1e-3)) << "n " << n;
  }
}

// ------------------------------------------------------------------ GEMM
// Y = X W^T with small integers: every product and sum is exact in FP32 accumulation, so
// the row-major layout through column-major cuBLAS is checked bit for bit.
TYPED_TEST(Kernels, GemmXwtIsExactOnSmallIntegers) {
  using T = TypeParam;
  cuda::CublasHandle h;
  for (auto [rows, out, in] : {std::array{3, 5, 7}, std::array{1, 301, 96}, std::array{17, 64, 200}}) {
    const std::vector<float> x = small_integers(std::size_t(rows) * in, 31), w = small_integers(std::size_t(out) * in, 32);
    auto dx = device_copy(to_storage<T>(x));
    auto dw = device_copy(to_storage<T>(w));
    Output<T> y(std::size_t(rows) * out);
    cuda::gemm_xwt(h.get(), rows, out, in, dx.data(), dw.data(), y.data());
    const std::vector<float> got = y.check();
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < out; ++o) {
        float want = 0;
        for (int k = 0; k < in; ++k) want += x[r * in + k] * w[o * in + k];
        ASSERT_EQ(got[r * out + o], round_to<T>(want)) << rows << "x" << out << "x" << in << " at " << r << "," << o;
      }
    }
  }
}

TEST(KernelsSeededFill, IsReproducibleAndNotConstant) {
  FUSECHECK_REQUIRE_GPU();
  cuda::DeviceBuffer<float> a(1000), b(1000);
  cuda::fill_uniform(a.data(), a.size(), 42, -1.f, 1.f);
  cuda::fill_uniform(b.data(), b.size(), 42, -1.f, 1.f);
  const auto ha = a.download(), hb = b.download();
  EXPECT_EQ(ha, hb);
  EXPECT_NE(*std::min_element(ha.begin(), ha.end()), *std::max_element(ha.begin(), ha.end()));
  EXPECT_GE(*std::min_element(ha.begin(), ha.end()), -1.f);
  EXPECT_LT(*std::max_element(ha.begin(), ha.end()), 1.f);
}

TEST(KernelsDeviceInfo, ReportsTheDeviceAndAPositiveCopyBandwidth) {
  FUSECHECK_REQUIRE_GPU();
  const cuda::DeviceProvenance p = cuda::query_device(0, true, std::size_t(64) << 20);
  EXPECT_FALSE(p.name.empty());
  EXPECT_GT(p.sm_count, 0);
  EXPECT_GT(p.runtime_version, 0);
  EXPECT_GT(p.copy_bandwidth_gbs, 1.0);
  std::cout << "device: " << p.summary() << ", copy " << p.copy_bandwidth_gbs << " GB/s (64 MiB)\n";
}

}  // namespace
}  // namespace fusecheck::gpu_test
