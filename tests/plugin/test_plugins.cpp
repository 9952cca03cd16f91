// Path plug-ins through the C ABI: the example CPU plug-in (examples/plugin-cpu, built here
// as a module) loads, registers its path and computes the decoder layer to bf16 accuracy
// against ref32-cpu; `fusecheck run --plugin` and the scenario key `plugins:` run it and
// record its provenance; and each broken plug-in of bad_plugins.c gives exit 2 with one
// line naming the file, or (NaN values) a recorded gate failure, or (a 1.1 plug-in that
// reports FC_ERR_PLUGIN_BUG) exit 70 naming the plug-in.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include <gtest/gtest.h>

#include "fusecheck/path_plugin.hpp"
#include "harness/checkpoint/synth.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "harness/core/path_registry.h"
#include "harness/paths/plugin_loader.h"
#include "harness/results/h5_tree.h"
#include "tests/checkpoint/fixtures.h"
#include "tests/common/test_support.h"

namespace fusecheck {
namespace {

using test::quoted;

std::filesystem::path tiny_model(const std::filesystem::path& dir) {
  SynthOptions o;
  o.seed = 5;
  o.layers = 2;
  write_synthetic_checkpoint("qwen3-tiny", o, dir / "model");
  return dir / "model";
}

double relative_l2(const TapMatrix& got, const TapMatrix& ref) {
  return (got - ref).norm() / ref.norm();
}

TEST(PluginLoader, RegistersTheExamplePathWithItsDescriptionAndProvenance) {
  const auto& prov = load_plugin(FUSECHECK_EXAMPLE_CPU_PLUGIN);
  EXPECT_EQ(prov.name, "example-cpu-bf16");
  EXPECT_EQ(prov.version, "1.0.0");
  EXPECT_EQ(prov.sha256.size(), 64u);
  EXPECT_EQ(prov.paths, std::vector<std::string>{"example-cpu-bf16"});
  const PathInfo* info = find_path("example-cpu-bf16");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->device, "cpu");
  EXPECT_EQ(info->role, "other");
  EXPECT_EQ(info->recipe, "example-bf16");
  EXPECT_EQ(info->dtype, DType::BF16);
  EXPECT_EQ(info->origin, prov.file);
  // Loading the same file again is a no-op, not a name clash.
  EXPECT_EQ(&load_plugin(FUSECHECK_EXAMPLE_CPU_PLUGIN), &prov);
}

// A block-quantized checkpoint (GGUF Q8_0) reaches a plug-in decoded to FP32: the plug-in's
// logits are bit for bit those it gives on the same values stored as F32. The ABI carries
// plain dtypes only; handing over the raw blocks as F32 once gave garbage and crashes.
TEST(PluginLoader, QuantizedWeightsReachThePluginDecodedExactly) {
  register_builtin_paths();
  load_plugin(FUSECHECK_EXAMPLE_CPU_PLUGIN);
  const auto dir = test::scratch_dir();
  std::filesystem::create_directories(dir);
  const test::TinyModel m{.layers = 2, .hidden = 32, .heads = 2, .kv_heads = 1, .head_dim = 16,
                          .intermediate = 64, .vocab = 17};
  test::tiny_gguf_quantized(m, "llama", /*Q8_0*/ 8, 61).write(dir / "q8.gguf");
  const auto quantized = Checkpoint::open(dir / "q8.gguf");
  std::vector<std::string> all;
  for (const TensorView& t : quantized->tensors()) all.push_back(t.name);
  test::GgufWriter w = test::tiny_gguf(m, "llama", DType::F32, all);
  for (const TensorView& t : quantized->tensors()) w.tensor(test::NamedTensor{t.name, t.shape, t.to_float()}, DType::F32);
  w.write(dir / "f32.gguf");
  const auto f32 = Checkpoint::open(dir / "f32.gguf");
  const auto logits = [](const Checkpoint& ck) {
    auto p = make_path("example-cpu-bf16", ck, {});
    p->reset(1, 3);
    const std::vector<std::int32_t> tokens = {1, 5, 9};
    TapMatrix h = p->embed(tokens);
    for (int layer = 0; layer < ck.spec().n_layers; ++layer) h = p->layer(layer, h).at(Tap::resid_out);
    return TapMatrix(p->head(h).at(Tap::logits));
  };
  const TapMatrix q = logits(*quantized), f = logits(*f32);
  ASSERT_EQ(q.size(), f.size());
  EXPECT_TRUE(q.allFinite());
  EXPECT_GT(q.norm(), 0.0);
  EXPECT_EQ(0, std::memcmp(q.data(), f.data(), sizeof(double) * static_cast<std::size_t>(q.size())));
}

TEST(PluginLoader, ExamplePathMatchesRef32ToBf16Accuracy) {
  register_builtin_paths();
  load_plugin(FUSECHECK_EXAMPLE_CPU_PLUGIN);
  const auto ckpt = Checkpoint::open(tiny_model(test::scratch_dir()));
  auto plugin = make_path("example-cpu-bf16", *ckpt, {});
  auto ref = make_path("ref32-cpu", *ckpt, {});
  const std::vector<std::int32_t> tokens = {3, 17, 42, 7, 99, 1, 250, 12};
  for (auto* p : {plugin.get(), ref.get()}) p->reset(2, 8);
  const TapMatrix x = ref->embed(tokens);
  const TapMatrix x_plugin = plugin->embed(tokens);
  EXPECT_LT(relative_l2(x_plugin, x), 1e-2);
  // Two layers, the plug-in fed its own output: RoPE positions and the KV cache count.
  TapMatrix h_ref = x, h_plugin = x;
  for (int layer = 0; layer < 2; ++layer) {
    const TapSet got = plugin->layer(layer, h_plugin), want = ref->layer(layer, h_ref);
    for (Tap t : {Tap::q_rope, Tap::k_rope, Tap::attn, Tap::resid_out}) {
      ASSERT_TRUE(got.count(t)) << tap_name(t);
      const double err = relative_l2(got.at(t), want.at(t));
      // bf16 keeps 8 significant bits (2^-9 = 2e-3 per rounding); a few roundings per
      // tap stay well under 3e-2, while a wrong position or head layout gives O(1).
      EXPECT_LT(err, 3e-2) << "layer " << layer << " tap " << tap_name(t);
      EXPECT_GT(err, 0.0) << "layer " << layer << " tap " << tap_name(t) << ": not rounded to bf16";
    }
    h_plugin = got.at(Tap::resid_out), h_ref = want.at(Tap::resid_out);
  }
  const TapSet head = plugin->head(h_plugin), head_ref = ref->head(h_ref);
  EXPECT_LT(relative_l2(head.at(Tap::logits), head_ref.at(Tap::logits)), 5e-2);
}

const char* kScenario = R"(
name: plugin-tiny
model: {synth: {profile: qwen3-tiny, layers: 2, seed: 3}}
tokens: {seed: 11}
batch: 2
phase: {prefill: 6}
paths: [PATH]
modes: [isolated, propagated]
)";

