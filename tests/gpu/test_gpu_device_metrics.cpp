// Tap metrics on the device (kernels/metrics, device_taps.h) against the CPU route
// (harness/run/metrics.cpp) on the same values: every field of compute_metrics within
// 1e-12 relative (sums in another order; FP64 accumulation keeps them ~1e-15 apart), the
// ULP figures and every count exact, the CPU's NaN/Inf conventions; the reference and the
// path in any of the path dtypes (F64, F32, BF16, F16) and as a column block of a wider
// buffer; the noise floor's and the perturbation's relative L2s; next_token_agreement's
// per-position figures; a device input rounded once as the host route rounds it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "harness/run/metrics.h"
#include "kernels/common/stream.h"
#include "kernels/metrics/device_taps.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/gpu/route_compare.h"

namespace fusecheck::gpu_test {
namespace {

// A tap stored on the device in `dtype` (values rounded once to it), possibly as the first
// `cols` columns of rows `stride` wide; `values()` is what the device holds, as doubles.
class DeviceTapBuffer {
 public:
  DeviceTapBuffer(const TapMatrix& m, DType dtype, Eigen::Index stride = 0)
      : dtype_(dtype), rows_(m.rows()), cols_(m.cols()), stride_(stride ? stride : m.cols()), values_(m) {
    const std::size_t es = dtype_size(dtype);
    std::vector<unsigned char> host(static_cast<std::size_t>(rows_ * stride_) * es, 0xFF);  // NaN padding
    for (Eigen::Index r = 0; r < rows_; ++r) {
      for (Eigen::Index c = 0; c < cols_; ++c) {
        unsigned char* p = host.data() + static_cast<std::size_t>(r * stride_ + c) * es;
        const double x = m(r, c);
        switch (dtype) {
          case DType::F64: std::memcpy(p, &x, 8); values_(r, c) = x; break;
          case DType::F32: { const float f = static_cast<float>(x); std::memcpy(p, &f, 4); values_(r, c) = f; break; }
          case DType::BF16: { const std::uint16_t b = double_to_bf16(x); std::memcpy(p, &b, 2); values_(r, c) = bf16_to_float(b); break; }
          case DType::F16: { const std::uint16_t b = double_to_fp16(x); std::memcpy(p, &b, 2); values_(r, c) = fp16_to_float(b); break; }
        }
      }
    }
    buf_.upload(host);
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  DeviceTap tap() const {
    DeviceTap t;
    t.data = buf_.data();
    t.dtype = dtype_;
    t.rows = rows_, t.cols = cols_, t.row_stride = stride_;
    return t;
  }
  const TapMatrix& values() const { return values_; }

 private:
  DType dtype_;
  Eigen::Index rows_, cols_, stride_;
  TapMatrix values_;
  cuda::DeviceBuffer<unsigned char> buf_;
};

void compare_routes(const DeviceTapBuffer& ref, const DeviceTapBuffer& path, DType dtype,
                    const DeviceTapBuffer* truth = nullptr) {
  const run::Tolerance tol = run::default_tolerance(dtype);
  const run::TapMetrics cpu = run::compute_metrics(ref.values(), path.values(), dtype, tol);
  cuda::Stream stream;
  const DeviceTap t = truth ? truth->tap() : DeviceTap{};
  const DeviceTapSummary dev =
      cuda::tap_summary(ref.tap(), path.tap(), truth ? &t : nullptr, dtype, tol.atol, tol.rtol, stream);
  expect_route_close(dev.max_abs, cpu.max_abs, "max_abs");
  expect_route_close(dev.max_rel, cpu.max_rel, "max_rel");
  expect_route_close(dev.rel_l2, cpu.rel_l2, "rel_l2");
  expect_route_close(dev.cosine, cpu.cosine, "cosine");
  expect_route_close(dev.frac_outside, cpu.frac_outside, "frac_outside");
  expect_route_close(dev.ref_norm, cpu.ref_norm, "ref_norm");
  expect_route_close(dev.headroom, cpu.headroom, "headroom");
  // Integers and order statistics: exact.
  auto exact = [](double d, double c, const char* f) {
    if (std::isnan(c)) {
      EXPECT_TRUE(std::isnan(d)) << f;
    } else {
      EXPECT_EQ(d, c) << f;
    }
  };
  exact(dev.ulp_p50, cpu.ulp_p50, "ulp_p50");
  exact(dev.ulp_p99, cpu.ulp_p99, "ulp_p99");
  exact(dev.ulp_max, cpu.ulp_max, "ulp_max");
  exact(dev.nan_count, cpu.nan_count, "nan_count");
  exact(dev.inf_count, cpu.inf_count, "inf_count");
  exact(dev.ref_nonfinite, cpu.ref_nonfinite, "ref_nonfinite");
  exact(dev.overflow_count, cpu.overflow_count, "overflow_count");
  exact(dev.saturation_count, cpu.saturation_count, "saturation_count");
  expect_route_close(dev.plain_rel_l2, run::relative_l2(ref.values(), path.values()), "plain_rel_l2");
  if (truth) {
    expect_route_close(dev.truth_rel_l2_path, run::relative_l2(truth->values(), path.values()), "truth_rel_l2_path");
    expect_route_close(dev.truth_rel_l2_ref, run::relative_l2(truth->values(), ref.values()), "truth_rel_l2_ref");
  } else {
    EXPECT_TRUE(std::isnan(dev.truth_rel_l2_path) && std::isnan(dev.truth_rel_l2_ref));
  }
}

// A low-precision path: the reference with seeded relative noise of 2^-9.
TapMatrix noisy(const TapMatrix& ref, std::uint64_t seed, int exponent = -9) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  TapMatrix x = ref;
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] *= 1.0 + std::ldexp(d(rng), exponent);
  return x;
}

TapMatrix random_tap(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, scale);
  TapMatrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = d(rng);
  return m;
}

