// Host-side checks of the FP8 KV cache (kv_fp8.h): device capability and scales.
#include <cmath>

#include <fmt/core.h>

#include "harness/core/error.h"
#include "kernels/common/cuda_check.h"
#include "kernels/fused/kv_fp8.h"

namespace fusecheck::fused {

void require_fp8_capability(int major, int minor, const std::string& device_name) {
  if (major * 10 + minor < 89) {
    throw InputError("", fmt::format("FP8 recipes need compute capability 8.9 or above (Ada, Hopper); "
                                     "{} has {}.{}: run the emulated recipe on the CPU instead "
                                     "(emulated-cpu --recipe fp8-kv...)", device_name, major, minor));
  }
}

void require_fp8_device(int device) {
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  require_fp8_capability(prop.major, prop.minor, prop.name);
}

void check_kv_fp8_scales(const std::vector<float>& scales, const std::string& what) {
  for (std::size_t g = 0; g < scales.size(); ++g) {
    const float s = scales[g];
    if (!(s > 0) || !std::isfinite(s)) {
      throw InputError("", fmt::format("fp8-kv: {} scale{} is {}: an FP8 cache needs a finite scale above zero",
                                       what, scales.size() > 1 ? fmt::format(" of kv head {}", g) : "", s));
    }
  }
}

}  // namespace fusecheck::fused
