// Shared helpers of the GPU tests: skip without a device, host<->device copies of float
// and bf16 (as raw uint16 bits), and the relative L2 distance with its guards.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include "harness/core/dtype.h"
#include "kernels/common/device_buffer.h"
#include "kernels/common/device_info.h"

#define FUSECHECK_REQUIRE_GPU()                                                  \
  do {                                                                           \
    if (::fusecheck::cuda::visible_device_count() == 0)                          \
      GTEST_SKIP() << ::fusecheck::cuda::no_device_reason();                     \
  } while (0)

namespace fusecheck::gpu_test {

using bf16 = __nv_bfloat16;

inline bf16 to_bf16(float x) {
  __nv_bfloat16_raw r;
  r.x = float_to_bf16(x);
  return bf16(r);
}
inline float from_bf16(bf16 x) { return bf16_to_float(static_cast<__nv_bfloat16_raw>(x).x); }

// Host values in storage type T (float or bf16) from floats, rounded once.
template <class T>
std::vector<T> to_storage(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    if constexpr (std::is_same_v<T, float>) {
      out[i] = v[i];
    } else {
      out[i] = to_bf16(v[i]);
    }
  }
  return out;
}
template <class T>
std::vector<float> to_float(const std::vector<T>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    if constexpr (std::is_same_v<T, float>) {
      out[i] = v[i];
    } else {
      out[i] = from_bf16(v[i]);
    }
  }
  return out;
}
// The value a float has once stored as T.
template <class T>
float round_to(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    return round_to_bf16(x);
  }
}

// Seeded uniform values in [lo, hi); never all zero.
inline std::vector<float> random_values(std::size_t n, std::uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Small integers in [-k, k], never all zero, exactly representable in bf16 and their
// products and short sums too: results can be compared bit for bit.
inline std::vector<float> small_integers(std::size_t n, std::uint64_t seed, int k = 3) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> d(-k, k);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(d(rng));
  if (n) v[0] = 1.0f;
  return v;
}

template <class T>
cuda::DeviceBuffer<T> device_copy(const std::vector<T>& host) {
  cuda::DeviceBuffer<T> d;
  d.upload(host);
  return d;
}

inline double rel_l2(const std::vector<float>& got, const std::vector<double>& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;  // NaN never passes
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  EXPECT_GT(den, 0.0) << "reference is all zeros: the comparison would pass by accident";
  return std::sqrt(num / den);
}

}  // namespace fusecheck::gpu_test
