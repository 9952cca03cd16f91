// Where the tests find the pinned GGUF test dependencies that scripts/fetch-test-deps
// (run by scripts/setup) puts into ignored folders: the `gguf` Python package (the
// independent dequantizer) and the real model stored quantized. Tests use them as
//   auto m = quantized_model(); if (!m) GTEST_SKIP() << quantized_model_skip_reason();
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace fusecheck::test {

// $FUSECHECK_PYDEPS/site (default <source>/.deps-py/site) when it holds the gguf package.
std::optional<std::filesystem::path> gguf_python_site();
std::string gguf_python_skip_reason();

// $FUSECHECK_MODEL_CACHE/stories260K-Q8_0.gguf (default <source>/models/...) when present.
std::optional<std::filesystem::path> quantized_model();
std::string quantized_model_skip_reason();

// Runs scripts/gguf_tool.py ARGS (shell-quoted) with the gguf package on PYTHONPATH;
// returns its exit code, stderr appended to `log`.
int run_gguf_tool(const std::filesystem::path& site, const std::string& args, std::string& log);

}  // namespace fusecheck::test
