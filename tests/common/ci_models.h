// The CI models the GPU path tests run on: the synthetic qwen3-tiny and llama-tiny
// checkpoints and the real stories260K.gguf. Header-only: the tests that use it link
// fusecheck_checkpoint already; test_support links fusecheck_core alone.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

#include "harness/checkpoint/synth.h"
#include "harness/core/checkpoint.h"
#include "tests/common/test_support.h"

namespace fusecheck::test {

// Synthetic checkpoints (seed 7) are written once per build tree and reused by every test.
// ctest runs tests in parallel processes: each writes into its own folder and renames it
// into place, so no test opens a checkpoint another is still writing (a reader once met a
// truncated model.safetensors under ctest -j2); the loser of the rename drops its copy.
inline std::unique_ptr<Checkpoint> synth_model(const std::string& profile) {
  namespace fs = std::filesystem;
  const char* bin = std::getenv("FUSECHECK_BINARY_DIR");
  const fs::path root = bin ? fs::path(bin) : fs::temp_directory_path();
  const fs::path dir = root / "test-scratch" / "gpu-models" / profile;
  if (!fs::exists(dir / "config.json")) {
    const fs::path tmp = dir.parent_path() / (profile + ".tmp." + std::to_string(::getpid()));
    fs::remove_all(tmp);
    SynthOptions o;
    o.seed = 7;
    write_synthetic_checkpoint(profile, o, tmp);
    std::error_code ec;
    fs::rename(tmp, dir, ec);  // fails when another process's copy is already in place
    if (ec) fs::remove_all(tmp);
  }
  return Checkpoint::open(dir);
}

struct Model {
  std::string label;
  std::unique_ptr<Checkpoint> ckpt;
};

// The three CI models; stories260K is left out (and said so, as a failure) without the
// models folder.
inline std::vector<Model> ci_models() {
  std::vector<Model> out;
  out.push_back({"qwen3-tiny", synth_model("qwen3-tiny")});
  out.push_back({"llama-tiny", synth_model("llama-tiny")});
  if (auto dir = models_dir(); dir && std::filesystem::exists(*dir / "stories260K.gguf")) {
    out.push_back({"stories260K", Checkpoint::open(*dir / "stories260K.gguf")});
  } else {
    ADD_FAILURE() << "stories260K.gguf missing: " << models_dir_skip_reason();
  }
  return out;
}

}  // namespace fusecheck::test