class DeviceMetrics : public ::testing::Test {
 protected:
  void SetUp() override { FUSECHECK_REQUIRE_GPU(); }
};

TEST_F(DeviceMetrics, Bf16PathAgainstAnF32ReferenceOnATapOfAwkwardSize) {
  const TapMatrix ref = random_tap(513, 1031, 11);  // 528,903 elements: not a multiple of a block
  compare_routes(DeviceTapBuffer(ref, DType::F32), DeviceTapBuffer(noisy(ref, 12), DType::BF16), DType::BF16);
}

TEST_F(DeviceMetrics, F32PathAgainstAnF64ReferenceWithTheTruth) {
  const TapMatrix truth = random_tap(97, 301, 13);
  const DeviceTapBuffer t(truth, DType::F64);
  compare_routes(DeviceTapBuffer(noisy(truth, 14, -24), DType::F64), DeviceTapBuffer(noisy(truth, 15, -20), DType::F32),
                 DType::F32, &t);
}

TEST_F(DeviceMetrics, F16PathNearTheFormatsLimitSaturates) {
  TapMatrix ref = random_tap(7, 151, 21, 2.0e4);  // fp16 saturates at 65504
  ref(0, 0) = 7.0e4;
  compare_routes(DeviceTapBuffer(ref, DType::F64), DeviceTapBuffer(noisy(ref, 22), DType::F16), DType::F16);
}

TEST_F(DeviceMetrics, AColumnBlockOfAWiderBufferReadsOnlyItsColumns) {
  // q of a q|k|v buffer: the padding is NaN, so reading it would show in every count.
  const TapMatrix ref = random_tap(33, 64, 31);
  compare_routes(DeviceTapBuffer(ref, DType::F32, 96), DeviceTapBuffer(noisy(ref, 32), DType::BF16, 128), DType::BF16);
}

TEST_F(DeviceMetrics, TheUlpHistogramAndCountsWithNanInfAndZeros) {
  TapMatrix ref = random_tap(9, 4133, 41);
  TapMatrix path = noisy(ref, 42, -6);  // wide enough to reach the power-of-two bins
  for (Eigen::Index c = 0; c < 40; ++c) {
    ref(0, c) = 0.0;                      // zeros on both sides, and across zero
    path(0, c) = c % 2 ? 0.0 : -1e-30;
  }
  path(1, 2) = std::nan("");
  path(3, 4) = INFINITY;
  path(3, 5) = -INFINITY;
  ref(5, 6) = -INFINITY;
  ref(6, 7) = std::nan("");
  path(7, 8) = ref(7, 8) * 1e12;          // a distance far above 4096 ULPs (fp16: +-Inf)
  for (DType d : {DType::BF16, DType::F16, DType::F32, DType::F64}) {
    SCOPED_TRACE(std::string(dtype_name(d)));
    compare_routes(DeviceTapBuffer(ref, DType::F64), DeviceTapBuffer(path, DType::F64), d);
  }
}

