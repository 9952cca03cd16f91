// Scenario YAML reader and validator (format: docs/scenarios.md). The text is untrusted:
// every problem, yaml-cpp's own included, is an InputError naming the file and the line,
// with the scenario's values shown printable and bounded; fuzz/fuzz_scenario.cpp holds it
// to that.
#include "harness/run/scenario.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/core.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "harness/checkpoint/synth.h"
#include "harness/core/error.h"
#include "harness/core/recipe_mix.h"
#include "harness/core/path_registry.h"
#include "harness/core/untrusted.h"
#include "harness/paths/plugin_loader.h"

namespace fusecheck::run {

namespace {

// Far above any real scenario (explicit ids for a long prefill are a few hundred KB);
// it stops `run /dev/zero` or a misnamed model file from being read whole.
constexpr std::uintmax_t kMaxScenarioBytes = 8u << 20;
// Every count (batch, lengths, steps, ids): the sum of two stays an int. What a model
// and a machine can hold is checked at run time (run_limits.h).
constexpr long long kMaxCount = 1'000'000'000;

// A value from the scenario quoted in an error: printable and short.
std::string quote_value(std::string_view value) { return "'" + printable(value, 80) + "'"; }

// Knows the file being read so every error can name it, the line and the key.
class Reader {
 public:
  explicit Reader(std::filesystem::path file) : file_(std::move(file)) {}

  // The file alone (a problem of the whole file, or one YAML gives no line for).
  [[noreturn]] void fail_file(const std::string& problem) const {
    throw InputError(printable(file_.string(), 300), printable(problem, 400));
  }
  // A position yaml-cpp reports (its line is 0-based, -1 when unknown).
  [[noreturn]] void fail_at(const YAML::Mark& mark, const std::string& problem) const {
    std::string where = file_.string();
    if (mark.line >= 0) where += ":" + std::to_string(mark.line + 1);
    throw InputError(printable(where, 300), printable(problem, 400));
  }

  [[noreturn]] void fail(const YAML::Node& node, const std::string& key,
                         const std::string& problem) const {
    std::string where = file_.string();
    if (node.IsDefined() && node.Mark().line >= 0) where += ":" + std::to_string(node.Mark().line + 1);
    if (!key.empty()) where += ": " + key;
    throw InputError(printable(where, 300), printable(problem, 400));
  }

  // A mapping whose keys are plain names, each once (yaml-cpp would keep the first of a
  // repeated key and ignore the rest without a word).
  void expect_map(const YAML::Node& node, const std::string& key) const {
    if (!node.IsMap()) fail(node, key, "expected a mapping (key: value)");
    std::set<std::string> seen;
    for (const auto& kv : node) {
      const std::string name = key_name(kv.first, key);
      if (!seen.insert(name).second) fail(kv.first, join(key, name), "key " + quote_value(name) + " given twice");
    }
  }

  std::string key_name(const YAML::Node& k, const std::string& key) const {
    if (!k.IsScalar()) fail(k, key, "a key must be a plain name, not a list or mapping");
    return k.Scalar();
  }

  // Rejects keys outside `allowed`, naming them and what is allowed.
  void check_keys(const YAML::Node& node, const std::string& key,
                  std::initializer_list<const char*> allowed) const {
    expect_map(node, key);
    for (const auto& kv : node) {
      const auto name = kv.first.Scalar();
      if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return name == a; })) {
        std::string list;
        for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        fail(kv.first, join(key, name), "unknown key " + quote_value(name) + " (expected one of: " + list + ")");
      }
    }
  }

  template <typename T>
  T get(const YAML::Node& node, const std::string& key, const char* type_name) const {
    if (!node.IsScalar()) fail(node, key, std::string("expected ") + type_name);
    if (node.Mark().line >= 0) lines_[key] = node.Mark().line + 1;
    try {
      return node.as<T>();
    } catch (const YAML::Exception&) {
      fail(node, key, std::string("expected ") + type_name + ", got " + quote_value(node.Scalar()));
    }
  }
  int get_int(const YAML::Node& n, const std::string& key, int min_value) const {
    const auto v = get<long long>(n, key, "an integer");
    if (v < min_value || v > kMaxCount) {
      fail(n, key, fmt::format("must be an integer in [{}, {}], got {}", min_value, kMaxCount, n.Scalar()));
    }
    return static_cast<int>(v);
  }
  std::uint64_t get_seed(const YAML::Node& n, const std::string& key) const {
    return get<std::uint64_t>(n, key, "a non-negative integer seed");
  }
  double get_double(const YAML::Node& n, const std::string& key) const {
    const auto v = get<double>(n, key, "a number");
    if (!std::isfinite(v)) fail(n, key, "must be a finite number");
    return v;
  }
  bool get_bool(const YAML::Node& n, const std::string& key) const {
    return get<bool>(n, key, "true or false");
  }
  std::string get_string(const YAML::Node& n, const std::string& key) const {
    return get<std::string>(n, key, "a string");
  }
  Tap get_tap(const YAML::Node& n, const std::string& key) const {
    const auto name = get_string(n, key);
    const auto tap = tap_from_name(name);
    if (!tap) {
      std::string known;
      for (Tap t : kLayerTaps) known += (known.empty() ? "" : ", ") + std::string(tap_name(t));
      for (Tap t : kHeadTaps) known += ", " + std::string(tap_name(t));
      fail(n, key, "unknown tap " + quote_value(name) + " (known: " + known + ")");
    }
    return *tap;
  }

  static std::string join(const std::string& a, const std::string& b) {
    return a.empty() ? b : a + "." + b;
  }
  const std::filesystem::path& file() const { return file_; }
  const std::map<std::string, int>& lines() const { return lines_; }
  // Records where `key` is, for a check made later under that name (Scenario::where).
  void note(const std::string& key, const YAML::Node& node) const {
    if (node.IsDefined() && node.Mark().line >= 0) lines_[key] = node.Mark().line + 1;
  }

 private:
  std::filesystem::path file_;
  mutable std::map<std::string, int> lines_;  // of every value read, for Scenario::where
};

