// Builds results files in the layout of docs/results-format.md for the results tests,
// with seeded, plausible values (errors growing with depth, op times with a spread), and
// edits copies of them. Writing the layout here keeps the tests independent of how fast
// a real `fusecheck run` is; test_run_roundtrip.cpp checks the real writer agrees.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace fusecheck::test {

struct FixtureSpec {
  std::string scenario = "tiny";
  std::string device = "cuda";
  std::string device_name = "NVIDIA H100 80GB HBM3";
  std::string profile = "qwen3-0.6b";  // empty: a checkpoint on disk, at model_path
  std::string model_path = "/tmp/synth";
  long n_layers = 4;
  std::vector<std::string> paths = {"fused-cuda", "standard-cuda"};
  std::vector<std::string> ops = {"rmsnorm_qkv", "attention", "o_proj", "mlp"};
  int repetitions = 50;
  double timing_noise = 0.02;  // relative half-width of each op's p10..p90 interval
  std::uint32_t seed = 1234;
};

// Writes a complete run file.
void write_fixture_run(const std::filesystem::path& file, const FixtureSpec& spec);

// Edits of a copy (open read-write, replace one value).
double read_cell(const std::filesystem::path& file, const std::string& dataset, std::size_t row, std::size_t col);
void set_cell(const std::filesystem::path& file, const std::string& dataset, std::size_t row, std::size_t col,
              double value);
// Multiplies op_median/p10/p90 of one (layer, op) of a timing group by `factor`.
void scale_op_time(const std::filesystem::path& file, const std::string& label, std::size_t layer,
                   std::size_t op, double factor);
// Multiplies every op time of every path by `factor` (and widens nothing).
void scale_all_op_times(const std::filesystem::path& file, double factor);
void set_string_attr(const std::filesystem::path& file, const std::string& object, const std::string& name,
                     const std::string& value);
// Deletes the object (group, dataset) at `object`, or the attribute `object@name`.
void remove_object(const std::filesystem::path& file, const std::string& object);

// A fresh directory for a test's files beside its scratch directory: run_fusecheck()
// empties the scratch directory itself on every call.
std::filesystem::path files_dir();

// Index of a tap in the /taps order.
std::size_t tap_index(const std::string& tap);

}  // namespace fusecheck::test