std::filesystem::path write_scenario(const std::filesystem::path& dir, const std::string& path,
                                     const std::string& plugins_line = "") {
  std::string text = kScenario;
  text.replace(text.find("PATH"), 4, path);
  const auto file = dir / "scenario.yaml";
  std::ofstream(file) << text << plugins_line;
  return file;
}

std::string run_args(const std::filesystem::path& dir, const std::filesystem::path& scenario) {
  return "run " + quoted(scenario) + " --device cpu --no-progress --out " + quoted(dir / "run.h5");
}

TEST(PluginRun, RunPluginFlagRunsThePathAndRecordsItsProvenance) {
  const auto dir = test::scratch_dir();
  const auto scenario = write_scenario(dir, "example-cpu-bf16");
  const auto r = test::run_fusecheck(run_args(dir, scenario) + " --plugin " + quoted(FUSECHECK_EXAMPLE_CPU_PLUGIN));
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("example-cpu-bf16"), std::string::npos) << r.out;
  const auto root = results::read_h5_tree(dir / "run.h5");
  const std::string plugins = root.attr_string("plugins").value_or("");
  EXPECT_NE(plugins.find("example-cpu-bf16 1.0.0 sha256:"), std::string::npos) << plugins;
  EXPECT_NE(plugins.find(std::filesystem::path(FUSECHECK_EXAMPLE_CPU_PLUGIN).filename().string()), std::string::npos);
}

