// Validated access to run results files (see run_results.h, docs/results-format.md).
#include "harness/results/run_results.h"

#include <cmath>

#include <fmt/core.h>

#include "harness/core/error.h"

namespace fusecheck::results {

namespace {

std::string require_string(const H5Node& root, const std::string& name, const Run& run) {
  auto v = root.attr_string(name);
  if (!v) run.fail("/", fmt::format("missing string attribute '{}'", name));
  return *v;
}

long require_int(const H5Node& root, const std::string& name, const Run& run) {
  auto v = root.attr_number(name);
  if (!v || !std::isfinite(*v)) run.fail("/", fmt::format("missing integer attribute '{}'", name));
  return static_cast<long>(*v);
}

}  // namespace

Run::Run(std::string file, std::string where, const H5Node* root)
    : file_(std::move(file)), where_(std::move(where)), root_(root) {
  auto format = root_->attr_string("format");
  if (!format || *format != kRunFormat) {
    fail("/", fmt::format("not a fusecheck run (attribute format is '{}', expected '{}')",
                          format.value_or(""), kRunFormat));
  }
  auto version = root_->attr_number("format_version");
  if (!version || *version != kRunFormatVersion) {
    fail("/", fmt::format("unsupported format_version {} (this fusecheck reads {})",
                          version ? fmt::format("{}", *version) : "(missing)", kRunFormatVersion));
  }
  RunIdentity& id = identity_;
  id.scenario_name = require_string(*root_, "scenario_name", *this);
  id.device = require_string(*root_, "device", *this);
  id.device_name = root_->attr_string("device_name").value_or("");
  std::string profile = root_->attr_string("model_profile").value_or("");
  if (!profile.empty()) {
    std::string options = root_->attr_string("model_options").value_or("");
    id.model = "synth:" + profile + (options.empty() ? "" : "{" + options + "}");
  } else {
    // The checkpoint's name, not its path: the same model sits under another folder on
    // every machine (FUSECHECK_MODELS), and a baseline must compare across them.
    std::filesystem::path model = root_->attr_string("model_path").value_or("");
    if (!model.has_filename()) model = model.parent_path();
    id.model = model.filename().string();
  }
  id.architecture = root_->attr_string("architecture").value_or("");
  id.n_layers = require_int(*root_, "n_layers", *this);
  if (id.n_layers < 0) fail("/", "negative n_layers");
  id.phase = root_->attr_string("phase").value_or("");
  id.batch = static_cast<long>(root_->attr_number("batch").value_or(0));
  id.n_tokens = static_cast<long>(root_->attr_number("n_tokens").value_or(0));
  id.scenario_text = root_->attr_string("scenario_text").value_or("");
  id.plugins = root_->attr_string("plugins").value_or("");

  taps_ = strings(*root_, "taps");
  head_taps_ = strings(*root_, "head_taps");
  if (taps_.empty()) fail("/taps", "missing or empty tap list");
}

std::string Run::label() const { return where_.empty() ? file_ : file_ + "#" + where_; }

void Run::fail(const std::string& object, const std::string& problem) const {
  throw InputError(label(), fmt::format("{}: {}", object, problem));
}

std::vector<std::string> Run::path_labels() const {
  std::vector<std::string> out;
  if (const H5Node* paths = root_->group("paths")) {
    for (const auto& [name, group] : paths->groups) out.push_back(name);
  }
  return out;
}

const H5Node* Run::mode_group(const std::string& label, const std::string& mode) const {
  const H5Node* paths = root_->group("paths");
  if (!paths) return nullptr;
  auto it = paths->groups.find(label);
  if (it == paths->groups.end()) return nullptr;
  auto m = it->second.groups.find(mode);
  return m == it->second.groups.end() ? nullptr : &m->second;
}

std::optional<Table> Run::table(const H5Node& group, const std::string& name,
                                std::size_t rows) const {
  auto it = group.datasets.find(name);
  if (it == group.datasets.end()) return std::nullopt;
  const H5Value& v = it->second;
  if (!v.is_number()) fail(name, "expected a numeric dataset");
  Table t;
  if (v.dims.size() == 1) {
    t.rows = v.dims[0];
    t.cols = 1;
  } else if (v.dims.size() == 2) {
    t.rows = v.dims[0];
    t.cols = v.dims[1];
  } else {
    fail(name, fmt::format("expected a 1-D or 2-D dataset, found rank {}", v.dims.size()));
  }
  if (t.rows != rows) fail(name, fmt::format("has {} rows, expected {}", t.rows, rows));
  t.values = v.numbers;
  return t;
}

std::optional<Table> Run::layer_table(const H5Node& mode_group, const std::string& metric) const {
  auto t = table(mode_group, metric, static_cast<std::size_t>(n_layers()));
  if (t && t->cols != taps_.size()) {
    fail(metric, fmt::format("has {} columns, expected {} taps", t->cols, taps_.size()));
  }
  return t;
}

std::optional<Table> Run::head_table(const H5Node& mode_group, const std::string& metric) const {
  auto head = mode_group.groups.find("head");
  if (head == mode_group.groups.end()) return std::nullopt;
  auto t = table(head->second, metric, head_taps_.size());
  if (!t) return t;
  if (t->cols != 1) fail("head/" + metric, "expected a 1-D dataset");
  // One row of head taps, so that head and layer tables index alike (row, tap).
  t->cols = t->rows;
  t->rows = 1;
  return t;
}

std::optional<std::vector<double>> Run::vector(const H5Node& group, const std::string& name,
                                               std::size_t n) const {
  auto t = table(group, name, n);
  if (!t) return std::nullopt;
  if (t->cols != 1) fail(name, "expected a 1-D dataset");
  return t->values;
}

std::vector<std::string> Run::strings(const H5Node& group, const std::string& name) const {
  auto it = group.datasets.find(name);
  if (it == group.datasets.end()) return {};
  if (!it->second.is_string()) fail(name, "expected a string dataset");
  return it->second.strings;
}

ResultsFile ResultsFile::load(const std::filesystem::path& file) {
  return from_tree(file.string(), read_h5_tree(file));
}

ResultsFile ResultsFile::load_image(std::span<const std::byte> bytes, const std::string& name) {
  return from_tree(name, read_h5_tree_image(bytes, name));
}

ResultsFile ResultsFile::from_tree(const std::string& name, H5Node tree) {
  ResultsFile rf;
  rf.file_ = name;
  rf.tree_ = std::make_unique<H5Node>(std::move(tree));
  const H5Node& root = *rf.tree_;
  auto format = root.attr_string("format");
  if (format && *format == kMergedFormat) {
    const H5Node* runs = root.group("runs");
    if (!runs || runs->groups.empty()) throw InputError(rf.file_, "merged results file holds no runs");
    for (const auto& [name, group] : runs->groups) {
      rf.runs_.emplace_back(rf.file_, "/runs/" + name, &group);
    }
  } else if (format && *format == kRunFormat) {
    rf.runs_.emplace_back(rf.file_, "", &root);
  } else {
    throw InputError(rf.file_, fmt::format("not a fusecheck results file (root attribute format "
                                           "is '{}', expected '{}' or '{}')",
                                           format.value_or("(missing)"), kRunFormat, kMergedFormat));
  }
  return rf;
}

std::vector<std::string> identity_differences(const RunIdentity& a, const RunIdentity& b) {
  std::vector<std::string> out;
  auto check = [&](const char* field, const auto& x, const auto& y) {
    if (x != y) out.push_back(fmt::format("{}: '{}' vs '{}'", field, x, y));
  };
  check("scenario", a.scenario_name, b.scenario_name);
  check("device", a.device, b.device);
  check("device name", a.device_name, b.device_name);
  check("model", a.model, b.model);
  check("architecture", a.architecture, b.architecture);
  check("layers", a.n_layers, b.n_layers);
  check("phase", a.phase, b.phase);
  check("batch", a.batch, b.batch);
  check("tokens", a.n_tokens, b.n_tokens);
  return out;
}

}  // namespace fusecheck::results
