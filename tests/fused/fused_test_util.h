// Shared by the fused-kernel tests: seeded bf16 host data, device round trips, and the
// element-wise check "within tol_i of the double reference", which also fails on NaN
// (outputs are poisoned with NaN before each launch, so an unwritten element fails).
#pragma once

#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "harness/core/dtype.h"
#include "kernels/common/device_buffer.h"
#include "kernels/common/device_info.h"

namespace fusecheck::test {

using bf16 = __nv_bfloat16;
using Bits = std::vector<std::uint16_t>;

#define SKIP_WITHOUT_GPU()                                                   \
  do {                                                                       \
    if (::fusecheck::cuda::visible_device_count() == 0)                     \
      GTEST_SKIP() << ::fusecheck::cuda::no_device_reason();                 \
  } while (0)

// Uniform in [lo, hi), rounded to bf16.
inline Bits random_bits(std::size_t n, std::uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Bits b(n);
  for (auto& x : b) x = float_to_bf16(u(rng));
  return b;
}
// Small integers in [lo, hi] (exactly representable; sums stay exact in FP32).
inline Bits integer_bits(std::size_t n, std::uint64_t seed, int lo, int hi) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> u(lo, hi);
  Bits b(n);
  for (auto& x : b) x = float_to_bf16(static_cast<float>(u(rng)));
  return b;
}
inline double val(const Bits& b, std::size_t i) { return bf16_to_float(b[i]); }

inline cuda::DeviceBuffer<bf16> to_device(const Bits& b) {
  cuda::DeviceBuffer<bf16> d(b.size());
  d.upload(reinterpret_cast<const bf16*>(b.data()), b.size());
  return d;
}
inline cuda::DeviceBuffer<bf16> poisoned(std::size_t n) {
  cuda::DeviceBuffer<bf16> d(n);
  d.fill_poison();
  return d;
}
inline Bits to_host(const cuda::DeviceBuffer<bf16>& d) {
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto v = d.download();
  Bits b(v.size());
  std::memcpy(b.data(), v.data(), b.size() * 2);
  return b;
}

// Spacing of bf16 numbers at |x| (the "ulp"): 2^(floor(log2|x|) - 7).
inline double bf16_ulp(double x) {
  const double a = std::fabs(x);
  if (a < 1e-30) return std::ldexp(1.0, -133);
  return std::ldexp(1.0, std::ilogb(a) - 7);
}

// Every out[i] within tol[i] of ref[i]; reports the first few failures and the count.
inline void expect_within(const std::string& what, const Bits& out, const std::vector<double>& ref,
                          const std::vector<double>& tol) {
  ASSERT_EQ(ref.size(), tol.size());
  ASSERT_LE(ref.size(), out.size());
  double ref_norm = 0;
  int bad = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    ref_norm += ref[i] * ref[i];
    const double o = bf16_to_float(out[i]);
    if (!(std::fabs(o - ref[i]) <= tol[i])) {
      if (++bad <= 5)
        ADD_FAILURE() << what << "[" << i << "] = " << o << ", reference " << ref[i]
                      << ", tolerance " << tol[i];
    }
  }
  EXPECT_GT(ref_norm, 0) << what << ": reference is all zeros (test would pass by accident)";
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << ref.size() << " elements out of tolerance";
}

// Bit equality with the reference rounded once to bf16 (exact-arithmetic cases).
inline void expect_bits(const std::string& what, const Bits& out, const std::vector<double>& ref) {
  int bad = 0;
  for (std::size_t i = 0; i < ref.size(); ++i)
    if (out[i] != double_to_bf16(ref[i]) && ++bad <= 5)
      ADD_FAILURE() << what << "[" << i << "] = " << bf16_to_float(out[i]) << ", exact "
                    << ref[i];
  EXPECT_EQ(bad, 0) << what << ": " << bad << " elements differ from the exact result";
}

}  // namespace fusecheck::test