// ${VAR} and $VAR from the environment, so scenarios can name the shared model folder.
std::string expand_env(const Reader& rd, const YAML::Node& node, const std::string& key,
                       const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '$') {
      out += text[i];
      continue;
    }
    std::string var;
    if (i + 1 < text.size() && text[i + 1] == '{') {
      const auto end = text.find('}', i + 2);
      if (end == std::string::npos) rd.fail(node, key, "unterminated ${ in " + quote_value(text));
      var = text.substr(i + 2, end - i - 2);
      i = end;
    } else {
      std::size_t j = i + 1;
      while (j < text.size() && (std::isalnum(static_cast<unsigned char>(text[j])) || text[j] == '_')) ++j;
      var = text.substr(i + 1, j - i - 1);
      i = j - 1;
    }
    const char* value = std::getenv(var.c_str());
    if (!value || !*value) rd.fail(node, key, "environment variable " + quote_value(var) + " is not set");
    out += value;
  }
  return out;
}

void read_model(const Reader& rd, const YAML::Node& node, Scenario& sc) {
  rd.check_keys(node, "model", {"path", "synth"});
  const bool has_path = bool(node["path"]), has_synth = bool(node["synth"]);
  if (has_path == has_synth) rd.fail(node, "model", "give exactly one of 'path' or 'synth'");
  if (has_path) {
    std::filesystem::path p = expand_env(rd, node["path"], "model.path", rd.get_string(node["path"], "model.path"));
    if (p.is_relative()) p = rd.file().parent_path() / p;
    sc.model.path = p.lexically_normal();
    return;
  }
  const YAML::Node s = node["synth"];
  rd.check_keys(s, "model.synth", {"profile", "layers", "seed", "dtype", "overrides"});
  if (!s["profile"]) rd.fail(s, "model.synth", "missing key 'profile'");
  SynthModel m;
  m.profile = rd.get_string(s["profile"], "model.synth.profile");
  if (s["layers"]) {
    m.layers = rd.get_int(s["layers"], "model.synth.layers", 1);
    if (*m.layers > kMaxSynthLayers) {
      rd.fail(s["layers"], "model.synth.layers", fmt::format("must be at most {}, got {}", kMaxSynthLayers, *m.layers));
    }
  }
  if (s["seed"]) m.seed = rd.get_seed(s["seed"], "model.synth.seed");
  if (s["dtype"]) {
    m.dtype = rd.get_string(s["dtype"], "model.synth.dtype");
    if (m.dtype != "bf16" && m.dtype != "f16" && m.dtype != "f32") {
      rd.fail(s["dtype"], "model.synth.dtype", "unknown dtype " + quote_value(m.dtype) + " (bf16, f16, f32)");
    }
  }
  if (s["overrides"]) {
    rd.expect_map(s["overrides"], "model.synth.overrides");
    for (const auto& kv : s["overrides"]) {
      const auto key = kv.first.Scalar();
      m.overrides[key] = rd.get_string(kv.second, "model.synth.overrides." + key);
    }
  }
  sc.model.synth = m;
}

