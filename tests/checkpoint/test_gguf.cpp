// GGUF reader and adapters: metadata of every value type, tensors of every float dtype
// with dimensions reversed to HF order, llama/qwen2/qwen3 specs with the right RoPE
// style, clean errors on every truncation, and sentencepiece decoding.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sys/resource.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/checkpoint/gguf.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "tests/checkpoint/fixtures.h"
#include "tests/common/test_support.h"

namespace fusecheck::test {
namespace {

namespace fs = std::filesystem;

fs::path write_gguf(const GgufWriter& w) {
  const fs::path file = scratch_dir() / "model.gguf";
  w.write(file);
  return file;
}

TEST(GgufParse, ReadsEveryMetadataValueType) {
  GgufWriter w;
  const auto raw = [&](const char* key, std::uint32_t type, std::vector<std::byte> payload) {
    w.raw_kv(key, type, payload);
  };
  raw("u8", kU8, {std::byte{200}});
  raw("i8", kI8, {std::byte{0xFE}});
  raw("u16", kU16, {std::byte{0x34}, std::byte{0x12}});
  raw("i16", kI16, {std::byte{0xFF}, std::byte{0xFF}});
  w.kv_u32("u32", 4000000000u);
  w.kv_i32("i32", -7);
  w.kv_f32("f32", 0.1f);
  raw("bool", kBool, {std::byte{1}});
  w.kv_string("str", "h\xC3\xA9llo");
  std::vector<std::byte> u64, i64, f64;
  put_u64(u64, 1ull << 40);
  put_u64(i64, static_cast<std::uint64_t>(-5));
  const double d = -2.5;
  std::uint64_t bits;
  std::memcpy(&bits, &d, 8);
  put_u64(f64, bits);
  raw("u64", kU64, u64);
  raw("i64", kI64, i64);
  raw("f64", kF64, f64);
  w.kv_i32_array("arr", {3, -1, 4});
  w.kv_string_array("strs", {"a", "", "ccc"});
  const auto bytes = w.bytes();
  const GgufContents c = parse_gguf(bytes, "m.gguf");
  const auto& m = c.metadata;
  EXPECT_EQ(c.version, 3u);
  EXPECT_EQ(m.at("u8").as_int(), 200);
  EXPECT_EQ(m.at("i8").as_int(), -2);
  EXPECT_EQ(m.at("u16").as_int(), 0x1234);
  EXPECT_EQ(m.at("i16").as_int(), -1);
  EXPECT_EQ(m.at("u32").as_int(), 4000000000LL);
  EXPECT_EQ(m.at("i32").as_int(), -7);
  EXPECT_DOUBLE_EQ(*m.at("f32").as_double(), 0.1);  // shortest decimal of the float
  EXPECT_EQ(m.at("bool").to_string(), "true");
  EXPECT_EQ(*m.at("str").as_string(), "h\xC3\xA9llo");
  EXPECT_EQ(m.at("u64").as_int(), 1LL << 40);
  EXPECT_EQ(m.at("i64").as_int(), -5);
  EXPECT_DOUBLE_EQ(*m.at("f64").as_double(), -2.5);
  ASSERT_NE(m.at("arr").as_array(), nullptr);
  EXPECT_EQ(m.at("arr").to_string(), "[3 x int32: 3, -1, 4]");
  EXPECT_EQ(m.at("strs").as_array()->size(), 3u);
  EXPECT_EQ(*m.at("strs").as_array()->at(2).as_string(), "ccc");
}

TEST(GgufParse, ReversesDimsToHfOrder) {
  GgufWriter w;
  std::vector<float> values(6);
  for (int i = 0; i < 6; ++i) values[i] = 0.5f * static_cast<float>(i) - 1.0f;
  w.tensor({"m", {2, 3}, values}, DType::F32);
  const auto bytes = w.bytes();
  // The writer stores dims fastest first: [3, 2] on disk.
  const GgufContents c = parse_gguf(bytes, "m.gguf");
  ASSERT_EQ(c.tensors.size(), 1u);
  EXPECT_EQ(c.tensors[0].shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(c.tensors[0].rows(), 2);
  EXPECT_EQ(c.tensors[0].cols(), 3);
  EXPECT_EQ(c.tensors[0].to_float(), values);
  EXPECT_EQ(c.tensor_types[0], "F32");
}

TEST(GgufParse, AcceptsVersionTwo) {
  GgufWriter w = tiny_gguf(TinyModel{}, "llama", DType::F32);
  w.version = 2;
  const auto bytes = w.bytes();
  EXPECT_EQ(parse_gguf(bytes, "m.gguf").version, 2u);
}

TEST(GgufParse, RejectsVersionOne) {
  GgufWriter w;
  w.version = 1;
  const auto bytes = w.bytes();
  EXPECT_THROW(parse_gguf(bytes, "m.gguf"), InputError);
}

TEST(GgufParse, HonoursLargerAlignment) {
  GgufWriter w;
  w.alignment = 64;
  w.kv_u32("general.alignment", 64);
  w.tensor({"a", {3}, {1.0f, 2.0f, 3.0f}}, DType::F32);
  w.tensor({"b", {2}, {-4.0f, 5.0f}}, DType::F32);
  const auto bytes = w.bytes();
  const GgufContents c = parse_gguf(bytes, "m.gguf");
  EXPECT_EQ(c.alignment, 64u);
  EXPECT_EQ(c.data_start % 64, 0u);
  EXPECT_EQ(c.tensors[1].to_float(), (std::vector<float>{-4.0f, 5.0f}));
}

TEST(GgufParse, RejectsMisalignedOffset) {
  GgufWriter w;
  w.tensor({"a", {3}, {1.0f, 2.0f, 3.0f}}, DType::F32);
  w.set_last_offset(4);
  const auto bytes = w.bytes();
  EXPECT_THROW(parse_gguf(bytes, "m.gguf"), InputError);
}

TEST(GgufParse, RejectsOverlappingTensors) {
  GgufWriter w;
  w.tensor({"a", {16}, std::vector<float>(16, 0.5f)}, DType::F32);
  w.tensor({"b", {8}, std::vector<float>(8, 0.25f)}, DType::F32);
  w.set_last_offset(32);  // inside a's 64 bytes
  const auto bytes = w.bytes();
  try {
    parse_gguf(bytes, "m.gguf");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("overlaps"), std::string::npos) << e.what();
  }
}

TEST(GgufParse, RejectsDuplicateTensorNamesAndKeys) {
  GgufWriter w;
  w.tensor({"a", {1}, {1.0f}}, DType::F32);
  w.tensor({"a", {1}, {2.0f}}, DType::F32);
  EXPECT_THROW(parse_gguf(w.bytes(), "m.gguf"), InputError);
  GgufWriter k;
  k.kv_u32("x", 1);
  k.kv_u32("x", 2);
  EXPECT_THROW(parse_gguf(k.bytes(), "m.gguf"), InputError);
}

TEST(GgufParse, RejectsEveryTruncationOfAValidFile) {
  const auto bytes = tiny_gguf(TinyModel{.layers = 1}, "qwen3", DType::F16).bytes();
  // Prefixes that only drop the padding after the last tensor are still valid files.
  const GgufContents whole = parse_gguf(bytes, "m.gguf");
  std::size_t data_end = 0;
  for (const TensorView& t : whole.tensors) {
    data_end = std::max<std::size_t>(data_end, static_cast<std::size_t>(t.bytes.data() - bytes.data()) + t.bytes.size());
  }
  // Every shorter prefix cuts a header field or a tensor's data. Stepping by 3 keeps the
  // test fast under ASan while still landing inside every multi-byte field.
  for (std::size_t n = 0; n < data_end; n += 3) {
    const std::vector<std::byte> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(parse_gguf(prefix, "m.gguf"), InputError) << "prefix of " << n << " bytes";
  }
}

class GgufDtypeTest : public ::testing::TestWithParam<DType> {};

TEST_P(GgufDtypeTest, LlamaLoadsWithInterleavedRope) {
  const DType dtype = GetParam();
  const TinyModel m;
  const auto ck = Checkpoint::open(write_gguf(tiny_gguf(m, "llama", dtype)));
  const ModelSpec& s = ck->spec();
  EXPECT_EQ(ck->format(), "gguf");
  EXPECT_EQ(s.architecture, "llama");
  EXPECT_EQ(s.source_format, "gguf");
  EXPECT_EQ(s.rope_style, RopeStyle::Interleaved);
  EXPECT_EQ(s.n_layers, 2);
  EXPECT_EQ(s.hidden, 12);
  EXPECT_EQ(s.n_heads, 3);
  EXPECT_EQ(s.n_kv_heads, 1);
  EXPECT_EQ(s.head_dim, 4);
  EXPECT_EQ(s.intermediate, 20);
  EXPECT_EQ(s.vocab, 17);
  EXPECT_DOUBLE_EQ(s.rms_eps, 1e-6);
  EXPECT_DOUBLE_EQ(s.rope_theta, 1e6);
  EXPECT_EQ(s.max_position, 256);
  EXPECT_EQ(s.dtype, dtype_name(dtype));
  EXPECT_FALSE(s.tied_embeddings);
  const TensorView* wk = ck->model().layers[1].wk;
  EXPECT_EQ(wk->name, "blk.1.attn_k.weight");
  EXPECT_EQ(wk->shape, (std::vector<std::int64_t>{4, 12}));
  std::vector<NamedTensor> expected = tiny_tensors(m, true);
  const std::vector<float> want = find_tensor(expected, "blk.1.attn_k.weight")->values;
  const std::vector<float> got = wk->to_float();
  for (std::size_t i = 0; i < want.size(); ++i) {
    const float r = dtype == DType::BF16 ? round_to_bf16(want[i]) : dtype == DType::F16 ? round_to_fp16(want[i]) : want[i];
    EXPECT_EQ(got[i], r) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(FloatDtypes, GgufDtypeTest, ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::F64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(GgufCheckpoint, Qwen3HasQkNormsAndNeoxRope) {
  const auto ck = Checkpoint::open(write_gguf(tiny_gguf({.hf_class = "Qwen3ForCausalLM"}, "qwen3", DType::BF16)));
  EXPECT_EQ(ck->spec().architecture, "qwen3");
  EXPECT_EQ(ck->spec().rope_style, RopeStyle::NeoxHalfSplit);
  EXPECT_TRUE(ck->spec().has_qk_norm);
  EXPECT_EQ(ck->model().layers[0].k_norm->name, "blk.0.attn_k_norm.weight");
}

TEST(GgufCheckpoint, Qwen2HasQkvBiasesAndNeoxRope) {
  const auto ck = Checkpoint::open(write_gguf(tiny_gguf({.hf_class = "Qwen2ForCausalLM"}, "qwen2", DType::F16)));
  EXPECT_EQ(ck->spec().architecture, "qwen2");
  EXPECT_EQ(ck->spec().rope_style, RopeStyle::NeoxHalfSplit);
  EXPECT_TRUE(ck->spec().has_qkv_bias);
  EXPECT_EQ(ck->model().layers[1].bv->name, "blk.1.attn_v.bias");
}

TEST(GgufCheckpoint, MissingOutputMeansTiedEmbeddings) {
  const auto ck = Checkpoint::open(write_gguf(tiny_gguf({}, "llama", DType::F32, {"output.weight"})));
  EXPECT_TRUE(ck->spec().tied_embeddings);
  EXPECT_EQ(ck->model().lm_head, ck->model().embed);
}

// The tiny llama model plus one unused Q8_0 tensor of `rows` x 4096 values stored last, its
// data a hole of the file (sparse: reading it would fault in every page).
fs::path model_with_sparse_tensor(const fs::path& file, std::int64_t rows) {
  GgufWriter w = tiny_gguf({}, "llama", DType::F32);
  w.tensor("blk.0.extra.weight", 8, {rows, 4096}, random_quant_blocks(8, 1, 3, true));
  std::vector<std::byte> image = w.bytes();
  write_bytes(file, image);
  // The writer stored one block; the tensor needs rows * 128 blocks of 34 bytes.
  const std::uint64_t needed = static_cast<std::uint64_t>(rows) * 128 * 34 - 34;
  fs::resize_file(file, image.size() + needed);
  return file;
}

long minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

TEST(GgufCheckpoint, OpeningReadsNoTensorDataWhateverTheFileSize) {
  const fs::path small = model_with_sparse_tensor(scratch_dir() / "small.gguf", 64);        // 8.5 MiB
  const fs::path large = model_with_sparse_tensor(scratch_dir() / "large.gguf", 1 << 18);  // 1.1 GiB
  ASSERT_GT(fs::file_size(large), std::uintmax_t{1} << 30);
  const auto faults_opening = [](const fs::path& file) {
    const long before = minor_faults();
    const auto ck = Checkpoint::open(file);
    EXPECT_EQ(ck->find("blk.0.extra.weight")->storage_name(), "Q8_0");
    return minor_faults() - before;
  };
  faults_opening(small);  // warms the allocator and the code pages
  const long small_faults = faults_opening(small);
  const long large_faults = faults_opening(large);
  // Reading the 1.1 GiB tensor would take over 17000 faults (4 KiB pages, 16 per fault at
  // most); opening touches headers and the norm weights only, the same pages for both.
  EXPECT_LT(large_faults, small_faults + 500) << "small " << small_faults << ", large " << large_faults;
}

TEST(GgufCheckpoint, InfoListsQuantizedStorageOfAHugeTensorFromItsHeader) {
  const fs::path file = model_with_sparse_tensor(scratch_dir() / "large.gguf", 1 << 18);
  const CommandResult r = run_fusecheck("info --format json '" + file.string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["dtypes"]["Q8_0"]["tensors"], 1);
  EXPECT_EQ(j["dtypes"]["Q8_0"]["elements"], std::uint64_t{1} << 30);
  EXPECT_EQ(j["dtypes"]["Q8_0"]["bytes"], (std::uint64_t{1} << 30) / 32 * 34);
  EXPECT_EQ(j["unused_tensors"], nlohmann::json::array({"blk.0.extra.weight"}));
}

TEST(GgufCheckpoint, MissingHyperparameterNamesKey) {
  GgufWriter w;
  w.kv_string("general.architecture", "qwen3");
  w.kv_u32("qwen3.block_count", 2);
  try {
    Checkpoint::open(write_gguf(w));
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("missing metadata key 'qwen3.embedding_length'"), std::string::npos) << e.what();
  }
}

TEST(GgufCheckpoint, OpensByMagicWithoutExtension) {
  const fs::path file = scratch_dir() / "model.bin";
  tiny_gguf({}, "llama", DType::F32).write(file);
  EXPECT_EQ(Checkpoint::open(file)->format(), "gguf");
}

TEST(GgufCheckpoint, DecodesSentencepiecePieces) {
  const auto ck = Checkpoint::open(write_gguf(tiny_gguf({}, "llama", DType::F32)));
  // Pieces: 1 <s>, 3 <0x0A>, 4 "▁Once", 5 "▁upon", 6 "▁a", 7 "▁time", 8 ",", 9 "."
  EXPECT_EQ(ck->decode({1, 4, 5, 6, 7, 8, 3, 6, 9}), "Once upon a time,\n a.");
  EXPECT_EQ(ck->decode({}), "");
  EXPECT_THROW(ck->decode({17}), InputError);
  EXPECT_THROW(ck->decode({-1}), InputError);
}

TEST(GgufCheckpoint, DecodesGpt2BytePieces) {
  // GPT-2 byte-level pieces: U+0120 (Ġ) is the space byte, U+010A (Ċ) the newline, and
  // printable Latin-1 stands for its own byte: é (bytes C3 A9) is the pieces Ã and ©.
  const std::vector<std::string> pieces = {"<unk>", "<|bos|>", "<|eos|>", "Hello", "\xC4\xA0world", "\xC4\x8A",
                                           "caf", "\xC3\x83", "\xC2\xA9"};
  const auto ck = Checkpoint::open(
      write_gguf(tiny_gguf({.hf_class = "Qwen3ForCausalLM"}, "qwen3", DType::F32, {}, "gpt2", pieces)));
  EXPECT_EQ(ck->decode({1, 3, 4, 5, 6, 7, 8}), "Hello world\ncaf\xC3\xA9");
}

// ---- the real model ----

class Stories260K : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto dir = models_dir();
    if (!dir) GTEST_SKIP() << models_dir_skip_reason();
    dir_ = *dir;
  }
  fs::path dir_;
};

TEST_F(Stories260K, LoadsWithPublishedSpec) {
  const auto ck = Checkpoint::open(dir_ / "stories260K.gguf");
  const ModelSpec& s = ck->spec();
  EXPECT_EQ(s.architecture, "llama");
  EXPECT_EQ(s.n_layers, 5);
  EXPECT_EQ(s.hidden, 64);
  EXPECT_EQ(s.n_heads, 8);
  EXPECT_EQ(s.n_kv_heads, 4);
  EXPECT_EQ(s.head_dim, 8);
  EXPECT_EQ(s.rope_dim, 8);
  EXPECT_EQ(s.intermediate, 172);
  EXPECT_EQ(s.vocab, 512);
  EXPECT_EQ(s.rope_style, RopeStyle::Interleaved);
  EXPECT_FALSE(s.tied_embeddings);
  EXPECT_DOUBLE_EQ(s.rms_eps, 1e-5);
  EXPECT_EQ(s.bos_id, 1);
  EXPECT_EQ(s.eos_id, 2);
  EXPECT_EQ(s.dtype, "F32");
  EXPECT_EQ(ck->tensors().size(), 48u);
  EXPECT_TRUE(ck->unused_tensors().empty());
  EXPECT_EQ(ck->vocab().size(), 512u);
  // GGUF lists [64, 32]; the view is 32 x 64 (out x in), like HF's k_proj.
  EXPECT_EQ(ck->model().layers[0].wk->shape, (std::vector<std::int64_t>{32, 64}));
}

TEST_F(Stories260K, NormWeightRatiosMatchTheReadme) {
  const auto ck = Checkpoint::open(dir_ / "stories260K.gguf");
  const auto ratio = [](const TensorView* t) {
    std::vector<double> a;
    for (const double v : t->to_double()) a.push_back(std::fabs(v));
    std::sort(a.begin(), a.end());
    const double median = a.size() % 2 ? a[a.size() / 2] : 0.5 * (a[a.size() / 2 - 1] + a[a.size() / 2]);
    return a.back() / median;
  };
  // The README gives two decimals.
  EXPECT_NEAR(ratio(ck->model().layers[0].attn_norm), 2.57, 0.006);
  EXPECT_NEAR(ratio(ck->model().layers[4].mlp_norm), 1.28, 0.006);
  EXPECT_NEAR(ratio(ck->model().final_norm), 2.58, 0.006);
}

TEST_F(Stories260K, DecodesGreedyIdsToPublishedText) {
  const auto ck = Checkpoint::open(dir_ / "stories260K.gguf");
  std::ifstream ids_file(dir_ / "stories260K.greedy.ids");
  std::vector<int> ids;
  for (int id; ids_file >> id;) ids.push_back(id);
  ASSERT_EQ(ids.size(), 256u);
  std::ifstream text_file(dir_ / "stories260K.greedy.txt");
  const std::string text((std::istreambuf_iterator<char>(text_file)), std::istreambuf_iterator<char>());
  // The text file ends with a newline that no generated token produced.
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(ck->decode(ids), text.substr(0, text.size() - 1));
  EXPECT_EQ(text.back(), '\n');
}

}  // namespace
}  // namespace fusecheck::test
