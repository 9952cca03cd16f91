// Device provenance: properties, versions and a measured copy bandwidth.
#include "kernels/common/device_info.h"

#include <algorithm>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/common/cuda_check.h"
#include "kernels/common/device_buffer.h"
#include "kernels/common/stream.h"

namespace fusecheck::cuda {

std::string DeviceProvenance::summary() const {
  return name + " (sm_" + std::to_string(cc_major) + std::to_string(cc_minor) + ", " +
         std::to_string(sm_count) + " SMs)";
}

std::vector<std::pair<std::string, std::string>> DeviceProvenance::attributes() const {
  auto ver = [](int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); };
  return {
      {"device_index", std::to_string(index)},
      {"device_name", name},
      {"compute_capability", std::to_string(cc_major) + "." + std::to_string(cc_minor)},
      {"sm_count", std::to_string(sm_count)},
      {"sm_clock_peak_mhz", std::to_string(sm_clock_peak_mhz)},
      {"mem_clock_peak_mhz", std::to_string(mem_clock_peak_mhz)},
      {"mem_bus_width_bits", std::to_string(mem_bus_width_bits)},
      {"l2_bytes", std::to_string(l2_bytes)},
      {"global_mem_bytes", std::to_string(global_mem_bytes)},
      {"cuda_driver", ver(driver_version)},
      {"cuda_runtime", ver(runtime_version)},
      {"cublas_version", std::to_string(cublas_version)},
      {"copy_bandwidth_gbs", std::to_string(copy_bandwidth_gbs)},
  };
}

int visible_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  return n;
}

std::string no_device_reason() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  cudaGetLastError();
  if (e != cudaSuccess) {
    return std::string("no CUDA device visible (") + cudaGetErrorName(e) + ": " +
           cudaGetErrorString(e) + "); GPU tests need a GPU (scripts/gpu-test)";
  }
  return "no CUDA device visible (0 devices); GPU tests need a GPU (scripts/gpu-test)";
}

double measure_copy_bandwidth_gbs(std::size_t bytes, int repetitions) {
  DeviceBuffer<unsigned char> src(bytes), dst(bytes);
  Stream stream;
  // Non-zero contents, so no compression or zero-page effect can flatter the copy.
  CUDA_CHECK(cudaMemsetAsync(src.data(), 0x5A, bytes, stream));
  CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, stream));
  stream.synchronize();
  std::vector<float> ms;
  Event start, stop;
  for (int i = 0; i < repetitions; ++i) {
    start.record(stream);
    CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, stream));
    stop.record(stream);
    ms.push_back(elapsed_ms(start, stop));
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  const double median_s = ms[ms.size() / 2] * 1e-3;
  return 2.0 * static_cast<double>(bytes) / median_s / 1e9;
}

DeviceProvenance query_device(int index, bool measure_copy, std::size_t copy_bytes) {
  DeviceProvenance p;
  p.index = index;
  CUDA_CHECK(cudaSetDevice(index));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  p.name = prop.name;
  p.cc_major = prop.major;
  p.cc_minor = prop.minor;
  p.sm_count = prop.multiProcessorCount;
  p.l2_bytes = static_cast<std::size_t>(prop.l2CacheSize);
  p.global_mem_bytes = prop.totalGlobalMem;
  p.mem_bus_width_bits = prop.memoryBusWidth;
  int khz = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, index));
  p.sm_clock_peak_mhz = khz / 1000;
  CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, index));
  p.mem_clock_peak_mhz = khz / 1000;
  CUDA_CHECK(cudaDriverGetVersion(&p.driver_version));
  CUDA_CHECK(cudaRuntimeGetVersion(&p.runtime_version));
  int major = 0, minor = 0, patch = 0;
  CUBLAS_CHECK(cublasGetProperty(MAJOR_VERSION, &major));
  CUBLAS_CHECK(cublasGetProperty(MINOR_VERSION, &minor));
  CUBLAS_CHECK(cublasGetProperty(PATCH_LEVEL, &patch));
  p.cublas_version = major * 10000 + minor * 100 + patch;
  if (measure_copy) p.copy_bandwidth_gbs = measure_copy_bandwidth_gbs(copy_bytes);
  return p;
}

}  // namespace fusecheck::cuda
