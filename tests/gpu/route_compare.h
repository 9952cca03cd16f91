// How close the device route's metrics must be to the CPU route's (issue 18): shared by
// test_gpu_device_metrics (one tap) and test_gpu_device_route (whole runs).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

namespace fusecheck::gpu_test {

// Device sums differ from the CPU's sequential ones by reassociation only: n * 2^-53
// relative at most for the sizes here (~1e6 elements: 1e-10 worst case, ~1e-15 typical);
// 1e-12 is what baselines need to stay comparable (issue 18).
inline constexpr double kRouteTolerance = 1e-12;

// NaN for NaN, the same infinity or zero, else within kRouteTolerance relative.
inline void expect_route_close(double device, double cpu, const std::string& where) {
  if (std::isnan(cpu)) {
    EXPECT_TRUE(std::isnan(device)) << where << ": device " << device << ", cpu NaN";
  } else if (std::isinf(cpu) || cpu == 0) {
    EXPECT_EQ(device, cpu) << where;
  } else {
    EXPECT_LE(std::abs(device - cpu), kRouteTolerance * std::abs(cpu)) << where << ": device " << device << ", cpu " << cpu;
  }
}

// KL is a difference of two log-sum-exps (of order 10) that cancels to ~1e-4 and below:
// each route's own rounding of a log-sum-exp (2^-52 |lse| ~ 2e-15, plus its exp sum's
// ~sqrt(vocab) 2^-53 ~ 1e-14 at vocab 5003) moves KL by that much absolutely in any order
// of the sums, so two correct routes agree to 1e-12 relative or 1e-13 absolute, whichever
// is larger (the CI models' vocabularies are 301 and 512; test_gpu_device_metrics' 5003).
inline constexpr double kKlAbsolute = 1e-13;
inline void expect_kl_close(double device, double cpu, const std::string& where) {
  if (std::isnan(cpu) || std::isinf(cpu) || cpu == 0) return expect_route_close(device, cpu, where);
  EXPECT_LE(std::abs(device - cpu), std::max(kRouteTolerance * std::abs(cpu), kKlAbsolute))
      << where << ": device " << device << ", cpu " << cpu;
}

}  // namespace fusecheck::gpu_test
