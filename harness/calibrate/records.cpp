// Reading a folder of run results into calibration records (records.h).
#include "harness/calibrate/records.h"
#include "harness/calibrate/sidecar.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <sstream>

#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include "harness/check/check.h"
#include "harness/check/fp8_static.h"
#include "harness/checkpoint/profiles.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "harness/results/run_results.h"

namespace fusecheck::calibrate {

namespace {

double unit_roundoff(const std::string& dtype) {
  if (dtype == "BF16") return std::ldexp(1.0, -8);
  if (dtype == "F16") return std::ldexp(1.0, -11);
  return std::ldexp(1.0, -24);
}

StaticScore read_static(const results::Run& run, const std::string& scorer) {
  StaticScore s;
  const results::H5Node* g = run.root().group("static/" + scorer);
  if (!g) run.fail("/static/" + scorer, "missing (a results file from before the static check?)");
  s.score = g->attr_number("score").value_or(std::nan(""));
  s.status = g->attr_string("status").value_or("");
  s.estimated_amplification = g->attr_number("estimated_amplification").value_or(std::nan(""));
  s.layer_figure = run.vector(*g, "layer_figure", static_cast<std::size_t>(run.n_layers())).value_or(std::vector<double>{});
  return s;
}

PathRecord read_path(const results::Run& run, const std::string& label) {
  PathRecord p;
  p.label = label;
  const results::H5Node& g = run.root().groups.at("paths").groups.at(label);
  p.role = g.attr_string("role").value_or("other");
  p.dtype = g.attr_string("dtype").value_or("");
  p.unit_roundoff = unit_roundoff(p.dtype);
  const auto L = static_cast<std::size_t>(run.n_layers());
  if (const results::H5Node* a = g.group("amplification")) {
    p.local_error = run.vector(*a, "local_error", L).value_or(std::vector<double>{});
    p.propagated_error = run.vector(*a, "propagated_error", L).value_or(std::vector<double>{});
    p.logits_propagated_error = a->attr_number("logits_propagated_error").value_or(std::nan(""));
  }
  if (const results::H5Node* prop = run.mode_group(label, "propagated")) {
    if (auto t = run.layer_table(*prop, "rel_l2")) p.propagated_rel_l2 = t->values;
    if (auto t = run.head_table(*prop, "rel_l2")) p.head_propagated_rel_l2 = t->values;
  }
  const results::H5Node* e = run.root().group("end_to_end/" + label);
  if (!e) run.fail("/end_to_end/" + label, "missing: calibration needs the end-to-end figures");
  const auto rows = static_cast<std::size_t>(run.number_attr("measured_rows").value_or(0));
  p.kl = run.vector(*e, "kl", rows).value_or(std::vector<double>{});
  p.ref_margin = run.vector(*e, "ref_margin", rows).value_or(std::vector<double>{});
  p.top1_match = run.vector(*e, "top1_match", rows).value_or(std::vector<double>{});
  if (p.kl.empty() || p.ref_margin.empty() || p.top1_match.empty()) {
    run.fail("/end_to_end/" + label, "needs kl, ref_margin and top1_match per position (results from a fusecheck "
                                     "older than the calibration issue lack ref_margin: rerun the point)");
  }
  if (const results::H5Node* eg = run.root().group("end_to_end")) {
    p.greedy_steps = static_cast<long>(eg->attr_number("greedy_steps").value_or(0));
  }
  p.greedy_first_mismatch = static_cast<long>(e->attr_number("greedy_first_mismatch").value_or(-1));
  return p;
}

}  // namespace

namespace {

std::vector<StaticComponent> components_from_json(const std::filesystem::path& file, std::int64_t down_numel) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return components_from_check_json(text.str(), file.string(), down_numel);
}

std::vector<StaticComponent> components_from_checkpoint(const std::string& model_path, const std::string& run_file) {
  if (model_path.empty() || !std::filesystem::exists(model_path)) {
    throw InputError(run_file, fmt::format("no .check.json beside it and its checkpoint '{}' is gone: "
                                           "rerun the point (scripts/sweep) or restore the checkpoint", model_path));
  }
  const auto ckpt = Checkpoint::open(model_path);
  const auto result = check::check_model(*ckpt, check::default_thresholds(), check::Scorer::Fusecheck, /*deep=*/true);
  std::vector<StaticComponent> out;
  for (const auto& c : result.components) out.push_back({c.name, c.layer, c.value});
  return out;
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) throw std::runtime_error("OpenSSL: SHA-256 init failed");
  }
  void update(const void* data, std::size_t n) {
    if (EVP_DigestUpdate(ctx_.get(), data, n) != 1) throw std::runtime_error("OpenSSL: SHA-256 update failed");
  }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), md, &len) != 1) throw std::runtime_error("OpenSSL: SHA-256 final failed");
    std::string s;
    for (unsigned i = 0; i < len; ++i) s += fmt::format("{:02x}", md[i]);
    return s;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

