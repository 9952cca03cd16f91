// Registry of paths by name. Built-in paths register in reference/register.cpp (CPU) and
// kernels/register.cpp (CUDA); a team adds its own fused path with one line there.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "harness/core/path.h"

namespace fusecheck {

using PathFactory =
    std::function<std::unique_ptr<Path>(const Checkpoint&, const PathOptions&)>;

struct PathInfo {
  std::string name;
  std::string device;       // "cpu" or "cuda"
  std::string description;
  PathFactory factory;
};

void register_path(PathInfo info);
const std::vector<PathInfo>& registered_paths();
const PathInfo* find_path(const std::string& name);
std::unique_ptr<Path> make_path(const std::string& name, const Checkpoint& ckpt,
                                const PathOptions& opts);  // InputError if unknown

// Registers every built-in path once (CPU paths always, CUDA paths when built with CUDA).
void register_builtin_paths();

}  // namespace fusecheck
