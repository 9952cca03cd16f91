// Default behaviours of Path and the path registry.
#include <algorithm>
#include <stdexcept>

#include "harness/core/error.h"
#include "harness/core/path.h"
#include "harness/core/path_registry.h"

namespace fusecheck {

void Path::set_perturbation(std::optional<Perturbation> p) {
  if (p) throw std::logic_error(name() + " does not support perturbation");
}

std::map<std::string, Headroom> Path::headroom(int) const { return {}; }

std::vector<OpTiming> Path::time_layer(int, int, int, const TimingOptions&) { return {}; }

DeviceTapSet Path::layer_on_device(int, const TapInput&) {
  throw std::logic_error(name() + " does not offer device taps");
}
DeviceTapSet Path::head_on_device(const TapInput&) { throw std::logic_error(name() + " does not offer device taps"); }
TapMatrix Path::to_host(const DeviceTap&) { throw std::logic_error(name() + " does not offer device taps"); }
DeviceTapSummary Path::device_metrics(const DeviceTap&, const DeviceTap&, const DeviceTap*, DType, double, double) {
  throw std::logic_error(name() + " does not offer device taps");
}
DeviceNextToken Path::device_next_token(const DeviceTap&, const DeviceTap&) {
  throw std::logic_error(name() + " does not offer device taps");
}

namespace {
std::vector<PathInfo>& registry() {
  static std::vector<PathInfo> r;
  return r;
}
}  // namespace

void register_path(PathInfo info) {
  auto& r = registry();
  if (info.origin.empty()) info.origin = "built in";
  auto it = std::find_if(r.begin(), r.end(), [&](const PathInfo& p) { return p.name == info.name; });
  if (it != r.end()) {
    *it = std::move(info);
  } else {
    r.push_back(std::move(info));
  }
}

const std::vector<PathInfo>& registered_paths() { return registry(); }

const PathInfo* find_path(const std::string& name) {
  for (const auto& p : registry()) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::unique_ptr<Path> make_path(const std::string& name, const Checkpoint& ckpt,
                                const PathOptions& opts) {
  const PathInfo* info = find_path(name);
  if (!info) {
    std::string known;
    for (const auto& p : registry()) known += (known.empty() ? "" : ", ") + p.name;
    // flashinfer-cuda is a plug-in built only where FlashInfer's headers were fetched.
    const std::string how = name != "flashinfer-cuda" ? "" :
        "; flashinfer-cuda lives in libfusecheck_flashinfer.so: run scripts/fetch-flashinfer, rebuild, and pass "
        "--plugin BUILD/harness/cli/libfusecheck_flashinfer.so or list it under plugins: (docs/flashinfer.md)";
    throw InputError("", "unknown path '" + name + "' (known: " + known + ")" + how);
  }
  return info->factory(ckpt, opts);
}

}  // namespace fusecheck