TEST(PluginRun, ScenarioPluginsKeyIsRelativeToTheScenarioFile) {
  const auto dir = test::scratch_dir();
  std::filesystem::copy_file(FUSECHECK_EXAMPLE_CPU_PLUGIN, dir / "mine.so");
  const auto scenario = write_scenario(dir, "example-cpu-bf16", "plugins: [mine.so]\n");
  const auto r = test::run_fusecheck(run_args(dir, scenario));
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
}

TEST(PluginRun, NanFromAPluginIsAGateFailureNotACrash) {
  const auto dir = test::scratch_dir();
  const auto scenario = write_scenario(dir, "bad-plugin-path");
  const auto r = test::run_fusecheck(run_args(dir, scenario) + " --plugin " + quoted(FUSECHECK_BAD_PLUGIN_nan_values));
  EXPECT_EQ(r.exit_code, 1) << r.err << r.out;
  EXPECT_TRUE(std::filesystem::exists(dir / "run.h5"));
}

// A broken plug-in: the command, and what the one-line error must say besides the file.
struct BadCase {
  const char* name;
  const char* file;
  const char* command;  // "paths" or "run"
  const char* message;
};
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class BadPlugin : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadPlugin, ExitsTwoWithOneLineNamingTheFile) {
  const BadCase& c = GetParam();
  const auto dir = test::scratch_dir();
  std::string args;
  if (std::string(c.command) == "paths") {
    args = "paths --plugin " + quoted(c.file);
  } else {
    args = run_args(dir, write_scenario(dir, "bad-plugin-path")) + " --plugin " + quoted(c.file);
  }
  const auto r = test::run_fusecheck(args);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(c.file), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

INSTANTIATE_TEST_SUITE_P(
    Plugins, BadPlugin,
    ::testing::Values(
        BadCase{"not_a_library", FUSECHECK_SOURCE_DIR "/tests/plugin/bad_plugins.c", "paths", "not a loadable shared library"},
        BadCase{"not_a_plugin", FUSECHECK_BAD_PLUGIN_not_a_plugin, "paths", "does not export fusecheck_path_plugin()"},
        BadCase{"abi_mismatch", FUSECHECK_BAD_PLUGIN_abi_mismatch, "paths", "plug-in ABI version 999"},
        BadCase{"missing_layer", FUSECHECK_BAD_PLUGIN_missing_layer, "paths", "function 'layer' is missing"},
        BadCase{"builtin_name", FUSECHECK_BAD_PLUGIN_builtin_name, "paths", "'ref32-cpu' is already registered"},
        BadCase{"create_fails", FUSECHECK_BAD_PLUGIN_create_fails, "run", "create failed: this plug-in refuses every model"},
        BadCase{"wrong_shape", FUSECHECK_BAD_PLUGIN_wrong_shape, "run", "tap resid_out: shape ["},
        BadCase{"status_input", FUSECHECK_BAD_PLUGIN_status_input, "run", "layer 0: rows must be a multiple of 64"},
        BadCase{"status_unsupported", FUSECHECK_BAD_PLUGIN_status_unsupported, "run",
                "create failed: not supported by plug-in bad-plugin: no kernel for this architecture"},
        BadCase{"minor_too_new", FUSECHECK_BAD_PLUGIN_minor_too_new, "paths", "plug-in ABI version 1.99, this fusecheck takes 1.0 to 1.4"},
        BadCase{"abi_1_0_codes_mean_failed", FUSECHECK_BAD_PLUGIN_abi_1_0, "run", "create failed: no kernel for this architecture (code 3)"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(PluginStatus, PluginBugExitsSeventyNamingThePluginAndFile) {
  const auto dir = test::scratch_dir();
  const auto r = test::run_fusecheck(run_args(dir, write_scenario(dir, "bad-plugin-path")) + " --plugin " +
                                     quoted(FUSECHECK_BAD_PLUGIN_status_plugin_bug));
  EXPECT_EQ(r.exit_code, 70) << r.err;
  EXPECT_NE(r.err.find(FUSECHECK_BAD_PLUGIN_status_plugin_bug), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("plug-in error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("plug-in bad-plugin failed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("illegal memory access in the layer kernel"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(PluginStatus, AnAbi10TableStillLoads) {
  const auto r = test::run_fusecheck("paths --plugin " + quoted(FUSECHECK_BAD_PLUGIN_abi_1_0));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("bad-plugin-path"), std::string::npos) << r.out;
}

// ABI 1.2: a plug-in's execution traits (split-KV edges, kernel switches) reach invariance
// mode through Path::execution_traits; bad ones are refused naming the file; a 1.1 table
// is never read past its end.
std::unique_ptr<Path> traits_plugin_path(const char* file, const std::string& name) {
  load_plugin(file);
  static const auto dir = test::scratch_dir();
  static const auto ckpt = Checkpoint::open(tiny_model(dir));
  return make_path(name, *ckpt, {});
}

TEST(PluginTraits, DeclaredTraitsReachThePath) {
  const auto p = traits_plugin_path(FUSECHECK_BAD_PLUGIN_traits_declared, "traits-plugin-13");
  const ExecutionTraits t = p->execution_traits(8, 128);
  EXPECT_EQ(t.kv_split_boundaries, (std::vector<int>{16, 32}));
  EXPECT_EQ(t.switches, std::vector<std::string>{"BAD_PLUGIN_SPLIT=0"});
}

TEST(PluginTraits, BadBoundaryIsRefusedNamingTheFile) {
  const auto p = traits_plugin_path(FUSECHECK_BAD_PLUGIN_traits_bad, "traits-plugin-14");
  try {
    (void)p->execution_traits(1, 64);
    FAIL() << "a boundary of -4 was accepted";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("KV split boundary -4"), std::string::npos) << what;
    EXPECT_NE(what.find(FUSECHECK_BAD_PLUGIN_traits_bad), std::string::npos) << what;
  }
}

TEST(PluginTraits, AnAbi11TableDeclaresNoTraits) {
  const auto p = traits_plugin_path(FUSECHECK_BAD_PLUGIN_traits_abi_1_1, "traits-plugin-15");
  const ExecutionTraits t = p->execution_traits(8, 128);
  EXPECT_TRUE(t.kv_split_boundaries.empty());
  EXPECT_TRUE(t.switches.empty());
}

// The C++ wrapper (path_plugin.hpp) fills the C table's execution_traits from the path's
// override, its arrays valid until the next call.
class TraitsOnlyPath final : public plugin::Path {
 public:
  std::vector<fc_tap> taps() const override { return {FC_TAP_RESID_OUT}; }
  void reset(int, int) override {}
  plugin::HostMatrix embed(const std::int32_t*, std::int64_t) override { throw std::logic_error("not driven"); }
  plugin::TapValues layer(int, const plugin::Input&) override { throw std::logic_error("not driven"); }
  plugin::TapValues head(const plugin::Input&) override { throw std::logic_error("not driven"); }
  plugin::ExecutionTraits execution_traits(int batch, int max_kv) const override {
    return {{batch, max_kv / 2}, {"TRAITS_A=0", "TRAITS_B=all"}};
  }
};

std::unique_ptr<plugin::Path> make_traits_only(const std::string&, const fc_model&, const fc_create_options&) {
  return std::make_unique<TraitsOnlyPath>();
}

TEST(PluginTraits, CppWrapperFillsTheCTable) {
  static const fc_path_desc desc[] = {{"traits-only", "cpu", "", "other", FC_F32, "test"}};
  const fc_plugin t = plugin::detail::make_table<make_traits_only>("traits-only", "0", desc, 1, nullptr);
  EXPECT_EQ(t.abi_minor, FC_PLUGIN_ABI_MINOR);
  ASSERT_NE(t.execution_traits, nullptr);
  fc_model model{};
  fc_create_options options{};
  fc_path* p = nullptr;
  fc_error err{};
  ASSERT_EQ(t.create("traits-only", &model, &options, &p, &err), 0) << err.message;
  fc_execution_traits out{};
  ASSERT_EQ(t.execution_traits(p, 3, 128, &out, &err), 0) << err.message;
  ASSERT_EQ(out.n_kv_split_boundaries, 2);
  EXPECT_EQ(out.kv_split_boundaries[0], 3);
  EXPECT_EQ(out.kv_split_boundaries[1], 64);
  ASSERT_EQ(out.n_switches, 2);
  EXPECT_STREQ(out.switches[0], "TRAITS_A=0");
  EXPECT_STREQ(out.switches[1], "TRAITS_B=all");
  t.destroy(p);
}

// ABI 1.3 device taps, what the loader checks without a GPU: a table offers them only with
// all four entries and a minor of 3 (never read past a 1.2 table's end), a claimed
// capability without them is none, and taps in the wrong memory are refused naming the
// file. The C++ wrapper fills the entries and refuses an input in an unknown memory kind.
TEST(PluginDeviceTaps, HostMemoryWhileDeviceTapsAreOnIsRefusedNamingTheFile) {
  const auto p = traits_plugin_path(FUSECHECK_BAD_PLUGIN_device_host_memory, "device-plugin-16");
  ASSERT_TRUE(p->capabilities().device_taps);
  EXPECT_NE(p->device_domain().code, nullptr);
  p->reset(1, 4);
  const TapMatrix input = TapMatrix::Constant(3, 64, 0.5);
  try {
    (void)p->layer_on_device(0, TapInput{&input, nullptr});
    FAIL() << "host taps were accepted as device taps";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("returned memory kind 0 while device taps are on"), std::string::npos) << what;
    EXPECT_NE(what.find(FUSECHECK_BAD_PLUGIN_device_host_memory), std::string::npos) << what;
  }
  // Back on the host route the same path works.
  EXPECT_EQ(p->layer(0, input).count(Tap::resid_out), 1u);
}

TEST(PluginDeviceTaps, AnAbi12TableOffersNoDeviceTaps) {
  const auto p = traits_plugin_path(FUSECHECK_BAD_PLUGIN_device_abi_1_2, "device-plugin-17");
  EXPECT_FALSE(p->capabilities().device_taps);
  EXPECT_EQ(p->device_domain().code, nullptr);
  p->reset(1, 4);
  const TapMatrix input = TapMatrix::Constant(3, 64, 0.5);
  EXPECT_THROW((void)p->layer_on_device(0, TapInput{&input, nullptr}), std::logic_error);
  EXPECT_EQ(p->layer(0, input).count(Tap::resid_out), 1u);  // a 1.2 plug-in still runs
}

TEST(PluginDeviceTaps, ATableWithoutAllFourEntriesOffersNone) {
  const auto p = traits_plugin_path(FUSECHECK_BAD_PLUGIN_device_partial, "device-plugin-18");
  EXPECT_FALSE(p->capabilities().device_taps);
}

TEST(PluginDeviceTaps, TheExamplePluginOffersNone) {
  load_plugin(FUSECHECK_EXAMPLE_CPU_PLUGIN);
  static const auto dir = test::scratch_dir();
  const auto ckpt = Checkpoint::open(tiny_model(dir));
  const auto p = make_path("example-cpu-bf16", *ckpt, {});
  EXPECT_FALSE(p->capabilities().device_taps);
}

// A C++ path with device taps (the memory is host memory here: no GPU needed to check the
// wrapper's routing and checks).
class DeviceTapsPath final : public plugin::Path {
 public:
  std::vector<fc_tap> taps() const override { return {FC_TAP_RESID_OUT}; }
  void reset(int, int) override {}
  plugin::HostMatrix embed(const std::int32_t*, std::int64_t) override { throw std::logic_error("not driven"); }
  plugin::TapValues layer(int, const plugin::Input& in) override {
    plugin::TapValues v;
    v.emplace_back(FC_TAP_RESID_OUT, plugin::HostMatrix::borrowed(FC_F64, in.rows, in.cols, in.data));
    return v;
  }
  plugin::TapValues head(const plugin::Input&) override { throw std::logic_error("not driven"); }
  bool supports_device_taps() const override { return true; }
  plugin::TapValues layer_device(int, const fc_tensor& input) override {
    last_input_memory = input.memory;
    plugin::TapValues v;
    v.emplace_back(FC_TAP_RESID_OUT, plugin::HostMatrix::device_view(FC_BF16, input.shape[0], input.shape[1],
                                                                      input.shape[1] + 8, &buffer));
    return v;
  }
  static inline int last_input_memory = -1;
  static inline double buffer = 0;
};
std::unique_ptr<plugin::Path> make_device_taps(const std::string&, const fc_model&, const fc_create_options&) {
  return std::make_unique<DeviceTapsPath>();
}
int no_metrics(const fc_metrics_request*, const fc_tensor*, const fc_tensor*, fc_tap_summary*, fc_error*) { return 3; }
int no_next_token(std::int32_t, const fc_tensor*, const fc_tensor*, double*, double*, std::int32_t*, fc_error*) {
  return 3;
}
int no_copy(std::int32_t, const fc_tensor*, double*, fc_error*) { return 3; }

TEST(PluginDeviceTaps, CppWrapperRoutesLayersWhileDeviceTapsAreOn) {
  static const fc_path_desc desc[] = {{"device-taps", "cuda", "", "other", FC_BF16, "test"}};
  const fc_plugin t = plugin::detail::make_table<make_device_taps>(
      "device-taps", "0", desc, 1, nullptr, nullptr, nullptr,
      plugin::detail::DeviceTapEntries{no_metrics, no_next_token, no_copy});
  ASSERT_NE(t.set_device_taps, nullptr);
  EXPECT_EQ(t.tap_metrics, &no_metrics);
  fc_model model{};
  fc_create_options options{};
  fc_path* p = nullptr;
  fc_error err{};
  ASSERT_EQ(t.create("device-taps", &model, &options, &p, &err), 0) << err.message;
  EXPECT_EQ(t.capabilities(p) & FC_CAP_DEVICE_TAPS, FC_CAP_DEVICE_TAPS);
  std::vector<double> rows(2 * 4, 1.0);
  fc_tensor in{};
  in.dtype = FC_F64, in.memory = FC_HOST, in.rank = 2;
  in.shape[0] = 2, in.shape[1] = 4, in.strides[0] = 4, in.strides[1] = 1;
  in.data = rows.data();
  const fc_tap_value* out = nullptr;
  std::int32_t n = 0;
  ASSERT_EQ(t.layer(p, 0, &in, &out, &n, &err), 0) << err.message;
  EXPECT_EQ(out[0].value.memory, FC_HOST);  // device taps off: the host route
  ASSERT_EQ(t.set_device_taps(p, 1, &err), 0) << err.message;
  ASSERT_EQ(t.layer(p, 0, &in, &out, &n, &err), 0) << err.message;
  EXPECT_EQ(DeviceTapsPath::last_input_memory, FC_HOST);
  EXPECT_EQ(out[0].value.memory, FC_CUDA_DEVICE);
  EXPECT_EQ(out[0].value.strides[0], 12);
  // An input in a memory kind the ABI does not know is bad input, said plainly.
  fc_tensor bad = in;
  bad.memory = 7;
  EXPECT_EQ(t.layer(p, 0, &bad, &out, &n, &err), FC_ERR_INPUT);
  EXPECT_NE(std::string(err.message).find("neither a dense host F64 matrix nor a device matrix"), std::string::npos)
      << err.message;
  // A device input with a row stride below its width is refused too.
  fc_tensor narrow = in;
  narrow.memory = FC_CUDA_DEVICE;
  narrow.strides[0] = 2;
  EXPECT_EQ(t.layer(p, 0, &narrow, &out, &n, &err), FC_ERR_INPUT);
  ASSERT_EQ(t.set_device_taps(p, 0, &err), 0) << err.message;
  ASSERT_EQ(t.layer(p, 0, &in, &out, &n, &err), 0) << err.message;
  EXPECT_EQ(out[0].value.memory, FC_HOST);
  t.destroy(p);
}

// ABI 1.4 headroom: a plug-in's rounding points reach the path (and so the results file,
// the run summary and compare's FP8 clipping rule, as an in-process path's do), bad figures
// are refused naming the file, a 1.3 table's slot past its end is never read, and the C++
// wrapper fills the C table from the path's override.
TEST(PluginHeadroom, DeclaredPointsReachThePath) {
  const auto p = traits_plugin_path(FUSECHECK_BAD_PLUGIN_headroom_declared, "headroom-plugin-19");
  ASSERT_TRUE(p->capabilities().headroom);
  const auto h = p->headroom(2);
  ASSERT_EQ(h.size(), 2u);
  const Headroom& k = h.at("k_cache.fp8");
  EXPECT_EQ(k.max_abs, 500);
  EXPECT_EQ(k.max_finite, 448);
  EXPECT_EQ(k.n_values, 66);
  EXPECT_EQ(k.n_saturated, 3);
  EXPECT_TRUE(k.rounded);
  EXPECT_EQ(h.at("v_cache.fp8").n_flushed, 5);
}

TEST(PluginHeadroom, CountsBeyondTheValuesAreRefusedNamingTheFile) {
  const auto p = traits_plugin_path(FUSECHECK_BAD_PLUGIN_headroom_bad, "headroom-plugin-20");
  try {
    (void)p->headroom(0);
    FAIL() << "99 saturated values out of 64 were accepted";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'k_cache.fp8'"), std::string::npos) << what;
    EXPECT_NE(what.find("99 saturated"), std::string::npos) << what;
    EXPECT_NE(what.find(FUSECHECK_BAD_PLUGIN_headroom_bad), std::string::npos) << what;
  }
}

TEST(PluginHeadroom, AnAbi13TableReportsNone) {
  const auto p = traits_plugin_path(FUSECHECK_BAD_PLUGIN_headroom_abi_1_3, "headroom-plugin-21");
  EXPECT_FALSE(p->capabilities().headroom);
  EXPECT_TRUE(p->headroom(0).empty());
}

class HeadroomOnlyPath final : public plugin::Path {
 public:
  std::vector<fc_tap> taps() const override { return {FC_TAP_RESID_OUT}; }
  void reset(int, int) override {}
  plugin::HostMatrix embed(const std::int32_t*, std::int64_t) override { throw std::logic_error("not driven"); }
  plugin::TapValues layer(int, const plugin::Input&) override { throw std::logic_error("not driven"); }
  plugin::TapValues head(const plugin::Input&) override { throw std::logic_error("not driven"); }
  bool supports_headroom() const override { return true; }
  std::vector<plugin::HeadroomPoint> headroom(int layer) const override {
    return {{"qkv.weight.fp8", 1.5 * layer, 448, 1000, 0, 7, 0, 2, true}};
  }
};
std::unique_ptr<plugin::Path> make_headroom_only(const std::string&, const fc_model&, const fc_create_options&) {
  return std::make_unique<HeadroomOnlyPath>();
}

TEST(PluginHeadroom, CppWrapperFillsTheCTable) {
  static const fc_path_desc desc[] = {{"headroom-only", "cpu", "", "fused", FC_BF16, "test"}};
  const fc_plugin t = plugin::detail::make_table<make_headroom_only>("headroom-only", "0", desc, 1, nullptr);
  ASSERT_NE(t.headroom, nullptr);
  fc_model model{};
  fc_create_options options{};
  fc_path* p = nullptr;
  fc_error err{};
  ASSERT_EQ(t.create("headroom-only", &model, &options, &p, &err), 0) << err.message;
  EXPECT_EQ(t.capabilities(p) & FC_CAP_HEADROOM, FC_CAP_HEADROOM);
  const fc_headroom* out = nullptr;
  std::int32_t n = 0;
  ASSERT_EQ(t.headroom(p, 4, &out, &n, &err), 0) << err.message;
  ASSERT_EQ(n, 1);
  EXPECT_STREQ(out[0].point, "qkv.weight.fp8");
  EXPECT_EQ(out[0].max_abs, 6.0);
  EXPECT_EQ(out[0].n_values, 1000);
  EXPECT_EQ(out[0].n_saturated, 7);
  EXPECT_EQ(out[0].n_flushed, 2);
  EXPECT_EQ(out[0].rounded, 1);
  t.destroy(p);
  // A path that does not report headroom: no capability bit, and the entry says unsupported.
  const fc_plugin u = plugin::detail::make_table<make_traits_only>("traits-only", "0", desc, 1, nullptr);
  ASSERT_EQ(u.create("headroom-only", &model, &options, &p, &err), 0) << err.message;
  EXPECT_EQ(u.capabilities(p) & FC_CAP_HEADROOM, 0u);
  EXPECT_EQ(u.headroom(p, 0, &out, &n, &err), FC_ERR_UNSUPPORTED);
  u.destroy(p);
}

TEST(CudaPlugin, MissingLibraryWithDeviceCudaSaysWhatToBuild) {
  const auto dir = test::scratch_dir();
  const auto scenario = write_scenario(dir, "standard-cuda");
  setenv("FUSECHECK_CUDA_PLUGIN", (dir / "nowhere" / "libfusecheck_cuda.so").c_str(), 1);
  const auto missing = test::run_fusecheck("run " + quoted(scenario) + " --device cuda --no-progress --out " +
                                           quoted(dir / "run.h5"));
  unsetenv("FUSECHECK_CUDA_PLUGIN");
  EXPECT_EQ(missing.exit_code, 2) << missing.err;
  EXPECT_NE(missing.err.find("libfusecheck_cuda.so, which was not found"), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("--target fusecheck_cuda"), std::string::npos) << missing.err;
}

TEST(CudaPlugin, DefaultDeviceWithoutAGpuDriverLoadsNoCuda) {
  if (gpu_driver_present()) GTEST_SKIP() << "an NVIDIA driver is present: the default device loads CUDA here";
  const auto dir = test::scratch_dir();
  const auto scenario = write_scenario(dir, "standard-cuda");
  const auto r = test::run_fusecheck("run " + quoted(scenario) + " --no-progress --out " + quoted(dir / "run.h5"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto root = results::read_h5_tree(dir / "run.h5");
  EXPECT_EQ(root.attr_string("device").value_or(""), "cpu");
  EXPECT_EQ(root.attr_string("plugins").value_or("?"), "") << "libfusecheck_cuda.so was loaded";
}

#ifdef FUSECHECK_TEST_CUDA_PLUGIN
// Loading needs the CUDA runtime library, not a GPU: this runs wherever nvcc built it.
TEST(CudaPlugin, OffersTheBuiltInCudaPathsAndRecordsTheFusedKernelSwitches) {
  register_builtin_paths();
  EXPECT_GE(cuda_device_count(), 0);
  const auto& plugins = loaded_plugins();
  const auto it = std::find_if(plugins.begin(), plugins.end(), [](const auto& p) { return p.name == "fusecheck-cuda"; });
  ASSERT_NE(it, plugins.end());
  EXPECT_EQ(it->file, std::filesystem::canonical(FUSECHECK_TEST_CUDA_PLUGIN).string());
  EXPECT_EQ(it->paths, (std::vector<std::string>{"ref32-cuda", "ref64-cuda", "standard-cuda", "fused-cuda",
                                                 "fused-cuda:batch-invariant", "fused-cuda:fp8-kv",
                                                 "fused-cuda:fp8-kv-per-head", "fused-cuda:fp8-kv-dynamic",
                                                 "fused-cuda:fp8-kv-per-head-dynamic", "fused-cuda:fp8-w8a8"}));
  for (const auto& name : it->paths) {
    const PathInfo* info = find_path(name);
    ASSERT_NE(info, nullptr) << name;
    EXPECT_EQ(info->device, "cuda");
  }
  std::vector<std::string> switches;
  for (const auto& [name, value] : it->env) switches.push_back(name);
  EXPECT_EQ(switches, (std::vector<std::string>{"FUSECHECK_FUSED_PDL", "FUSECHECK_FUSED_ROPE_FOLD",
                                                "FUSECHECK_GEMV_L2PF", "FUSECHECK_PREFILL_PV_SPLIT"}));
}
#endif

TEST(PathsCommand, ListsBuiltInAndPluggedInPathsWithDeviceRecipeRoleAndTaps) {
  const auto r = test::run_fusecheck("paths --plugin " + quoted(FUSECHECK_EXAMPLE_CPU_PLUGIN));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ref64-cpu\n  device cpu;"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("example-cpu-bf16\n  device cpu; recipe example-bf16; role other; dtype BF16"),
            std::string::npos) << r.out;
  EXPECT_NE(r.out.find("from: " + std::filesystem::canonical(FUSECHECK_EXAMPLE_CPU_PLUGIN).string()),
            std::string::npos) << r.out;
}

}  // namespace
}  // namespace fusecheck
