// Tap metrics on the device against the CPU route (harness/run/metrics.cpp) on the same
// values: every field within 1e-12 relative (sums in another order; FP64 accumulation
// keeps them ~1e-15 apart), counts exact, and the CPU's NaN/Inf conventions: non-finite
// path values make the errors infinite, a zero reference leaves rel_l2 and max_rel NaN.
#include <cmath>
#include <random>
#include <vector>

#include "harness/run/metrics.h"
#include "kernels/common/stream.h"
#include "kernels/metrics/device_metrics.h"
#include "tests/gpu/gpu_test_util.h"

namespace fusecheck::gpu_test {
namespace {

// Device sums differ from the CPU's sequential ones by reassociation only: n * 2^-53
// relative at most for the sizes here (~1e6 elements: 1e-10 worst case, ~1e-15 typical);
// 1e-12 is what baselines need to stay comparable (issue 18).
constexpr double kRouteTolerance = 1e-12;

void expect_same(double device, double cpu, const char* field) {
  if (std::isnan(cpu)) {
    EXPECT_TRUE(std::isnan(device)) << field << ": device " << device << ", cpu NaN";
  } else if (std::isinf(cpu) || cpu == 0) {
    EXPECT_EQ(device, cpu) << field;
  } else {
    EXPECT_LE(std::abs(device - cpu), kRouteTolerance * std::abs(cpu)) << field << ": device " << device << ", cpu " << cpu;
  }
}

void compare_routes(const TapMatrix& ref, const TapMatrix& path, DType dtype) {
  const run::Tolerance tol = run::default_tolerance(dtype);
  const run::TapMetrics cpu = run::compute_metrics(ref, path, dtype, tol);
  cuda::Stream stream;
  cuda::DeviceBuffer<double> dref, dpath;
  dref.upload(ref.data(), static_cast<std::size_t>(ref.size()), stream);
  dpath.upload(path.data(), static_cast<std::size_t>(path.size()), stream);
  const cuda::DeviceTapMetrics dev = cuda::device_tap_metrics(
      dref.data(), dpath.data(), static_cast<std::size_t>(ref.size()), dtype_max_finite(dtype), tol.atol, tol.rtol,
      stream);
  expect_same(dev.max_abs, cpu.max_abs, "max_abs");
  expect_same(dev.max_rel, cpu.max_rel, "max_rel");
  expect_same(dev.rel_l2, cpu.rel_l2, "rel_l2");
  expect_same(dev.cosine, cpu.cosine, "cosine");
  expect_same(dev.frac_outside, cpu.frac_outside, "frac_outside");
  expect_same(dev.ref_norm, cpu.ref_norm, "ref_norm");
  expect_same(dev.headroom, cpu.headroom, "headroom");
  EXPECT_EQ(dev.nan_count, cpu.nan_count);
  EXPECT_EQ(dev.inf_count, cpu.inf_count);
  EXPECT_EQ(dev.ref_nonfinite, cpu.ref_nonfinite);
  EXPECT_EQ(dev.overflow_count, cpu.overflow_count);
  EXPECT_EQ(dev.saturation_count, cpu.saturation_count);
}

// A bf16-like path: the reference with seeded relative noise of 2^-9.
TapMatrix noisy(const TapMatrix& ref, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  TapMatrix x = ref;
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] *= 1.0 + std::ldexp(d(rng), -9);
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

TEST_F(DeviceMetrics, MatchTheCpuRouteOnATapOfAwkwardSize) {
  const TapMatrix ref = random_tap(513, 1031, 11);  // 528,903 elements: not a multiple of a block
  compare_routes(ref, noisy(ref, 12), DType::BF16);
  compare_routes(ref, noisy(ref, 13), DType::F16);
}

TEST_F(DeviceMetrics, MatchTheCpuRouteOnLogitsNearTheFormatsLimit) {
  const TapMatrix ref = random_tap(7, 151, 21, 2.0e4);  // fp16 saturates at 65504
  compare_routes(ref, noisy(ref, 22), DType::F16);
}

TEST_F(DeviceMetrics, NonFiniteValuesFollowTheCpuConventions) {
  TapMatrix ref = random_tap(9, 33, 31);
  TapMatrix path = noisy(ref, 32);
  path(1, 2) = std::nan("");
  path(3, 4) = INFINITY;
  ref(5, 6) = -INFINITY;
  compare_routes(ref, path, DType::BF16);
}

TEST_F(DeviceMetrics, AZeroReferenceLeavesTheRelativeErrorsUndefined) {
  const TapMatrix ref = TapMatrix::Zero(4, 64);
  compare_routes(ref, random_tap(4, 64, 41, 1e-3), DType::BF16);
}

}  // namespace
}  // namespace fusecheck::gpu_test
