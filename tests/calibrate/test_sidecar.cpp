// Calibration's reader of a sweep point's sidecar (harness/calibrate/sidecar.h): what it
// takes from a `fusecheck check --format json` report, and how it brings a sidecar written
// before the super-weight figure left the entry out of its scale up to today's figure.
#include <cmath>
#include <cstdint>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/calibrate/sidecar.h"
#include "harness/check/check.h"
#include "harness/core/error.h"

namespace fusecheck::calibrate {
namespace {

constexpr std::int64_t kDownNumel = std::int64_t{1024} * 3072;  // qwen3-0.6b's down_proj

// A sidecar with two layers' q/k figures and, under --deep, one super-weight candidate per
// layer: layer 1's entry gain 1720.66 is the GPU sweep's planted 128 as the old figure read it.
nlohmann::json sidecar(bool with_numel) {
  nlohmann::json j = {{"scorer", "fusecheck"}, {"components", nlohmann::json::array()}};
  j["components"].push_back({{"name", "qk.amplification"}, {"layer", 0}, {"value", 4.0}});
  j["components"].push_back({{"name", "qk.amplification"}, {"layer", 1}, {"value", 9.0}});
  j["components"].push_back({{"name", "mlp.super_weight"}, {"layer", 0}, {"value", 5.08}});
  j["components"].push_back({{"name", "mlp.super_weight"}, {"layer", 1}, {"value", 1720.66 * 15.77}});
  nlohmann::json layers = nlohmann::json::array();
  layers.push_back({{"layer", 0}, {"entry_gain", 4.95}, {"neuron_gain", 5.08 / 4.95}});
  layers.push_back({{"layer", 1}, {"entry_gain", 1720.66}, {"neuron_gain", 15.77}});
  if (with_numel) {
    for (auto& l : layers) l["numel"] = kDownNumel;
  }
  j["read"] = {{"deep", true}, {"deep_read", {{"layers", layers}}}};
  return j;
}

double component(const std::vector<StaticComponent>& c, const std::string& name, int layer) {
  for (const auto& x : c) {
    if (x.name == name && x.layer == layer) return x.value;
  }
  return std::nan("");
}

TEST(CalibrateSidecar, AnOlderSuperWeightFigureIsRecomputedAgainstTheOtherEntries) {
  const auto c = components_from_check_json(sidecar(false).dump(), "old.check.json", kDownNumel);
  // Entry gain g against all N entries is g sqrt((N - 1) / (N - g^2)) against the others.
  const double g = 1720.66, n = static_cast<double>(kDownNumel);
  EXPECT_NEAR(component(c, "mlp.super_weight", 1), g * std::sqrt((n - 1) / (n - g * g)) * 15.77, 1e-6 * 1.1e5);
  EXPECT_GT(component(c, "mlp.super_weight", 1), 1.0e5);  // the planted 128: about 128 / 0.018 x 15.8
  EXPECT_NEAR(component(c, "mlp.super_weight", 0), 5.08, 1e-4);  // an unplanted matrix: unchanged to 1e-5
}

TEST(CalibrateSidecar, ASidecarWithNumelIsReadAsWritten) {
  const auto c = components_from_check_json(sidecar(true).dump(), "new.check.json", kDownNumel);
  EXPECT_DOUBLE_EQ(component(c, "mlp.super_weight", 1), 1720.66 * 15.77);
}

TEST(CalibrateSidecar, WithoutTheDownProjectionSizeTheFigureIsKept) {
  const auto c = components_from_check_json(sidecar(false).dump(), "real.check.json", 0);
  EXPECT_DOUBLE_EQ(component(c, "mlp.super_weight", 1), 1720.66 * 15.77);
}

TEST(CalibrateSidecar, TheQkDepthFigureIsAddedWhenAbsent) {
  const auto c = components_from_check_json(sidecar(true).dump(), "new.check.json", kDownNumel);
  // 4 in layer 0 (weight 1) and 9 in layer 1 of 2 (weight 0.25 + 0.75 (1 - 1/2)^2), over 2
  // layers; no final norm in this sidecar.
  EXPECT_DOUBLE_EQ(component(c, "model.qk_depth", -1), std::exp((std::log(4.0) + 0.4375 * std::log(9.0)) / 2.0));
}

TEST(CalibrateSidecar, MalformedReportsAreOneLineInputErrors) {
  for (const std::string text : {std::string("{"), std::string("[1, 2]"), std::string(R"({"scorer": "braidinfer",
      "components": []})"), std::string(R"({"scorer": "fusecheck", "components": [{"name": 3, "layer": 0,
      "value": 1}]})"), std::string("\x01\x02\n\x7f")}) {
    try {
      (void)components_from_check_json(text, "bad.check.json", kDownNumel);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.check.json"), std::string::npos) << e.what();
    }
  }
}

TEST(CalibrateSidecar, MalformedDeepReadSectionsAreIgnored) {
  for (const nlohmann::json deep : {nlohmann::json(3), nlohmann::json::object(), nlohmann::json{{"layers", 5}},
                                    nlohmann::json{{"layers", {nlohmann::json{{"layer", "x"}}, 7}}}}) {
    nlohmann::json j = sidecar(false);
    j["read"]["deep_read"] = deep;
    const auto c = components_from_check_json(j.dump(), "odd.check.json", kDownNumel);
    EXPECT_DOUBLE_EQ(component(c, "mlp.super_weight", 1), 1720.66 * 15.77) << deep.dump();
  }
}

}  // namespace
}  // namespace fusecheck::calibrate