TEST_F(DeviceMetrics, UlpQuantilesOfAPathFarFromTheReference) {
  const TapMatrix ref = random_tap(16, 2048, 51);
  const TapMatrix path = noisy(ref, 52, -2);
  compare_routes(DeviceTapBuffer(ref, DType::F32), DeviceTapBuffer(path, DType::BF16), DType::BF16);
  compare_routes(DeviceTapBuffer(ref, DType::F64), DeviceTapBuffer(path, DType::F32), DType::F32);
}

TEST_F(DeviceMetrics, AZeroReferenceLeavesTheRelativeErrorsUndefined) {
  const TapMatrix ref = TapMatrix::Zero(4, 64);
  compare_routes(DeviceTapBuffer(ref, DType::F32), DeviceTapBuffer(random_tap(4, 64, 61, 1e-3), DType::BF16),
                 DType::BF16);
}

void compare_next_token(const DeviceTapBuffer& ref, const DeviceTapBuffer& path) {
  const run::NextTokenAgreement cpu = run::next_token_agreement(ref.values(), path.values());
  cuda::Stream stream;
  const DeviceNextToken dev = cuda::next_token(ref.tap(), path.tap(), stream);
  ASSERT_EQ(dev.kl.size(), cpu.kl.size());
  for (std::size_t i = 0; i < cpu.kl.size(); ++i) {
    SCOPED_TRACE("position " + std::to_string(i));
    expect_kl_close(dev.kl[i], cpu.kl[i], "kl");
    EXPECT_EQ(dev.ref_margin[i], cpu.ref_margin[i]);
    EXPECT_EQ(dev.top1_match[i], cpu.top1_match[i]);
  }
}

TEST_F(DeviceMetrics, NextTokenFiguresPerPosition) {
  TapMatrix ref = random_tap(37, 5003, 71, 3.0);
  TapMatrix path = noisy(ref, 72, -7);
  path.row(1) = ref.row(1);                       // identical rows: KL exactly 0
  path(2, 17) = std::nan("");                     // a non-finite row: KL +Inf, no match
  ref(3, 100) = ref(3, 200) = 50.0;               // a tied maximum: margin 0, first argmax
  path(3, 100) = path(3, 200) = 50.0;
  path(4, 4000) = 80.0;                           // the path's argmax moves
  compare_next_token(DeviceTapBuffer(ref, DType::F32), DeviceTapBuffer(path, DType::BF16));
  compare_next_token(DeviceTapBuffer(ref, DType::F64), DeviceTapBuffer(path, DType::F32));
}

TEST_F(DeviceMetrics, ADeviceInputIsRoundedOnceAsTheHostRouteRoundsIt) {
  // Values between bf16 neighbours, exactly halfway, and beyond float's range, from F64.
  TapMatrix m = random_tap(5, 999, 81);
  for (Eigen::Index i = 0; i < 200; ++i) m.data()[i] = std::ldexp(1.0 + std::ldexp(2 * i + 1, -9), static_cast<int>(i % 40) - 20);
  m(4, 0) = 1e300;
  m(4, 1) = -3e-45;
  const DeviceTapBuffer src(m, DType::F64);
  cuda::Stream stream;
  cuda::DeviceBuffer<std::uint16_t> bf(static_cast<std::size_t>(m.size()));
  cuda::DeviceBuffer<float> f(static_cast<std::size_t>(m.size()));
  cuda::copy_input(src.tap(), DType::BF16, bf.data(), stream);
  cuda::copy_input(src.tap(), DType::F32, f.data(), stream);
  const std::vector<std::uint16_t> got_bf = bf.download(stream);
  const std::vector<float> got_f = f.download(stream);
  for (Eigen::Index i = 0; i < m.size(); ++i) {
    EXPECT_EQ(got_bf[static_cast<std::size_t>(i)], double_to_bf16(m.data()[i])) << "element " << i << " = " << m.data()[i];
    EXPECT_EQ(got_f[static_cast<std::size_t>(i)], static_cast<float>(m.data()[i])) << "element " << i;
  }
}

}  // namespace
}  // namespace fusecheck::gpu_test
