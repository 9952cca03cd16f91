// Device provenance for results and benchmark output: what card ran, its clocks, the
// driver/runtime/cuBLAS versions and the device-to-device copy bandwidth measured in this
// process. Plain C++ header (no CUDA includes) so host-only code can record it.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace fusecheck::cuda {

struct DeviceProvenance {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  int sm_clock_peak_mhz = 0;       // peak clocks the device reports (not current)
  int mem_clock_peak_mhz = 0;
  int mem_bus_width_bits = 0;
  std::size_t l2_bytes = 0;
  std::size_t global_mem_bytes = 0;
  int driver_version = 0;          // e.g. 13000 for CUDA 13.0
  int runtime_version = 0;
  int cublas_version = 0;          // major*10000 + minor*100 + patch
  double copy_bandwidth_gbs = 0;   // device-to-device copy, bytes read + written; 0 = not measured

  // "name (sm_90, 132 SMs)" for one-line logs.
  std::string summary() const;
  // Key/value pairs for result attributes and benchmark context (stable key names).
  std::vector<std::pair<std::string, std::string>> attributes() const;
};

// Number of CUDA devices this process can use; 0 when there is no driver or no device
// (never throws), so tests can skip cleanly on machines without a GPU.
int visible_device_count();

// Reason to print when a GPU test skips ("no CUDA device visible: <runtime error>").
std::string no_device_reason();

// Reads the device's properties and versions; when measure_copy is set, also times a
// device-to-device copy of `copy_bytes` (median of several) to fill copy_bandwidth_gbs.
DeviceProvenance query_device(int index, bool measure_copy = true,
                              std::size_t copy_bytes = std::size_t(1) << 30);

// Device-to-device copy bandwidth in GB/s (10^9 bytes/s), counting bytes read plus bytes
// written, median over `repetitions` copies of `bytes` on the current device.
double measure_copy_bandwidth_gbs(std::size_t bytes, int repetitions = 10);

}  // namespace fusecheck::cuda