std::vector<std::int32_t> read_id_list(const Reader& rd, const YAML::Node& n, const std::string& key) {
  if (!n.IsSequence() || n.size() == 0) rd.fail(n, key, "expected a non-empty list of token ids");
  std::vector<std::int32_t> ids;
  for (std::size_t i = 0; i < n.size(); ++i) {
    ids.push_back(rd.get_int(n[i], key + "[" + std::to_string(i) + "]", 0));
  }
  return ids;
}

void read_tokens(const Reader& rd, const YAML::Node& node, Scenario& sc) {
  rd.check_keys(node, "tokens", {"ids", "seed", "count", "prompt"});
  if (int(bool(node["ids"])) + int(bool(node["seed"]) || bool(node["count"])) + int(bool(node["prompt"])) > 1) {
    rd.fail(node, "tokens", "give one of 'ids', 'prompt' or 'seed'/'count'");
  }
  if (node["prompt"]) {
    // Encoded with the model's tokenizer when the run opens it (run_command.cpp).
    sc.tokens.prompt = rd.get_string(node["prompt"], "tokens.prompt");
  }
  if (node["ids"]) {
    const YAML::Node ids = node["ids"];
    rd.note("tokens.ids", ids);
    if (ids.IsSequence() && ids.size() > 0 && ids[0].IsSequence()) {
      for (std::size_t b = 0; b < ids.size(); ++b) {
        sc.tokens.ids.push_back(read_id_list(rd, ids[b], "tokens.ids[" + std::to_string(b) + "]"));
      }
    } else {
      sc.tokens.ids.push_back(read_id_list(rd, ids, "tokens.ids"));
    }
  }
  if (node["seed"]) sc.seeds.tokens = rd.get_seed(node["seed"], "tokens.seed");
  if (node["count"]) sc.tokens.count = rd.get_int(node["count"], "tokens.count", 1);
}

void read_phase(const Reader& rd, const YAML::Node& node, Scenario& sc) {
  rd.check_keys(node, "phase", {"prefill", "decode"});
  if (bool(node["prefill"]) == bool(node["decode"])) {
    rd.fail(node, "phase", "give exactly one of 'prefill: N' or 'decode: {kv_len, steps}'");
  }
  if (node["prefill"]) {
    sc.phase = {Phase::Prefill, rd.get_int(node["prefill"], "phase.prefill", 1), 0};
    return;
  }
  const YAML::Node d = node["decode"];
  rd.check_keys(d, "phase.decode", {"kv_len", "steps"});
  if (!d["kv_len"]) rd.fail(d, "phase.decode", "missing key 'kv_len'");
  sc.phase.kind = Phase::Decode;
  sc.phase.prefill_len = rd.get_int(d["kv_len"], "phase.decode.kv_len", 1);
  sc.phase.decode_steps = d["steps"] ? rd.get_int(d["steps"], "phase.decode.steps", 1) : 1;
}

// `layers: {"0-2": fused-v1, 5: hf-bf16}` beside `recipe: BASE` (docs/scenarios.md): the
// recipe mix BASE+fused-v1@0-2+hf-bf16@5 (harness/core/recipe_mix.h).
std::string read_layer_recipes(const Reader& rd, const YAML::Node& node, const std::string& key,
                               const std::string& base) {
  rd.expect_map(node, key);
  if (node.size() == 0) rd.fail(node, key, "expected a map of layers to recipes, e.g. {\"0-2\": fused-v1}");
  if (base.empty()) rd.fail(node, key, "needs `recipe:` beside it (the recipe of every other layer)");
  if (base.find('+') != std::string::npos) {
    rd.fail(node, key, "`recipe:` already assigns layers; use one of the two forms");
  }
  std::string text = base;
  for (const auto& entry : node) {
    const std::string range = rd.key_name(entry.first, key);
    text += "+" + rd.get_string(entry.second, key + "." + range) + "@" + range;
  }
  try {
    return parse_recipe_mix(text).text();
  } catch (const InputError& e) {
    rd.fail(node, key, e.what());
  }
}

