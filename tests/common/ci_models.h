// The CI models the GPU path tests run on: the synthetic qwen3-tiny and llama-tiny
// checkpoints and the real stories260K.gguf. Header-only: the tests that use it link
// fusecheck_checkpoint already; test_support links fusecheck_core alone.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "harness/checkpoint/synth.h"
#include "harness/core/checkpoint.h"
#include "tests/common/test_support.h"

namespace fusecheck::test {

// Synthetic checkpoints (seed 7) are written once per build tree and reused by every test.
inline std::unique_ptr<Checkpoint> synth_model(const std::string& profile) {
  const char* bin = std::getenv("FUSECHECK_BINARY_DIR");
  const std::filesystem::path root = bin ? std::filesystem::path(bin) : std::filesystem::temp_directory_path();
  const std::filesystem::path dir = root / "test-scratch" / "gpu-models" / profile;
  if (!std::filesystem::exists(dir / "config.json")) {
    SynthOptions o;
    o.seed = 7;
    write_synthetic_checkpoint(profile, o, dir);
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
