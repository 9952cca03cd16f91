// `fusecheck paths [--plugin FILE.so]...`: every registered path, built in or plugged in,
// with its device, recipe, role, activation dtype, taps and where it came from, so that a
// scenario author sees the names `paths:` accepts and a plug-in author sees that the
// plug-in loads (every check of the loader runs here too).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "harness/cli/command.h"
#include "harness/core/path_registry.h"
#include "harness/paths/plugin_loader.h"
#include "harness/run/scenario.h"

namespace fusecheck::cli {
namespace {

std::string taps_text(const PathInfo& p) {
  if (p.taps.empty()) return p.origin.rfind("built in", 0) == 0 ? "every tap the model has" : "listed when created";
  std::string s;
  for (Tap t : p.taps) s += (s.empty() ? "" : ",") + std::string(tap_name(t));
  return s;
}

int list_paths(const std::vector<std::string>& plugins) {
  register_builtin_paths();
  for (const auto& file : plugins) load_plugin(file);
  for (const PathInfo& p : registered_paths()) {
    // emulated-cpu's recipe is chosen per use; its default decides role and dtype.
    const std::string recipe = p.name == "emulated-cpu" ? "" : p.recipe;
    const std::string role = run::infer_role(p.name, recipe);
    const std::string dtype(dtype_name(run::path_dtype(p.name, recipe)));
    std::printf("%s\n", p.name.c_str());
    std::printf("  device %s; recipe %s; role %s; dtype %s\n", p.device.c_str(),
                p.recipe.empty() ? "-" : p.recipe.c_str(), role.c_str(), dtype.c_str());
    std::printf("  taps: %s\n", taps_text(p).c_str());
    std::printf("  from: %s\n", p.origin.c_str());
    if (!p.description.empty()) std::printf("  %s\n", p.description.c_str());
  }
  for (const PluginProvenance& pl : loaded_plugins()) {
    std::string env;
    for (const auto& [k, v] : pl.env) env += (env.empty() ? "" : ", ") + k + "=" + v;
    std::printf("plug-in %s %s: %s (sha256 %s); env switches: %s\n", pl.name.c_str(), pl.version.c_str(),
                pl.file.c_str(), pl.sha256.c_str(), env.empty() ? "none" : env.c_str());
  }
  return 0;
}

const CommandRegistrar kPaths{{
    "paths",
    "Lists every registered path (built in or from --plugin) with device, recipe, role and taps",
    [](CLI::App& sub) -> std::function<int()> {
      auto plugins = std::make_shared<std::vector<std::string>>();
      sub.add_option("--plugin", *plugins, "path plug-in FILE.so to load first (repeatable)")
          ->allow_extra_args(false);
      return [plugins]() { return list_paths(*plugins); };
    },
}};

}  // namespace
}  // namespace fusecheck::cli
