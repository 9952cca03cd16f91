// example-cuda-swiglu: the plug-in of examples/plugin-minimal. The bf16 layer of
// examples/plugin-cpu (bf16_layer.hpp) with its SwiGLU activation run by a CUDA kernel
// (swiglu.cu): the smallest GPU plug-in, showing a device path, its device functions for
// provenance, and a kernel of one's own under fusecheck's comparison.
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

#include <fusecheck/path_plugin.hpp>

#include "bf16_layer.hpp"
#include "swiglu.h"

namespace {

const fc_path_desc kPaths[] = {
    {"example-cuda-swiglu", "cuda", "example-bf16", "other", FC_BF16,
     "bf16 layer on the CPU with a CUDA SwiGLU kernel (examples/plugin-minimal)"},
};

std::unique_ptr<fusecheck::plugin::Path> create(const std::string& name, const fc_model& model,
                                                const fc_create_options&) {
  if (name != "example-cuda-swiglu") throw std::invalid_argument("unknown path " + name);
  if (swiglu_device_count() == 0) throw fusecheck::plugin::unsupported("no CUDA device");
  return std::make_unique<example::Bf16Layer>(model, swiglu_cuda);
}

std::int32_t device_count() { return swiglu_device_count(); }

int device_info(std::int32_t index, std::int32_t, fc_device_info* out, fc_error* err) {
  if (index < 0 || index >= swiglu_device_count()) {
    return fusecheck::plugin::detail::fail(err, 1, "no such CUDA device");
  }
  *out = fc_device_info{};
  std::snprintf(out->name, sizeof out->name, "CUDA device %d", index);
  return 0;
}

}  // namespace

FUSECHECK_EXPORT_GPU_PLUGIN("example-cuda-swiglu", "1.0.0", kPaths, nullptr, create, device_count, device_info)
