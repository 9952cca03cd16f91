// Reading a sweep point's sidecar (sidecar.h).
#include "harness/calibrate/sidecar.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "harness/check/check.h"
#include "harness/core/error.h"

namespace fusecheck::calibrate {

void add_qk_depth(std::vector<StaticComponent>& components) {
  std::vector<std::pair<int, double>> per_layer;
  std::optional<double> final_gain;
  for (const auto& c : components) {
    if (c.name == "qk.amplification") per_layer.emplace_back(c.layer, c.value);
    if (c.name == "final_norm.gain") final_gain = c.value;
  }
  std::erase_if(components, [](const StaticComponent& c) { return c.name == "model.qk_depth"; });
  if (per_layer.empty()) return;
  std::stable_sort(per_layer.begin(), per_layer.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<double> values;
  for (const auto& [layer, value] : per_layer) values.push_back(value);
  components.push_back({"model.qk_depth", -1, check::qk_depth_figure(values, final_gain)});
}

namespace {

// A sidecar written before the super-weight figure measured its entry against the other
// entries (it has no `numel` per layer) holds |value| / rms(all entries), which saturates
// at sqrt(numel). The figure is recomputed from that gain and the down projection's size,
// known for a synthetic model from its profile (`down_numel`, 0 when unknown: the value
// is kept, off by a factor 1 + gain^2 / (2 numel), under 1e-4 for the figures of every
// unplanted matrix swept).
void upgrade_super_weights(const nlohmann::json& j, std::int64_t down_numel, std::vector<StaticComponent>& out) {
  if (down_numel < 2) return;
  const auto read = j.find("read");
  if (read == j.end() || !read->is_object()) return;
  const auto deep = read->find("deep_read");
  if (deep == read->end() || !deep->is_object()) return;
  const auto layers = deep->find("layers");
  if (layers == deep->end() || !layers->is_array()) return;
  for (const auto& l : *layers) {
    if (!l.is_object() || l.contains("numel") || !l.contains("layer") || !l["layer"].is_number_integer() ||
        !l.contains("entry_gain") || !l["entry_gain"].is_number() || !l.contains("neuron_gain") ||
        !l["neuron_gain"].is_number()) {
      continue;
    }
    const double gain = l["entry_gain"].get<double>();
    if (!(gain > 0) || gain * gain >= static_cast<double>(down_numel)) continue;
    // With rms(all) = 1: the entry is `gain`, the sum of squares numel.
    const double figure = check::super_weight_entry_gain(gain, static_cast<double>(down_numel), down_numel) *
                          l["neuron_gain"].get<double>();
    for (auto& c : out) {
      if (c.name == "mlp.super_weight" && c.layer == l["layer"].get<int>()) c.value = figure;
    }
  }
}

}  // namespace

std::vector<StaticComponent> components_from_check_json(const std::string& text, const std::string& where,
                                                        std::int64_t down_numel) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw InputError(where, "not a fusecheck check JSON report: not valid JSON");
  const auto components = j.is_object() ? j.find("components") : j.end();
  const auto scorer = j.is_object() ? j.find("scorer") : j.end();
  if (components == j.end() || !components->is_array() || scorer == j.end() || *scorer != "fusecheck") {
    throw InputError(where, "not a fusecheck-scorer JSON report (no components)");
  }
  std::vector<StaticComponent> out;
  for (const auto& c : *components) {
    if (!c.is_object() || !c.contains("name") || !c["name"].is_string() || !c.contains("layer") ||
        !c["layer"].is_number_integer() || !c.contains("value") || !c["value"].is_number()) {
      throw InputError(where, "a component lacks a string name, an integer layer or a numeric value");
    }
    out.push_back({c["name"].get<std::string>(), c["layer"].get<int>(), c["value"].get<double>()});
  }
  add_qk_depth(out);
  upgrade_super_weights(j, down_numel, out);
  return out;
}

}  // namespace fusecheck::calibrate
