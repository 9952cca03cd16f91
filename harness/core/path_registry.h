// Registry of paths by name. Built-in paths register in reference/register.cpp (CPU) and
// kernels/register.cpp (CUDA); a team's own paths come in as plug-ins, loaded at run time
// through the C ABI (include/fusecheck/path_plugin.h, harness/paths/plugin_loader.h).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness/core/dtype.h"
#include "harness/core/path.h"

namespace fusecheck {

using PathFactory =
    std::function<std::unique_ptr<Path>(const Checkpoint&, const PathOptions&)>;

struct PathInfo {
  std::string name{};
  std::string device{};     // "cpu" or "cuda"
  std::string description{};
  PathFactory factory{};
  std::string recipe{};        // the rounding recipe it follows ("" when none or chosen per use)
  std::string role{};          // "fused", "standard", "other"; "" = inferred from the name
  std::optional<DType> dtype{};  // activation dtype (ULP metrics); nullopt = inferred from the name
  std::vector<Tap> taps{};     // taps it exposes (empty: depends on the model)
  std::string origin{};        // "built in" or the plug-in file it came from
};

void register_path(PathInfo info);
const std::vector<PathInfo>& registered_paths();
const PathInfo* find_path(const std::string& name);
std::unique_ptr<Path> make_path(const std::string& name, const Checkpoint& ckpt,
                                const PathOptions& opts);  // InputError if unknown

// Registers every built-in path once (CPU paths always, CUDA paths when built with CUDA).
void register_builtin_paths();

}  // namespace fusecheck
