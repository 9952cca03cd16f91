// The compare, merge and report subcommands as a user runs them: exit codes 0 / 1 / 2,
// one-line errors naming the file, refusal of mismatched runs, a self-contained report.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "harness/results/h5_write.h"
#include "tests/common/test_support.h"
#include "tests/results/fixture.h"

namespace fusecheck::test {
namespace {

namespace fs = std::filesystem;


TEST(ResultsCli, CleanCompareExitsZero) {
  auto dir = files_dir();
  write_fixture_run(dir / "base.h5", FixtureSpec{});
  write_fixture_run(dir / "new.h5", FixtureSpec{});
  auto r = run_fusecheck("compare " + quoted(dir / "new.h5") + " " + quoted(dir / "base.h5"));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("verdict: clean"), std::string::npos) << r.out;
}

TEST(ResultsCli, RegressionExitsOneAndMarkdownSaysWhere) {
  auto dir = files_dir();
  write_fixture_run(dir / "base.h5", FixtureSpec{});
  fs::copy_file(dir / "base.h5", dir / "new.h5");
  set_cell(dir / "new.h5", "/paths/fused-cuda/isolated/inf_count", 1, tap_index("act"), 3);
  auto r = run_fusecheck("compare " + quoted(dir / "new.h5") + " " + quoted(dir / "base.h5") +
                         " --format markdown --out " + quoted(dir / "digest.md"));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("| REGRESSION | nonfinite | fused-cuda isolated L1 act | inf_count 0 -> 3 |"),
            std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(dir / "digest.md"));
}

TEST(ResultsCli, MismatchedScenarioIsRefusedWithExitTwo) {
  auto dir = files_dir();
  FixtureSpec other;
  other.scenario = "other";
  write_fixture_run(dir / "base.h5", FixtureSpec{});
  write_fixture_run(dir / "new.h5", other);
  auto r = run_fusecheck("compare " + quoted(dir / "new.h5") + " " + quoted(dir / "base.h5"));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("scenario: 'other' vs 'tiny'"), std::string::npos) << r.err;
  EXPECT_EQ(line_count(r.err), 1u) << r.err;
  auto allowed = run_fusecheck("compare " + quoted(dir / "new.h5") + " " + quoted(dir / "base.h5") +
                               " --allow-mismatch");
  EXPECT_EQ(allowed.exit_code, 0) << allowed.out << allowed.err;
  EXPECT_NE(allowed.out.find("mismatch allowed: scenario"), std::string::npos) << allowed.out;
}

