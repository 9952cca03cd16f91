// Writes one run's results to HDF5 in the layout of docs/results-format.md (format v1),
// atomically: into FILE.tmp-<pid>, renamed onto FILE only once complete.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "harness/run/crosscheck.h"
#include "harness/run/driver.h"

namespace fusecheck::run {

inline constexpr int kResultsFormatVersion = 1;

// A root attribute. int8 flags are written as int8, integers as int64.
struct RootAttr {
  struct Flag {
    bool value;
  };
  std::string name;
  std::variant<std::string, long long, double, Flag> value;
};

struct RunRecord {
  std::vector<RootAttr> attrs;                   // provenance and run description
  std::vector<std::vector<std::int32_t>> tokens; // [batch][n]
  int n_layers = 0;
  const RunResult* result = nullptr;
  std::vector<StaticFigures> statics;
  std::vector<CrossCheck> crosschecks;
  int greedy_steps = 0;
  // Greedy tokens as text (the model's tokenizer), by path label; empty without one.
  std::string reference_greedy_text;
  std::map<std::string, std::string> greedy_text;
  TimingSpec timing;
};

// Writes `record` to `file` via a temporary file in the same folder and a rename, so an
// earlier file of that name survives a failed or killed run. Creates missing folders.
void write_run_file(const std::filesystem::path& file, const RunRecord& record);

}  // namespace fusecheck::run
