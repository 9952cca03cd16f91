// A DeviceProvenance (device_info.h) as the plug-in ABI's fc_device_info: what every CUDA
// plug-in's device_info entry returns (libfusecheck_cuda, libfusecheck_flashinfer).
#pragma once

#include <cstdio>
#include <string>

#include "fusecheck/path_plugin.h"
#include "kernels/common/device_info.h"

namespace fusecheck::cuda {

// `libraries`: the library versions the plug-in names ("cublas 130100, flashinfer 0.6.18").
inline fc_device_info to_abi(const DeviceProvenance& prov, const std::string& libraries) {
  fc_device_info out{};
  std::snprintf(out.name, sizeof out.name, "%s", prov.name.c_str());
  std::snprintf(out.library_versions, sizeof out.library_versions, "%s", libraries.c_str());
  out.driver_version = prov.driver_version;
  out.runtime_version = prov.runtime_version;
  out.sm_clock_peak_mhz = prov.sm_clock_peak_mhz;
  out.mem_clock_peak_mhz = prov.mem_clock_peak_mhz;
  out.copy_bandwidth_gbs = prov.copy_bandwidth_gbs;
  out.global_mem_bytes = prov.global_mem_bytes;
  return out;
}

}  // namespace fusecheck::cuda