PathRequest read_path(const Reader& rd, const YAML::Node& n, const std::string& key) {
  PathRequest p;
  if (n.IsScalar()) {
    const auto text = rd.get_string(n, key);
    // NAME:RECIPE, unless the whole text names a path (fused-cuda:batch-invariant).
    const auto colon = find_path(text) ? std::string::npos : text.find(':');
    p.name = text.substr(0, colon);
    if (colon != std::string::npos) p.recipe = text.substr(colon + 1);
  } else {
    rd.check_keys(n, key, {"name", "recipe", "role", "layers"});
    if (!n["name"]) rd.fail(n, key, "missing key 'name'");
    p.name = rd.get_string(n["name"], key + ".name");
    if (n["recipe"]) p.recipe = rd.get_string(n["recipe"], key + ".recipe");
    if (n["layers"]) p.recipe = read_layer_recipes(rd, n["layers"], key + ".layers", p.recipe);
    if (n["role"]) {
      p.role = rd.get_string(n["role"], key + ".role");
      if (p.role != "fused" && p.role != "standard" && p.role != "other") {
        rd.fail(n["role"], key + ".role", "unknown role " + quote_value(p.role) + " (fused, standard, other)");
      }
    }
  }
  if (!is_known_path_name(p.name)) {
    std::string known;
    for (const auto& info : registered_paths()) known += (known.empty() ? "" : ", ") + info.name;
    rd.fail(n, key, "unknown path " + quote_value(p.name) + " (known: " + known + ")");
  }
  if (!p.recipe.empty() && p.name != "emulated-cpu") {
    rd.fail(n, key, "only emulated-cpu takes a recipe (" + quote_value(p.label()) + ")");
  }
  if (p.recipe.find('+') != std::string::npos) {
    try {
      p.recipe = parse_recipe_mix(p.recipe).text();
    } catch (const InputError& e) {
      rd.fail(n, key, e.what());
    }
  }
  if (p.role.empty()) p.role = infer_role(p.name, p.recipe);
  return p;
}

// Loads each plug-in (relative to the scenario's folder) before the paths are read, so
// that its paths are known by name.
void read_plugins(const Reader& rd, const YAML::Node& node, Scenario& sc) {
  if (!node.IsSequence()) rd.fail(node, "plugins", "expected a list of plug-in files (FILE.so)");
  for (std::size_t i = 0; i < node.size(); ++i) {
    const std::filesystem::path given = rd.get_string(node[i], "plugins[" + std::to_string(i) + "]");
    if (printable(given.string()) != given.string()) {
      rd.fail(node[i], "plugins[" + std::to_string(i) + "]",
              "control characters or broken UTF-8 in the plug-in path");
    }
    const auto file = given.is_absolute() ? given : sc.file.parent_path() / given;
    load_plugin(file);
    sc.plugins.push_back(file);
  }
}

void read_modes(const Reader& rd, const YAML::Node& node, Scenario& sc) {
  if (!node.IsSequence()) rd.fail(node, "modes", "expected a list (isolated, propagated, {perturb: ...})");
  sc.modes = ModeSpec{false, false, std::nullopt, std::nullopt};
  for (std::size_t i = 0; i < node.size(); ++i) {
    const std::string key = "modes[" + std::to_string(i) + "]";
    const YAML::Node m = node[i];
    if (m.IsScalar()) {
      const auto name = m.Scalar();
      if (name == "isolated") sc.modes.isolated = true;
      else if (name == "propagated") sc.modes.propagated = true;
      else if (name == "perturb") sc.modes.perturb = PerturbSpec{};
      else if (name == "invariance") sc.modes.invariance = InvarianceSpec{};
      else rd.fail(m, key, "unknown mode " + quote_value(name) + " (isolated, propagated, perturb, invariance)");
      continue;
    }
    rd.check_keys(m, key, {"perturb"});
    if (!m["perturb"]) rd.fail(m, key, "expected isolated, propagated, perturb or {perturb: {layer, tap, size}}");
    const YAML::Node p = m["perturb"];
    const std::string pk = key + ".perturb";
    rd.check_keys(p, pk, {"layer", "tap", "size"});
    PerturbSpec spec;
    if (p["layer"]) {
      spec.layer = rd.get_int(p["layer"], pk + ".layer", 0);
      rd.note("modes.perturb.layer", p["layer"]);
    }
    if (p["tap"]) {
      spec.tap = rd.get_tap(p["tap"], pk + ".tap");
      if (spec.tap == Tap::final_norm || spec.tap == Tap::logits) {
        rd.fail(p["tap"], pk + ".tap", "perturbation must be at a layer tap, not the head");
      }
    }
    if (p["size"]) {
      spec.relative_size = rd.get_double(p["size"], pk + ".size");
      if (!(spec.relative_size > 0)) rd.fail(p["size"], pk + ".size", "must be > 0");
    }
    sc.modes.perturb = spec;
  }
  if (!sc.modes.isolated && !sc.modes.propagated && !sc.modes.perturb && !sc.modes.invariance) {
    rd.fail(node, "modes", "no mode selected");
  }
  // Every results file holds each path's accuracy against the reference: invariance
  // alone brings propagated with it (docs/invariance.md).
  if (sc.modes.invariance && !sc.modes.isolated && !sc.modes.propagated) sc.modes.propagated = true;
}