TEST(ResultsCli, MissingFileIsBadInput) {
  auto dir = files_dir();
  write_fixture_run(dir / "base.h5", FixtureSpec{});
  auto r = run_fusecheck("compare " + quoted(dir / "nope.h5") + " " + quoted(dir / "base.h5"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("nope.h5: no such results file"), std::string::npos) << r.err;
}

TEST(ResultsCli, NonHdf5FileIsBadInput) {
  auto dir = files_dir();
  write_fixture_run(dir / "base.h5", FixtureSpec{});
  std::ofstream(dir / "text.h5") << "not hdf5 at all\n";
  auto r = run_fusecheck("compare " + quoted(dir / "text.h5") + " " + quoted(dir / "base.h5"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("text.h5: not an HDF5 results file"), std::string::npos) << r.err;
  EXPECT_EQ(line_count(r.err), 1u) << r.err;
}

TEST(ResultsCli, TruncatedFileIsBadInput) {
  auto dir = files_dir();
  write_fixture_run(dir / "base.h5", FixtureSpec{});
  fs::copy_file(dir / "base.h5", dir / "cut.h5");
  fs::resize_file(dir / "cut.h5", fs::file_size(dir / "cut.h5") / 2);
  auto r = run_fusecheck("compare " + quoted(dir / "cut.h5") + " " + quoted(dir / "base.h5"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("cut.h5"), std::string::npos) << r.err;
}

TEST(ResultsCli, ForeignHdf5AndUnknownVersionAreBadInput) {
  auto dir = files_dir();
  write_fixture_run(dir / "base.h5", FixtureSpec{});
  {
    results::H5Writer w(dir / "foreign.h5");
    w.numbers("/x", {3}, {1, 2, 3});
  }
  auto r = run_fusecheck("compare " + quoted(dir / "foreign.h5") + " " + quoted(dir / "base.h5"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("not a fusecheck results file"), std::string::npos) << r.err;

  fs::copy_file(dir / "base.h5", dir / "v9.h5");
  {
    results::H5Writer w(dir / "v9.h5", true);
    w.attr("/", "format_version", 9LL);
  }
  r = run_fusecheck("compare " + quoted(dir / "v9.h5") + " " + quoted(dir / "base.h5"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unsupported format_version 9"), std::string::npos) << r.err;
}

TEST(ResultsCli, MisshapenTableIsBadInputNamingTheDataset) {
  auto dir = files_dir();
  write_fixture_run(dir / "base.h5", FixtureSpec{});
  fs::copy_file(dir / "base.h5", dir / "shape.h5");
  {
    results::H5Writer w(dir / "shape.h5", true);
    w.numbers("/paths/fused-cuda/isolated/rel_l2", {3, 17}, std::vector<double>(51, 1e-3));
  }
  auto r = run_fusecheck("compare " + quoted(dir / "shape.h5") + " " + quoted(dir / "base.h5"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("rel_l2: has 3 rows, expected 4"), std::string::npos) << r.err;
}

TEST(ResultsCli, UnknownRulesKeyIsBadInput) {
  auto dir = files_dir();
  write_fixture_run(dir / "base.h5", FixtureSpec{});
  std::ofstream(dir / "rules.yaml") << "metrics:\n  rel_l2: {factr: 2}\n";
  auto r = run_fusecheck("compare " + quoted(dir / "base.h5") + " " + quoted(dir / "base.h5") + " --rules " +
                         quoted(dir / "rules.yaml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("metrics.rel_l2.factr: unknown key"), std::string::npos) << r.err;
}

TEST(ResultsCli, MergeThenCompareAcceptsShards) {
  auto dir = files_dir();
  FixtureSpec a, b;
  a.scenario = "alpha";
  b.scenario = "beta";
  write_fixture_run(dir / "alpha.h5", a);
  write_fixture_run(dir / "beta.h5", b);
  auto m = run_fusecheck("merge " + quoted(dir / "all.h5") + " " + quoted(dir / "alpha.h5") + " " +
                         quoted(dir / "beta.h5"));
  ASSERT_EQ(m.exit_code, 0) << m.err;
  auto r = run_fusecheck("compare " + quoted(dir / "all.h5") + " " + quoted(dir / "all.h5"));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("scenario alpha"), std::string::npos);
  EXPECT_NE(r.out.find("scenario beta"), std::string::npos);
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(ResultsCli, ReportIsOneSelfContainedHtmlPerModel) {
  auto dir = files_dir();
  write_fixture_run(dir / "run.h5", FixtureSpec{});
  auto r = run_fusecheck("report " + quoted(dir / "run.h5") + " --out " + quoted(dir / "report"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto html = dir / "report" / "tiny.html";
  ASSERT_TRUE(fs::exists(html)) << r.out << r.err;
  std::string text = slurp(html);
  EXPECT_EQ(text.find("http://"), std::string::npos) << "network reference in the report";
  EXPECT_EQ(text.find("https://"), std::string::npos) << "network reference in the report";
  EXPECT_EQ(text.find("<script src"), std::string::npos);
  EXPECT_EQ(text.find("<link"), std::string::npos);
  EXPECT_NE(text.find("data:image/png;base64,"), std::string::npos);
  for (const char* section : {"Error against depth", "Relative error by layer and tap", "Amplification",
                              "Perturbation sensitivity", "Speed", "End to end", "Provenance"}) {
    EXPECT_NE(text.find(section), std::string::npos) << "missing section: " << section;
  }
}

// Chromium is part of scripts/setup: a missing browser is a broken setup, not a skip.
bool have_chromium() { return std::system("command -v chromium >/dev/null 2>&1") == 0; }

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(ResultsCli, ReportLoadsInABrowserWithEveryFigureAndTable) {
  ASSERT_TRUE(have_chromium()) << "chromium not installed: run scripts/setup";
  auto dir = files_dir();
  write_fixture_run(dir / "run.h5", FixtureSpec{});
  auto r = run_fusecheck("report " + quoted(dir / "run.h5") + " --out " + quoted(dir / "report"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto html = dir / "report" / "tiny.html";
  // The fixture has every section: depth, one heat map per path (2), amplification,
  // perturbation, layer times, op times and KL = 8 figures; summary, cross-check, speed,
  // end-to-end and provenance = 5 tables.
  const std::string page = slurp(html);
  ASSERT_EQ(count_of(page, "<img "), 8u);
  ASSERT_EQ(count_of(page, "<table>"), 5u);
  const std::string cmd = (source_dir() / "scripts" / "render-report").string() + " --check " + quoted(html) +
                          " > " + quoted(dir / "check.txt") + " 2>&1";
  const int status = std::system(cmd.c_str());
  const std::string line = slurp(dir / "check.txt");
  EXPECT_EQ(status, 0) << line;
  EXPECT_NE(line.find("figures 8 (loaded 8), tables 5, errors 0"), std::string::npos) << line;
}

TEST(ResultsCli, ReportRendersToPng) {
  ASSERT_TRUE(have_chromium()) << "chromium not installed: run scripts/setup";
  auto dir = files_dir();
  write_fixture_run(dir / "run.h5", FixtureSpec{});
  auto r = run_fusecheck("report " + quoted(dir / "run.h5") + " --out " + quoted(dir / "report") + " --png");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto png = dir / "report" / "tiny.png";
  ASSERT_TRUE(fs::exists(png)) << r.err;
  std::ifstream f(png, std::ios::binary);
  char magic[8] = {};
  f.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  EXPECT_GT(fs::file_size(png), 100000u) << "a rendered page of figures is larger than this";
}

TEST(ResultsCli, ReportOfMissingFileExitsTwo) {
  auto dir = files_dir();
  auto r = run_fusecheck("report " + quoted(dir / "nope.h5") + " --out " + quoted(dir / "report"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("nope.h5"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace fusecheck::test
