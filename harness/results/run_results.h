// Typed, validated access to run results in the layout of docs/results-format.md (v1):
// one `fusecheck run` file, or a merged file (`fusecheck merge`) holding several runs
// under /runs/<scenario>/. Every accessor checks shapes, so the comparison and report
// code never index past a table; a malformed file is an InputError naming the file and
// the dataset.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "harness/results/h5_tree.h"

namespace fusecheck::results {

inline constexpr const char* kRunFormat = "fusecheck-run";
inline constexpr const char* kMergedFormat = "fusecheck-merged";
inline constexpr int kRunFormatVersion = 1;

// What makes two runs comparable. Two runs are refused when any field but
// scenario_text differs (unless the user allows it).
struct RunIdentity {
  std::string scenario_name;
  std::string device;       // cpu | cuda
  std::string device_name;  // GPU name or cpu
  std::string model;        // "synth:" profile + options, or the checkpoint's file/folder name
  std::string architecture;
  long n_layers = 0;
  std::string phase;
  long batch = 0;
  long n_tokens = 0;
  std::string scenario_text;  // a change is reported, not refused
  std::string plugins;        // plug-in builds (name version sha256; env), one per line; reported
};

// A row-major table of float64, rows x cols (a 1-D dataset of n is n x 1).
struct Table {
  std::size_t rows = 0, cols = 0;
  std::vector<double> values;
  double at(std::size_t r, std::size_t c) const { return values[r * cols + c]; }
};

class Run {
 public:
  Run(std::string file, std::string where, const H5Node* root);

  const std::string& file() const { return file_; }
  // The file, plus "#/runs/<name>" for a run inside a merged file.
  std::string label() const;
  const H5Node& root() const { return *root_; }
  const RunIdentity& identity() const { return identity_; }
  const std::vector<std::string>& taps() const { return taps_; }
  const std::vector<std::string>& head_taps() const { return head_taps_; }
  long n_layers() const { return identity_.n_layers; }

  std::optional<std::string> attr(const std::string& name) const { return root_->attr_string(name); }
  std::optional<double> number_attr(const std::string& name) const { return root_->attr_number(name); }

  // Group names below /paths (path labels), in name order.
  std::vector<std::string> path_labels() const;
  // /paths/<label>/<mode>; nullptr when that mode did not run.
  const H5Node* mode_group(const std::string& label, const std::string& mode) const;
  // A [n_layers x taps] table of `metric` in `mode_group`; nullopt when absent; throws
  // when present with another shape.
  std::optional<Table> layer_table(const H5Node& mode_group, const std::string& metric) const;
  // The [head_taps] dataset of `metric` in `mode_group/head`, as a 1 x head_taps table.
  std::optional<Table> head_table(const H5Node& mode_group, const std::string& metric) const;
  // A 1-D [n] vector dataset of `group`; nullopt when absent; throws on another shape.
  std::optional<std::vector<double>> vector(const H5Node& group, const std::string& name,
                                            std::size_t n) const;
  // Any 2-D table of `group` with `rows` rows (columns as stored).
  std::optional<Table> table(const H5Node& group, const std::string& name, std::size_t rows) const;
  std::vector<std::string> strings(const H5Node& group, const std::string& name) const;

  [[noreturn]] void fail(const std::string& object, const std::string& problem) const;

 private:
  std::string file_;
  std::string where_;  // "" or "/runs/<name>"
  const H5Node* root_;
  RunIdentity identity_;
  std::vector<std::string> taps_;
  std::vector<std::string> head_taps_;
};

// A results file: the tree it was read into and the runs it holds.
class ResultsFile {
 public:
  // Reads and validates `file`: format and version, identity attributes, tap lists.
  static ResultsFile load(const std::filesystem::path& file);
  // The same from a file image in memory (the fuzz target), `name` naming it in errors.
  static ResultsFile load_image(std::span<const std::byte> bytes, const std::string& name);

  const std::vector<Run>& runs() const { return runs_; }
  const std::string& file() const { return file_; }

 private:
  static ResultsFile from_tree(const std::string& name, H5Node tree);
  std::string file_;
  std::unique_ptr<H5Node> tree_;  // stable address for the runs' pointers
  std::vector<Run> runs_;
};

// The fields that differ between two identities ("device: cuda vs cpu"), empty when
// the runs are comparable. scenario_text is not among them.
std::vector<std::string> identity_differences(const RunIdentity& a, const RunIdentity& b);

}  // namespace fusecheck::results