// A list of distinct integers >= min_value, at most kMaxListed of them.
std::vector<int> read_int_list(const Reader& rd, const YAML::Node& node, const std::string& key, int min_value) {
  constexpr std::size_t kMaxListed = 64;
  if (!node.IsSequence() || node.size() == 0) rd.fail(node, key, "expected a non-empty list of integers");
  if (node.size() > kMaxListed) rd.fail(node, key, fmt::format("at most {} values, got {}", kMaxListed, node.size()));
  std::vector<int> out;
  for (std::size_t i = 0; i < node.size(); ++i) {
    const int v = rd.get_int(node[i], key + "[" + std::to_string(i) + "]", min_value);
    if (std::find(out.begin(), out.end(), v) != out.end()) rd.fail(node[i], key, fmt::format("{} listed twice", v));
    out.push_back(v);
  }
  return out;
}

// The `invariance:` block (requires `invariance` in modes).
void read_invariance(const Reader& rd, const YAML::Node& node, Scenario& sc) {
  rd.check_keys(node, "invariance", {"checks", "batch_sizes", "runs", "kv_chunks", "decode_steps"});
  if (!sc.modes.invariance) rd.fail(node, "invariance", "given but modes do not include invariance");
  InvarianceSpec& spec = *sc.modes.invariance;
  const int n = sc.phase.tokens_per_sequence();
  if (node["checks"]) {
    const YAML::Node c = node["checks"];
    if (!c.IsSequence() || c.size() == 0) rd.fail(c, "invariance.checks", "expected a non-empty list of checks");
    spec.checks.clear();
    for (std::size_t i = 0; i < c.size(); ++i) {
      const std::string key = "invariance.checks[" + std::to_string(i) + "]";
      const std::string name = rd.get_string(c[i], key);
      const auto check = invariance_check_from_name(name);
      if (!check) {
        std::string known;
        for (InvarianceCheck k : kInvarianceChecks) known += (known.empty() ? "" : ", ") + std::string(invariance_check_name(k));
        rd.fail(c[i], key, "unknown check " + quote_value(name) + " (" + known + ")");
      }
      if (std::find(spec.checks.begin(), spec.checks.end(), *check) != spec.checks.end()) {
        rd.fail(c[i], key, "check " + quote_value(name) + " listed twice");
      }
      spec.checks.push_back(*check);
    }
    // Table order, whatever the listing order.
    std::sort(spec.checks.begin(), spec.checks.end());
  }
  // A batch of 2..kMaxInvarianceBatch: each holds distinct seeded neighbours.
  constexpr int kMaxInvarianceBatch = 256;
  if (node["batch_sizes"]) {
    spec.batch_sizes = read_int_list(rd, node["batch_sizes"], "invariance.batch_sizes", 2);
    rd.note("invariance.batch_sizes", node["batch_sizes"]);
    for (std::size_t i = 0; i < spec.batch_sizes.size(); ++i) {
      if (spec.batch_sizes[i] > kMaxInvarianceBatch) {
        rd.fail(node["batch_sizes"][i], "invariance.batch_sizes",
                fmt::format("must be at most {}, got {}", kMaxInvarianceBatch, spec.batch_sizes[i]));
      }
    }
  }
  if (node["runs"]) {
    spec.runs = rd.get_int(node["runs"], "invariance.runs", 2);
    if (spec.runs > 16) rd.fail(node["runs"], "invariance.runs", fmt::format("must be at most 16, got {}", spec.runs));
  }
  if (node["kv_chunks"]) {
    spec.kv_chunks = read_int_list(rd, node["kv_chunks"], "invariance.kv_chunks", 1);
    for (std::size_t i = 0; i < spec.kv_chunks.size(); ++i) {
      if (spec.kv_chunks[i] >= n) {
        rd.fail(node["kv_chunks"][i], "invariance.kv_chunks",
                fmt::format("a first chunk of {} leaves nothing for the second: the phase has {} tokens", spec.kv_chunks[i], n));
      }
    }
  }
  if (node["decode_steps"]) {
    spec.decode_steps = rd.get_int(node["decode_steps"], "invariance.decode_steps", 1);
    if (spec.decode_steps >= n) {
      rd.fail(node["decode_steps"], "invariance.decode_steps",
              fmt::format("must be below the phase's {} tokens (a prefill comes first), got {}", n, spec.decode_steps));
    }
  }
}

