// example-cpu-bf16: the plug-in of examples/plugin-cpu. One path, the bf16 layer of
// bf16_layer.hpp run entirely on the CPU, so that CI exercises the whole plug-in ABI
// without a GPU (docs/plugin-paths.md walks through it).
#include <memory>
#include <stdexcept>
#include <string>

#include <fusecheck/path_plugin.hpp>

#include "bf16_layer.hpp"

namespace {

const fc_path_desc kPaths[] = {
    {"example-cpu-bf16", "cpu", "example-bf16", "other", FC_BF16,
     "bf16 storage, FP32 arithmetic, on the CPU (examples/plugin-cpu)"},
};

std::unique_ptr<fusecheck::plugin::Path> create(const std::string& name, const fc_model& model,
                                                const fc_create_options&) {
  if (name != "example-cpu-bf16") throw std::invalid_argument("unknown path " + name);
  return std::make_unique<example::Bf16Layer>(model, example::swiglu_cpu);
}

}  // namespace

FUSECHECK_EXPORT_PLUGIN("example-cpu-bf16", "1.0.0", kPaths, nullptr, create)