std::string file_sha256(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(file, "cannot read it to hash it");
  Sha256 h;
  std::vector<char> buf(1 << 16);
  while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
    h.update(buf.data(), static_cast<std::size_t>(in.gcount()));
  }
  return h.hex();
}

}  // namespace

const PathRecord* RunRecord::find_path(const std::string& label) const {
  for (const auto& p : paths) {
    if (p.label == label) return &p;
  }
  return nullptr;
}

const PathRecord* RunRecord::primary_path() const {
  for (const auto& p : paths) {
    if (p.role == "fused" && p.dtype == "BF16") return &p;
  }
  for (const auto& p : paths) {
    if (p.role == "fused") return &p;
  }
  return nullptr;
}

std::string recipe_of_path(const std::string& label) {
  const auto colon = label.find(':');
  return colon == std::string::npos ? label : label.substr(colon + 1);
}

bool is_fp8_path(const std::string& label) { return recipe_of_path(label).rfind("fp8-", 0) == 0; }

bool parse_point_description(const std::string& description, RunRecord& record) {
  std::istringstream words(description);
  std::string word;
  if (!(words >> word) || word != "calibration") return false;
  while (words >> word) {
    const auto eq = word.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    const std::string key = word.substr(0, eq), value = word.substr(eq + 1);
    if (key == "family") record.family = value;
    else if (key == "seed") record.seed = value;
    else if (key != "size") record.params[key] = value;
  }
  return true;
}

namespace {

// hidden x intermediate of a synthetic model's profile (the sweep overrides neither), 0
// for a checkpoint or an unknown profile.
std::int64_t synthetic_down_numel(const results::Run& run) {
  if (run.attr("model_source").value_or("") != "synth") return 0;
  const std::string name = run.attr("model_profile").value_or("");
  for (const auto& p : synth_profiles()) {
    if (p.name == name) return static_cast<std::int64_t>(p.hidden) * p.intermediate;
  }
  return 0;
}

}  // namespace

RunRecord load_run(const std::filesystem::path& file) {
  const auto rf = results::ResultsFile::load(file);
  if (rf.runs().size() != 1) {
    throw InputError(file.string(), "a merged results file; calibration reads one run per file (sweep output)");
  }
  const results::Run& run = rf.runs().front();
  RunRecord r;
  r.file = file.string();
  r.scenario_name = run.identity().scenario_name;
  r.model = run.identity().model;
  r.n_layers = static_cast<int>(run.n_layers());
  r.taps = run.taps();
  r.head_taps = run.head_taps();
  try {
    const YAML::Node sc = YAML::Load(run.identity().scenario_text);
    if (sc["description"]) parse_point_description(sc["description"].as<std::string>(), r);
  } catch (const YAML::Exception&) {
    // A scenario text that does not parse is not a sweep point: family "other".
  }
  r.braidinfer = read_static(run, "braidinfer");
  r.fusecheck = read_static(run, "fusecheck");
  for (const auto& label : run.path_labels()) r.paths.push_back(read_path(run, label));

  const std::string model_path = run.attr("model_path").value_or("");
  auto sidecar = file;
  sidecar.replace_extension(".check.json");
  if (std::filesystem::exists(sidecar)) {
    r.components = components_from_json(sidecar, synthetic_down_numel(run));
    r.components_source = sidecar.string();
  } else {
    r.components = components_from_checkpoint(model_path, r.file);
    r.components_source = model_path;
  }
  const bool has_fp8_path = std::any_of(r.paths.begin(), r.paths.end(),
                                        [](const PathRecord& p) { return is_fp8_path(p.label); });
  if (has_fp8_path && !model_path.empty() && std::filesystem::exists(model_path)) {
    const auto ckpt = Checkpoint::open(model_path);
    const check::Fp8StaticFigure f = check::fp8_key_bound(*ckpt, "fp8-kv", 1.0);
    if (!f.layers.empty()) r.fp8_key_bound = f.layers[static_cast<std::size_t>(f.worst_layer)].ratio;
  }
  return r;
}

std::vector<RunRecord> load_results_dir(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir)) throw InputError(dir.string(), "not a folder of results");
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".h5") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) throw InputError(dir.string(), "no *.h5 results files in this folder");
  std::vector<RunRecord> runs;
  for (const auto& f : files) runs.push_back(load_run(f));
  return runs;
}

std::string results_identity(const std::vector<RunRecord>& runs) {
  Sha256 h;
  for (const auto& r : runs) {
    const std::string line = std::filesystem::path(r.file).filename().string() + " " + file_sha256(r.file) + "\n";
    h.update(line.data(), line.size());
  }
  return h.hex();
}

}  // namespace fusecheck::calibrate
