// The scale delivery check in a run (harness/run/scale_delivery_mode.h): filled for the
// emulated fp8-kv paths (fp8-w8a8 included) with greedy steps, exactly what
// ref::check_scale_delivery (and `fusecheck scale-delivery`) reports, and for nothing else;
// and the whole route through `fusecheck run` on stories260K: results file datasets and
// attributes, the summary line, the HTML report's section.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "harness/results/h5_tree.h"
#include "harness/run/scale_delivery_mode.h"
#include "reference/random_checkpoint.h"
#include "reference/scale_delivery.h"
#include "tests/common/small_specs.h"
#include "tests/common/test_support.h"

namespace fusecheck::run {
namespace {

PathResult path(const std::string& name, const std::string& recipe) {
  PathResult p;
  p.slot.name = name;
  p.slot.recipe = recipe;
  return p;
}

TEST(ScaleDeliveryMode, FillsTheFp8KvPathsWithWhatTheCheckReports) {
  ref::RandomCheckpoint ck(test::tiny_qwen3_tied_spec(), 17, DType::BF16, 8.0);
  const std::vector<std::int32_t> prompt = {3, 14, 15, 9, 26, 5, 35};
  RunResult r;
  r.paths = {path("emulated-cpu", "fp8-kv"), path("emulated-cpu", "fused-v1"), path("emulated-cpu", "fp8-w8a8"),
             path("emulated-cpu", "fp8-w8a8+fused-v1@0"), path("ref32-cpu", "")};
  add_scale_delivery(r, ck, prompt, 4);
  const ref::ScaleDeliveryResult want = ref::check_scale_delivery(ck, find_recipe("fp8-kv"), prompt, 4);
  ASSERT_TRUE(r.paths[0].scale_delivery);
  const ScaleDeliveryRecord& got = *r.paths[0].scale_delivery;
  ASSERT_EQ(got.multipliers.size(), want.rows.size());
  for (std::size_t i = 0; i < want.rows.size(); ++i) {
    EXPECT_EQ(got.multipliers[i], want.rows[i].multiplier);
    EXPECT_EQ(got.clipped[i], static_cast<double>(want.rows[i].clipped));
    EXPECT_EQ(got.judged[i], want.rows[i].judged ? 1.0 : 0.0);
    EXPECT_EQ(got.rel_l2[i], want.rows[i].rel_l2);
  }
  EXPECT_EQ(got.reference_multiplier, want.reference_multiplier);
  EXPECT_EQ(got.limit, want.limit);
  EXPECT_EQ(got.decode_steps, 4);
  EXPECT_EQ(got.verdict, "pass");
  EXPECT_FALSE(r.paths[1].scale_delivery) << "no FP8 cache";
  EXPECT_TRUE(r.paths[2].scale_delivery) << "fp8-w8a8 has the fp8-kv cache";
  EXPECT_FALSE(r.paths[3].scale_delivery) << "mixes are not checked";
  EXPECT_FALSE(r.paths[4].scale_delivery);
  EXPECT_EQ(r.gate_failures, 0) << "checks that pass add no gate failure";
}

TEST(ScaleDeliveryMode, NothingWithoutGreedySteps) {
  ref::RandomCheckpoint ck(test::tiny_qwen3_tied_spec(), 17);
  RunResult r;
  r.paths = {path("emulated-cpu", "fp8-kv")};
  add_scale_delivery(r, ck, std::vector<std::int32_t>{1, 2, 3}, 0);
  EXPECT_FALSE(r.paths[0].scale_delivery);
}

// `fusecheck run` on the FP8 CPU scenario (stories260K, real text, 32 greedy steps): every
// fp8-kv path's check in the results file and the summary; the static recipes' x1 clips
// (a headroom finding) leave x2 as the reference.
TEST(ScaleDeliveryMode, TheFp8CpuScenarioRecordsEveryCheck) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  // The scenario names its model as ${FUSECHECK_MODELS}/stories260K.gguf.
  ::setenv("FUSECHECK_MODELS", dir->c_str(), 1);
  const auto out = test::scratch_dir() / "sd.h5";
  const auto r = test::run_fusecheck("run " + test::quoted((test::source_dir() /
                                                            "scenarios/fp8/stories260k-cpu.yaml").string()) +
                                     " --device cpu --no-progress --out " + test::quoted(out.string()));
  ASSERT_EQ(r.exit_code, 1) << r.err;  // FP8 against FP32 fails the divergence gates by design
  for (const char* label : {"emulated-cpu:fp8-kv", "emulated-cpu:fp8-kv-per-head", "emulated-cpu:fp8-kv-dynamic",
                            "emulated-cpu:fp8-kv-per-head-dynamic", "emulated-cpu:fp8-w8a8"}) {
    SCOPED_TRACE(label);
    const results::H5Node root = results::read_h5_tree(out);
    const results::H5Node* sd = root.group(std::string("paths/") + label + "/scale_delivery");
    ASSERT_NE(sd, nullptr);
    EXPECT_EQ(sd->attr_string("verdict").value_or(""), "pass");
    const results::H5Value* m = sd->dataset("multiplier");
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->numbers, (std::vector<double>{1, 2, 4, 8}));
    const bool dynamic = std::string(label).find("dynamic") != std::string::npos;
    EXPECT_EQ(sd->attr_number("reference_multiplier").value_or(0), dynamic ? 1.0 : 2.0);
  }
  EXPECT_NE(r.out.find("scale delivery: pass, x4 against x2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("scale delivery: pass, x2 against x1"), std::string::npos) << r.out;
  // The HTML report's section (scripts/report through `fusecheck report`).
  const auto report_dir = test::scratch_dir() / "report";
  const auto rep = test::run_fusecheck("report " + test::quoted(out) + " --out " + test::quoted(report_dir));
  ASSERT_EQ(rep.exit_code, 0) << rep.out << rep.err;
  std::ifstream html(report_dir / "fp8-stories260k-cpu.html");
  const std::string page((std::istreambuf_iterator<char>(html)), std::istreambuf_iterator<char>());
  EXPECT_NE(page.find("FP8 KV scale delivery"), std::string::npos);
  EXPECT_NE(page.find("x4: 0 clipped"), std::string::npos);
  EXPECT_NE(page.find("(judged)"), std::string::npos);
}

// `fusecheck scale-delivery --tokens`: the given prompt is used (the same verdict as the
// scenario above for fp8-kv-dynamic), an id outside the vocabulary is refused naming it,
// and --tokens with --prefill is refused.
TEST(ScaleDeliveryCommand, TokensAreThePromptAndAreChecked) {
  const auto dir = test::models_dir();
  if (!dir) GTEST_SKIP() << test::models_dir_skip_reason();
  const std::string model = test::quoted(*dir / "stories260K.gguf");
  auto r = test::run_fusecheck("scale-delivery " + model +
                               " --recipe fp8-kv-dynamic --tokens 1,403,261,280,261,343,379,346,286,261,305,263,292,273,"
                               "309,430 --steps 32");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("prefill 16 (the given tokens), 32 greedy steps"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
  r = test::run_fusecheck("scale-delivery " + model + " --tokens 1,99999 --steps 2");
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("--tokens: id 99999 at place 1 is outside the vocabulary"), std::string::npos) << r.err;
  r = test::run_fusecheck("scale-delivery " + model + " --tokens 1,2 --prefill 4");
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("excludes"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace fusecheck::run
