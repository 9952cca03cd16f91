// Scenario YAML validation: every bad input names the file, the line and the key.
#include <gtest/gtest.h>

#include "harness/core/error.h"
#include "harness/run/run_command.h"
#include "harness/run/scenario.h"

namespace fusecheck::run {
namespace {

const char* kMinimal = R"(
model: {synth: {profile: qwen3-tiny, layers: 2}}
phase: {prefill: 8}
paths: [fused-cuda]
)";

std::string error_of(const std::string& text) {
  try {
    parse_scenario(text, "scenarios/bad.yaml");
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Scenario, MinimalScenarioGetsDefaults) {
  const Scenario sc = parse_scenario(kMinimal, "scenarios/min.yaml");
  EXPECT_EQ(sc.name, "min");
  ASSERT_TRUE(sc.model.synth);
  EXPECT_EQ(sc.model.synth->profile, "qwen3-tiny");
  EXPECT_EQ(*sc.model.synth->layers, 2);
  EXPECT_EQ(sc.phase.kind, Phase::Prefill);
  EXPECT_EQ(sc.phase.tokens_per_sequence(), 8);
  ASSERT_EQ(sc.paths.size(), 1u);
  EXPECT_EQ(sc.paths[0].role, "fused");
  EXPECT_TRUE(sc.modes.isolated);
  EXPECT_TRUE(sc.modes.propagated);
  EXPECT_FALSE(sc.modes.perturb);
  EXPECT_EQ(sc.reference, "auto");
  EXPECT_TRUE(sc.timing.enabled);
  EXPECT_FALSE(sc.timing.reference);  // the reference is not event-timed unless asked
}

TEST(Scenario, FullScenarioReadsEveryKey) {
  const Scenario sc = parse_scenario(R"(
name: full
model: {synth: {profile: qwen3-tiny, layers: 3, seed: 5, dtype: f32, overrides: {k_norm_max: 12}}}
tokens: {seed: 9}
batch: 2
phase: {decode: {kv_len: 6, steps: 3}}
paths: [standard-cuda, "emulated-cpu:fused-v1", {name: emulated-cpu, recipe: hf-fp16, role: other}]
reference: {path: ref32-cpu, ref64: true}
modes: [isolated, {perturb: {layer: 1, tap: k, size: 0.01}}]
gates: {rel_l2: 0.2, taps: {logits: {rel_l2: 0.5, cosine_min: 0.9}}}
timing: {warmup: 1, repetitions: 5, cold_l2: true, reference: true}
end_to_end: {greedy_steps: 4}
seeds: {paths: 3, perturbation: 4}
force_fused: true
)", "x.yaml");
  EXPECT_EQ(sc.name, "full");
  EXPECT_EQ(sc.model.synth->overrides.at("k_norm_max"), "12");
  EXPECT_EQ(sc.seeds.tokens, 9u);
  EXPECT_EQ(sc.batch, 2);
  EXPECT_EQ(sc.phase.kind, Phase::Decode);
  EXPECT_EQ(sc.phase.prefill_len, 6);
  EXPECT_EQ(sc.phase.decode_steps, 3);
  EXPECT_EQ(sc.paths[1].label(), "emulated-cpu:fused-v1");
  EXPECT_EQ(sc.paths[1].role, "fused");
  EXPECT_EQ(sc.paths[2].role, "other");
  EXPECT_TRUE(sc.ref64);
  EXPECT_FALSE(sc.modes.propagated);
  ASSERT_TRUE(sc.modes.perturb);
  EXPECT_EQ(sc.modes.perturb->tap, Tap::k);
  EXPECT_DOUBLE_EQ(sc.modes.perturb->relative_size, 0.01);
  EXPECT_DOUBLE_EQ(sc.gates.resolve(Tap::logits, DType::BF16).rel_l2, 0.5);
  EXPECT_DOUBLE_EQ(sc.gates.resolve(Tap::q, DType::BF16).rel_l2, 0.2);
  EXPECT_DOUBLE_EQ(sc.gates.resolve(Tap::logits, DType::BF16).cosine_min, 0.9);
  EXPECT_EQ(sc.timing.repetitions, 5);
  EXPECT_TRUE(sc.timing.cold_l2);
  EXPECT_TRUE(sc.timing.reference);
  EXPECT_EQ(sc.greedy_steps, 4);
  EXPECT_TRUE(sc.force_fused);
}

TEST(Scenario, GatesDefaultPerDtypeWhenTheScenarioSetsNone) {
  const Scenario sc = parse_scenario(kMinimal, "m.yaml");
  EXPECT_DOUBLE_EQ(sc.gates.resolve(Tap::q, DType::BF16).rel_l2, default_gates(DType::BF16).rel_l2);
  EXPECT_DOUBLE_EQ(sc.gates.resolve(Tap::q, DType::F32).rel_l2, default_gates(DType::F32).rel_l2);
}

TEST(Scenario, UnknownTopLevelKeyNamesFileLineAndKey) {
  const auto e = error_of(std::string(kMinimal) + "colour: blue\n");
  EXPECT_NE(e.find("scenarios/bad.yaml:5"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key 'colour'"), std::string::npos) << e;
}

TEST(Scenario, UnknownNestedKeyNamesItsPath) {
  const auto e = error_of("model: {synth: {profile: qwen3-tiny, layer: 2}}\nphase: {prefill: 8}\npaths: [ref32-cpu]\n");
  EXPECT_NE(e.find("model.synth.layer"), std::string::npos) << e;
}

TEST(Scenario, WrongTypeIsReported) {
  const auto e = error_of("model: {synth: {profile: qwen3-tiny}}\nphase: {prefill: many}\npaths: [ref32-cpu]\n");
  EXPECT_NE(e.find("phase.prefill"), std::string::npos) << e;
  EXPECT_NE(e.find("expected an integer"), std::string::npos) << e;
}

TEST(Scenario, MissingModelIsReported) {
  const auto e = error_of("phase: {prefill: 8}\npaths: [ref32-cpu]\n");
  EXPECT_NE(e.find("missing key 'model'"), std::string::npos) << e;
}

TEST(Scenario, ModelNeedsExactlyOneSource) {
  const auto e = error_of("model: {}\nphase: {prefill: 8}\npaths: [ref32-cpu]\n");
  EXPECT_NE(e.find("exactly one of 'path' or 'synth'"), std::string::npos) << e;
}

TEST(Scenario, UnknownPathIsReportedWithTheKnownOnes) {
  const auto e = error_of("model: {synth: {profile: qwen3-tiny}}\nphase: {prefill: 8}\npaths: [turbo-cuda]\n");
  EXPECT_NE(e.find("paths[0]"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown path 'turbo-cuda'"), std::string::npos) << e;
}

TEST(Scenario, UnknownTapIsReported) {
  const auto e = error_of(std::string(kMinimal) + "modes: [{perturb: {layer: 0, tap: kk}}]\n");
  EXPECT_NE(e.find("modes[0].perturb.tap"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown tap 'kk'"), std::string::npos) << e;
}

TEST(Scenario, UnknownModeIsReported) {
  const auto e = error_of(std::string(kMinimal) + "modes: [isolated, sideways]\n");
  EXPECT_NE(e.find("unknown mode 'sideways'"), std::string::npos) << e;
}

TEST(Scenario, UnknownDtypeIsReported) {
  const auto e = error_of("model: {synth: {profile: qwen3-tiny, dtype: fp8}}\nphase: {prefill: 8}\npaths: [ref32-cpu]\n");
  EXPECT_NE(e.find("unknown dtype 'fp8'"), std::string::npos) << e;
}

TEST(Scenario, TokenCountMustMatchThePhase) {
  const auto e = error_of(std::string(kMinimal) + "tokens: {seed: 1, count: 9}\n");
  EXPECT_NE(e.find("tokens.count"), std::string::npos) << e;
}

TEST(Scenario, ExplicitIdsMustCoverThePhase) {
  const auto e = error_of("model: {synth: {profile: qwen3-tiny}}\nphase: {prefill: 3}\npaths: [ref32-cpu]\ntokens: {ids: [1, 2]}\n");
  EXPECT_NE(e.find("the phase needs 3"), std::string::npos) << e;
}

TEST(Scenario, InvalidYamlNamesTheLine) {
  const auto e = error_of("model: {synth: [\nphase: x\n");
  EXPECT_NE(e.find("invalid YAML"), std::string::npos) << e;
  EXPECT_NE(e.find("scenarios/bad.yaml:"), std::string::npos) << e;
}

TEST(Scenario, RecipeOnlyOnEmulatedPaths) {
  const auto e = error_of("model: {synth: {profile: qwen3-tiny}}\nphase: {prefill: 8}\npaths: [\"fused-cuda:fused-v1\"]\n");
  EXPECT_NE(e.find("only emulated-cpu takes a recipe"), std::string::npos) << e;
}

// A registered name that holds a colon is a path, not NAME:RECIPE.
TEST(Scenario, PathNameWithAColonIsReadWhole) {
  const Scenario sc = parse_scenario(
      "model: {synth: {profile: qwen3-tiny}}\nphase: {prefill: 8}\npaths: [\"fused-cuda:batch-invariant\"]\n",
      "scenarios/bi.yaml");
  ASSERT_EQ(sc.paths.size(), 1u);
  EXPECT_EQ(sc.paths[0].name, "fused-cuda:batch-invariant");
  EXPECT_EQ(sc.paths[0].recipe, "");
  EXPECT_EQ(sc.paths[0].role, "fused");
}

// fused-cuda:batch-invariant follows fused-v1 like fused-cuda: on the CPU it runs as
// emulated-cpu fused-v1 (once, beside fused-cuda), and the fused fallback replaces it.
TEST(Scenario, BatchInvariantFusedPlansLikeFusedCuda) {
  const std::string head = "model: {synth: {profile: qwen3-tiny}}\nphase: {prefill: 8}\n";
  std::vector<std::string> notes;
  const auto cpu = plan_paths(parse_scenario(head + "paths: [fused-cuda, \"fused-cuda:batch-invariant\"]\n", "a.yaml"),
                              "cpu", true, notes);
  ASSERT_EQ(cpu.size(), 1u);
  EXPECT_EQ(cpu[0].label(), "emulated-cpu:fused-v1");
  const auto fallback =
      plan_paths(parse_scenario(head + "paths: [\"fused-cuda:batch-invariant\"]\n", "b.yaml"), "cuda", false, notes);
  ASSERT_EQ(fallback.size(), 1u);
  EXPECT_EQ(fallback[0].label(), "standard-cuda");
}

// fused-cuda:fp8-kv* run on the CPU as their registered twin, emulated-cpu with the same
// fp8-kv recipe (not fused-v1), and fall back to standard-cuda like fused-cuda.
TEST(Scenario, Fp8KvFusedPathsPlanAsTheirEmulatedTwinOnTheCpu) {
  const std::string head = "model: {synth: {profile: qwen3-tiny}}\nphase: {prefill: 8}\n";
  std::vector<std::string> notes;
  const auto cpu = plan_paths(parse_scenario(head + "paths: [fused-cuda, \"fused-cuda:fp8-kv\", "
                                                    "\"fused-cuda:fp8-kv-per-head-dynamic\"]\n", "a.yaml"),
                              "cpu", true, notes);
  ASSERT_EQ(cpu.size(), 3u);
  EXPECT_EQ(cpu[0].label(), "emulated-cpu:fused-v1");
  EXPECT_EQ(cpu[1].label(), "emulated-cpu:fp8-kv");
  EXPECT_EQ(cpu[2].label(), "emulated-cpu:fp8-kv-per-head-dynamic");
  const auto fallback =
      plan_paths(parse_scenario(head + "paths: [\"fused-cuda:fp8-kv-dynamic\"]\n", "b.yaml"), "cuda", false, notes);
  ASSERT_EQ(fallback.size(), 1u);
  EXPECT_EQ(fallback[0].label(), "standard-cuda");
}

TEST(Scenario, LayersKeyAssignsRecipesPerLayerInTheCanonicalSpelling) {
  const std::string head = "model: {synth: {profile: qwen3-tiny}}\nphase: {prefill: 8}\npaths:\n";
  const Scenario keyed = parse_scenario(
      head + "  - {name: emulated-cpu, recipe: fp8-w8a8, layers: {7: hf-bf16, \"0-2\": fused-v1}}\n",
      "scenarios/mix.yaml");
  const Scenario inline_form = parse_scenario(head + "  - \"emulated-cpu:fp8-w8a8+hf-bf16@7+fused-v1@0-2\"\n",
                                              "scenarios/mix.yaml");
  EXPECT_EQ(keyed.paths.at(0).recipe, "fp8-w8a8+fused-v1@0-2+hf-bf16@7");
  EXPECT_EQ(inline_form.paths.at(0).recipe, keyed.paths.at(0).recipe);
  EXPECT_EQ(keyed.paths.at(0).label(), "emulated-cpu:fp8-w8a8+fused-v1@0-2+hf-bf16@7");
  // Both spellings are one path: listing both is a duplicate.
  const std::string e = error_of(head + "  - {name: emulated-cpu, recipe: fp8-w8a8, layers: {\"0-2\": fused-v1}}\n"
                                        "  - \"emulated-cpu:fp8-w8a8+fused-v1@0-2\"\n");
  EXPECT_NE(e.find("listed twice"), std::string::npos) << e;
}

TEST(Scenario, MalformedLayerRecipesNameTheKey) {
  const std::string head = "model: {synth: {profile: qwen3-tiny}}\nphase: {prefill: 8}\npaths:\n";
  auto e = error_of(head + "  - {name: emulated-cpu, layers: {0: fused-v1}}\n");
  EXPECT_NE(e.find("paths[0].layers: needs `recipe:` beside it"), std::string::npos) << e;
  e = error_of(head + "  - {name: emulated-cpu, recipe: fp8-w8a8, layers: {\"0-3\": fused-v1, 3: hf-bf16}}\n");
  EXPECT_NE(e.find("overlap"), std::string::npos) << e;
  EXPECT_NE(e.find("bad.yaml:4"), std::string::npos) << e;
  e = error_of(head + "  - {name: emulated-cpu, recipe: fp8-w8a8, layers: [fused-v1]}\n");
  EXPECT_NE(e.find("paths[0].layers"), std::string::npos) << e;
  e = error_of(head + "  - \"emulated-cpu:fp8-w8a8+fused-v1@x\"\n");
  EXPECT_NE(e.find("is not a number"), std::string::npos) << e;
  // The CUDA paths take no recipe, so no mix either: refused by name.
  e = error_of(head + "  - {name: fused-cuda, recipe: fp8-w8a8, layers: {0: fused-v1}}\n");
  EXPECT_NE(e.find("only emulated-cpu takes a recipe"), std::string::npos) << e;
}

TEST(Scenario, KvAgeNeedsGreedySteps) {
  const std::string head = "model: {synth: {profile: qwen3-tiny}}\nphase: {prefill: 8}\npaths: [\"emulated-cpu:fp8-kv\"]\n";
  EXPECT_TRUE(parse_scenario(head + "end_to_end: {greedy_steps: 4, kv_age: true}\n", "s.yaml").kv_age);
  EXPECT_FALSE(parse_scenario(head + "end_to_end: {greedy_steps: 4}\n", "s.yaml").kv_age);
  const auto e = error_of(head + "end_to_end: {kv_age: true}\n");
  EXPECT_NE(e.find("end_to_end.kv_age: needs greedy_steps above 0"), std::string::npos) << e;
}

TEST(Scenario, ScaleDeliveryNeedsGreedySteps) {
  const std::string head = "model: {synth: {profile: qwen3-tiny}}\nphase: {prefill: 8}\npaths: [\"emulated-cpu:fp8-kv\"]\n";
  EXPECT_TRUE(parse_scenario(head + "end_to_end: {greedy_steps: 4, scale_delivery: true}\n", "s.yaml").scale_delivery);
  EXPECT_FALSE(parse_scenario(head + "end_to_end: {greedy_steps: 4}\n", "s.yaml").scale_delivery);
  auto e = error_of(head + "end_to_end: {scale_delivery: true}\n");
  EXPECT_NE(e.find("end_to_end.scale_delivery: needs greedy_steps above 0"), std::string::npos) << e;
  e = error_of(head + "end_to_end: {greedy_steps: 4, scale_delivery: maybe}\n");
  EXPECT_NE(e.find("end_to_end.scale_delivery"), std::string::npos) << e;
}

TEST(Scenario, MissingFileIsAnInputError) {
  EXPECT_THROW(load_scenario("/nonexistent/scenario.yaml"), InputError);
}

}  // namespace
}  // namespace fusecheck::run