GateThresholds read_thresholds(const Reader& rd, const YAML::Node& node, const std::string& key,
                               bool allow_taps) {
  if (allow_taps) {
    rd.check_keys(node, key, {"rel_l2", "max_abs", "max_rel", "cosine_min", "ulp_p99",
                              "frac_outside", "noise_floor_ratio", "taps"});
  } else {
    rd.check_keys(node, key, {"rel_l2", "max_abs", "max_rel", "cosine_min", "ulp_p99",
                              "frac_outside", "noise_floor_ratio"});
  }
  GateThresholds g;
  // Each threshold within the range its metric can take: a negative rel_l2 would fail
  // every cell, a cosine_min above 1 too.
  auto read = [&](const char* name, double& field, double lo, double hi) {
    if (!node[name]) return;
    field = rd.get_double(node[name], Reader::join(key, name));
    if (field < lo || field > hi) {
      rd.fail(node[name], Reader::join(key, name),
              hi == HUGE_VAL ? fmt::format("must be >= {}, got {}", lo, node[name].Scalar())
                             : fmt::format("must be in [{}, {}], got {}", lo, hi, node[name].Scalar()));
    }
  };
  read("rel_l2", g.rel_l2, 0, HUGE_VAL);
  read("max_abs", g.max_abs, 0, HUGE_VAL);
  read("max_rel", g.max_rel, 0, HUGE_VAL);
  read("cosine_min", g.cosine_min, -1, 1);
  read("ulp_p99", g.ulp_p99, 0, HUGE_VAL);
  read("frac_outside", g.frac_outside, 0, 1);
  read("noise_floor_ratio", g.noise_floor_ratio, 0, HUGE_VAL);
  return g;
}

void read_gates(const Reader& rd, const YAML::Node& node, Scenario& sc) {
  sc.gates.all = read_thresholds(rd, node, "gates", true);
  if (!node["taps"]) return;
  rd.expect_map(node["taps"], "gates.taps");
  for (const auto& kv : node["taps"]) {
    const std::string key = "gates.taps." + kv.first.Scalar();
    const Tap tap = rd.get_tap(kv.first, key);
    sc.gates.per_tap[tap] = read_thresholds(rd, kv.second, key, false);
  }
}

void read_timing(const Reader& rd, const YAML::Node& node, Scenario& sc) {
  if (node.IsScalar()) {
    sc.timing.enabled = rd.get_bool(node, "timing");
    return;
  }
  rd.check_keys(node, "timing", {"enabled", "warmup", "repetitions", "cold_l2", "reference"});
  if (node["enabled"]) sc.timing.enabled = rd.get_bool(node["enabled"], "timing.enabled");
  if (node["warmup"]) sc.timing.warmup = rd.get_int(node["warmup"], "timing.warmup", 0);
  if (node["repetitions"]) sc.timing.repetitions = rd.get_int(node["repetitions"], "timing.repetitions", 1);
  if (node["cold_l2"]) sc.timing.cold_l2 = rd.get_bool(node["cold_l2"], "timing.cold_l2");
  if (node["reference"]) sc.timing.reference = rd.get_bool(node["reference"], "timing.reference");
}

void read_reference(const Reader& rd, const YAML::Node& node, Scenario& sc) {
  YAML::Node name_node = node;
  std::string key = "reference";
  if (node.IsMap()) {
    rd.check_keys(node, "reference", {"path", "ref64"});
    if (node["ref64"]) sc.ref64 = rd.get_bool(node["ref64"], "reference.ref64");
    if (!node["path"]) return;
    name_node = node["path"];
    key = "reference.path";
  }
  sc.reference = rd.get_string(name_node, key);
  if (sc.reference != "auto" && sc.reference != "ref32-cpu" && sc.reference != "ref32-cuda") {
    rd.fail(name_node, key, "must be auto, ref32-cpu or ref32-cuda, got " + quote_value(sc.reference));
  }
}

}  // namespace

GateThresholds GateSpec::resolve(Tap tap, DType dtype) const {
  GateThresholds g = default_gates(dtype);
  auto overlay = [](GateThresholds& dst, const GateThresholds& src) {
    auto pick = [](double& d, double s) {
      if (!std::isnan(s)) d = s;
    };
    pick(dst.rel_l2, src.rel_l2);
    pick(dst.max_abs, src.max_abs);
    pick(dst.max_rel, src.max_rel);
    pick(dst.cosine_min, src.cosine_min);
    pick(dst.ulp_p99, src.ulp_p99);
    pick(dst.frac_outside, src.frac_outside);
    pick(dst.noise_floor_ratio, src.noise_floor_ratio);
  };
  overlay(g, all);
  if (auto it = per_tap.find(tap); it != per_tap.end()) overlay(g, it->second);
  return g;
}

bool is_known_path_name(const std::string& name) {
  static const std::set<std::string> builtin = {"ref64-cpu", "ref32-cpu", "emulated-cpu",
                                                "ref32-cuda", "ref64-cuda", "standard-cuda", "fused-cuda"};
  return builtin.count(name) > 0 || find_path(name) != nullptr;
}

std::string infer_role(const std::string& name, const std::string& recipe) {
  if (const PathInfo* info = find_path(name); info && !info->role.empty()) return info->role;
  if (name == "fused-cuda" || (name == "emulated-cpu" && recipe.rfind("fused", 0) == 0)) return "fused";
  if (name == "standard-cuda" || (name == "emulated-cpu" && (recipe.empty() || recipe == "hf-bf16"))) {
    return "standard";
  }
  return "other";
}

DType path_dtype(const std::string& name, const std::string& recipe) {
  if (const PathInfo* info = find_path(name); info && info->dtype) return *info->dtype;
  if (name == "ref64-cpu" || name == "ref64-cuda" || name == "ref32-cpu" || name == "ref32-cuda") return DType::F32;
  if (recipe.find("fp16") != std::string::npos || recipe.find("f16") == 0) return DType::F16;
  if (recipe.find("f32") != std::string::npos || recipe.find("fp32") != std::string::npos) return DType::F32;
  return DType::BF16;
}

namespace {

// Documents in `text`, counted up to 2 (yaml-cpp 0.7's LoadAll never ends on some
// inputs: fuzz/fuzz_scenario.cpp found a 20-byte one; its parser, stopped at 2, does).
int count_documents(const std::string& text) {
  struct Ignore : YAML::EventHandler {
    void OnDocumentStart(const YAML::Mark&) override {}
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
  } ignore;
  std::istringstream in(text);
  YAML::Parser parser(in);
  int documents = 0;
  while (documents < 2 && parser.HandleNextDocument(ignore)) ++documents;
  return documents;
}

Scenario read_scenario(const Reader& rd, const YAML::Node& root, const std::string& text) {
  const std::filesystem::path& file = rd.file();
  if (!root.IsMap()) rd.fail_file("a scenario is a YAML mapping (model:, paths:, ...)");
  rd.check_keys(root, "", {"name", "description", "model", "tokens", "batch", "phase", "paths",
                           "reference", "modes", "gates", "timing", "end_to_end", "seeds",
                           "force_fused", "plugins", "invariance"});
  register_builtin_paths();

  Scenario sc;
  sc.file = file;
  sc.text = text;
  sc.name = root["name"] ? rd.get_string(root["name"], "name") : file.stem().string();
  if (sc.name.empty()) rd.fail(root["name"], "name", "must not be empty");
  if (!root["model"]) rd.fail_file("missing key 'model' (path: or synth:)");
  read_model(rd, root["model"], sc);
  if (root["seeds"]) {
    const YAML::Node s = root["seeds"];
    rd.check_keys(s, "seeds", {"tokens", "paths", "perturbation"});
    if (s["tokens"]) sc.seeds.tokens = rd.get_seed(s["tokens"], "seeds.tokens");
    if (s["paths"]) sc.seeds.paths = rd.get_seed(s["paths"], "seeds.paths");
    if (s["perturbation"]) sc.seeds.perturbation = rd.get_seed(s["perturbation"], "seeds.perturbation");
  }
  if (root["tokens"]) read_tokens(rd, root["tokens"], sc);
  if (root["batch"]) sc.batch = rd.get_int(root["batch"], "batch", 1);
  if (!root["phase"]) rd.fail_file("missing key 'phase' (prefill: N or decode: {kv_len, steps})");
  read_phase(rd, root["phase"], sc);

  // One list stands for every sequence; it is copied per sequence only at run time, once
  // the sizes have been checked against the model (run_limits.h).
  const int need = sc.phase.tokens_per_sequence();
  if (!sc.tokens.ids.empty()) {
    if (sc.tokens.ids.size() != 1 && static_cast<long long>(sc.tokens.ids.size()) != sc.batch) {
      rd.fail(root["tokens"], "tokens.ids", "has " + std::to_string(sc.tokens.ids.size()) +
                                              " sequences but batch is " + std::to_string(sc.batch));
    }
    for (const auto& seq : sc.tokens.ids) {
      if (static_cast<int>(seq.size()) != need) {
        rd.fail(root["tokens"], "tokens.ids", "a sequence has " + std::to_string(seq.size()) +
                                                " ids; the phase needs " + std::to_string(need));
      }
    }
  } else if (sc.tokens.count && *sc.tokens.count != need) {
    rd.fail(root["tokens"], "tokens.count", "is " + std::to_string(*sc.tokens.count) +
                                              " but the phase needs " + std::to_string(need) + " tokens per sequence");
  }

  if (root["plugins"]) read_plugins(rd, root["plugins"], sc);
  if (!root["paths"]) rd.fail_file("missing key 'paths' (list of paths to compare)");
  const YAML::Node paths = root["paths"];
  if (!paths.IsSequence() || paths.size() == 0) rd.fail(paths, "paths", "expected a non-empty list of paths");
  for (std::size_t i = 0; i < paths.size(); ++i) {
    PathRequest p = read_path(rd, paths[i], "paths[" + std::to_string(i) + "]");
    for (const auto& q : sc.paths) {
      if (q.label() == p.label()) rd.fail(paths[i], "paths", "path " + quote_value(p.label()) + " listed twice");
    }
    sc.paths.push_back(p);
  }
  if (root["reference"]) read_reference(rd, root["reference"], sc);
  if (root["modes"]) read_modes(rd, root["modes"], sc);
  if (root["invariance"]) read_invariance(rd, root["invariance"], sc);
  if (root["gates"]) read_gates(rd, root["gates"], sc);
  if (root["timing"]) read_timing(rd, root["timing"], sc);
  if (root["end_to_end"]) {
    const YAML::Node e = root["end_to_end"];
    rd.check_keys(e, "end_to_end", {"greedy_steps", "kv_age", "scale_delivery"});
    if (e["greedy_steps"]) sc.greedy_steps = rd.get_int(e["greedy_steps"], "end_to_end.greedy_steps", 0);
    if (e["kv_age"]) {
      sc.kv_age = rd.get_bool(e["kv_age"], "end_to_end.kv_age");
      if (sc.kv_age && sc.greedy_steps == 0) {
        rd.fail(e["kv_age"], "end_to_end.kv_age", "needs greedy_steps above 0 (the decode steps it measures)");
      }
    }
    if (e["scale_delivery"]) {
      sc.scale_delivery = rd.get_bool(e["scale_delivery"], "end_to_end.scale_delivery");
      if (sc.scale_delivery && sc.greedy_steps == 0) {
        rd.fail(e["scale_delivery"], "end_to_end.scale_delivery",
                "needs greedy_steps above 0 (the decode steps whose keys the static scales may clip)");
      }
    }
  }
  if (root["force_fused"]) sc.force_fused = rd.get_bool(root["force_fused"], "force_fused");
  return sc;
}

}  // namespace

std::string Scenario::where(const std::string& key) const {
  std::string w = file.string();
  if (auto it = key_lines.find(key); it != key_lines.end()) w += ":" + std::to_string(it->second);
  return printable(w + ": " + key, 300);
}

Scenario parse_scenario(const std::string& text, const std::filesystem::path& file) {
  const Reader rd(file);
  YAML::Node root;
  try {
    root = YAML::Load(text);
    if (count_documents(text) > 1) rd.fail_file("holds several YAML documents; a scenario is one");
  } catch (const YAML::Exception& e) {
    rd.fail_at(e.mark, "invalid YAML: " + e.msg);
  }
  // The checks above name every problem they know; yaml-cpp may still refuse a node in a
  // way they did not foresee, which is the scenario's fault all the same.
  try {
    Scenario sc = read_scenario(rd, root, text);
    sc.key_lines = rd.lines();
    return sc;
  } catch (const YAML::Exception& e) {
    rd.fail_at(e.mark, e.msg);
  }
}

Scenario load_scenario(const std::filesystem::path& file) {
  const Reader rd(file);
  std::error_code ec;
  const auto status = std::filesystem::status(file, ec);
  if (ec || !std::filesystem::exists(status)) {
    rd.fail_file("cannot read the scenario file: " + (ec ? ec.message() : std::string("no such file")));
  }
  if (!std::filesystem::is_regular_file(status)) rd.fail_file("is not a regular file (a scenario is a YAML file)");
  const auto size = std::filesystem::file_size(file, ec);
  if (ec) rd.fail_file("cannot read the scenario file: " + ec.message());
  if (size > kMaxScenarioBytes) {
    rd.fail_file(fmt::format("is {} bytes; a scenario is a YAML file of at most {} bytes", size, kMaxScenarioBytes));
  }
  std::ifstream in(file, std::ios::binary);
  std::string text(size, '\0');
  if (!in || !in.read(text.data(), static_cast<std::streamsize>(size))) rd.fail_file("cannot read the scenario file");
  return parse_scenario(text, file);
}

}  // namespace fusecheck::run
