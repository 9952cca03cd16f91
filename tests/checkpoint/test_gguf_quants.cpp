// Dequantization of GGUF tensor types, bit for bit against an independent implementation:
// the gguf Python package (llama.cpp's gguf-py, pinned by scripts/fetch-test-deps). Three
// sources of truth: the committed golden vectors (made by scripts/gguf_tool.py golden, so
// the check holds without the package), fresh seeded random blocks of every type decoded
// by the package, and every tensor of a real model stored quantized.
#include <bit>
#include <cstring>
#include <fstream>
#include <iostream>
#include <cstdlib>
#include <map>
#include <unistd.h>

#include <fmt/core.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/checkpoint/gguf.h"
#include "harness/checkpoint/gguf_quants.h"
#include "harness/checkpoint/mapped_file.h"
#include "tests/checkpoint/fixtures.h"
#include "tests/checkpoint/gguf_deps.h"
#include "tests/common/test_support.h"

namespace fusecheck::test {
namespace {

namespace fs = std::filesystem;

struct TypeCase {
  std::string name;
  std::uint32_t ggml_type;
};
void PrintTo(const TypeCase& c, std::ostream* os) { *os << c.name; }

const std::vector<TypeCase>& quant_types() {
  static const std::vector<TypeCase> types = {{"Q4_0", 2}, {"Q4_1", 3}, {"Q5_0", 6}, {"Q5_1", 7},
                                              {"Q8_0", 8}, {"Q2_K", 10}, {"Q3_K", 11}, {"Q4_K", 12},
                                              {"Q5_K", 13}, {"Q6_K", 14}};
  return types;
}
const std::vector<TypeCase>& all_types() {
  static const std::vector<TypeCase> types = [] {
    std::vector<TypeCase> t = quant_types();
    t.insert(t.end(), {{"F32", 0}, {"F16", 1}, {"BF16", 30}, {"F64", 28}});
    return t;
  }();
  return types;
}

// A view of `data` as a 1-D tensor of the given ggml type.
TensorView view_of(const TypeCase& type, std::span<const std::byte> data) {
  TensorView v;
  v.name = "test." + type.name;
  v.file = "test";
  v.bytes = data;
  if (const BlockCodec* codec = ggml_quant_codec(type.ggml_type)) {
    v.codec = codec;
    v.shape = {static_cast<std::int64_t>(data.size() / codec->block_bytes) * codec->block_elems};
  } else {
    v.dtype = type.name == "F32" ? DType::F32 : type.name == "F16" ? DType::F16 : type.name == "BF16" ? DType::BF16 : DType::F64;
    v.shape = {static_cast<std::int64_t>(data.size() / dtype_size(v.dtype))};
  }
  return v;
}

std::vector<std::byte> from_hex(const std::string& hex) {
  std::vector<std::byte> out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::byte>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

std::vector<std::uint32_t> float_bits(std::span<const std::byte> le_floats) {
  std::vector<std::uint32_t> out(le_floats.size() / 4);
  std::memcpy(out.data(), le_floats.data(), out.size() * 4);
  return out;
}

// Bit equality of fusecheck's values and the package's. A quantized type must match every
// bit. A plain type's NaN inputs may carry payloads that numpy's conversion and ours quiet
// differently; those must be NaN on both sides, every other value bit-equal.
::testing::AssertionResult same_bits(bool quantized, const std::vector<float>& ours,
                                     const std::vector<std::uint32_t>& theirs) {
  if (ours.size() != theirs.size()) {
    return ::testing::AssertionFailure() << ours.size() << " values, the package gave " << theirs.size();
  }
  if (ours.empty()) return ::testing::AssertionFailure() << "no values compared";
  const bool plain = !quantized;
  std::size_t mismatches = 0, first = 0;
  for (std::size_t i = 0; i < ours.size(); ++i) {
    const std::uint32_t a = std::bit_cast<std::uint32_t>(ours[i]);
    const bool both_nan = std::isnan(ours[i]) && std::isnan(std::bit_cast<float>(theirs[i]));
    if (a != theirs[i] && !(plain && both_nan)) {
      if (mismatches++ == 0) first = i;
    }
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << mismatches << " of " << ours.size() << " values differ; first at " << first
                                       << ": fusecheck 0x" << std::hex << std::bit_cast<std::uint32_t>(ours[first])
                                       << ", gguf 0x" << theirs[first];
}

// ---- committed golden vectors ----

class GoldenVectors : public ::testing::TestWithParam<TypeCase> {
 protected:
  static const nlohmann::json& golden() {
    static const nlohmann::json g = [] {
      std::ifstream in(source_dir() / "tests" / "checkpoint" / "data" / "gguf_golden.json");
      return nlohmann::json::parse(in);
    }();
    return g;
  }
};

TEST_P(GoldenVectors, DecodeBitExactly) {
  const TypeCase& type = GetParam();
  const nlohmann::json* found = nullptr;
  for (const auto& c : golden()["cases"]) {
    if (c["type"] == type.name) found = &c;
  }
  ASSERT_NE(found, nullptr) << "no golden case for " << type.name;
  std::cout << "golden vectors: gguf " << golden()["gguf_version"].get<std::string>() << ", seed "
            << golden()["seed"] << "\n";
  const std::vector<std::byte> data = from_hex((*found)["data_hex"]);
  const std::vector<std::byte> values = from_hex((*found)["values_hex"]);
  const TensorView v = view_of(type, data);
  EXPECT_TRUE(same_bits(v.codec != nullptr, v.to_float(), float_bits(values)));
}

INSTANTIATE_TEST_SUITE_P(Gguf, GoldenVectors, ::testing::ValuesIn(all_types()),
                         [](const auto& info) { return info.param.name; });

// ---- fresh random blocks against the gguf package ----

// Every type's blocks are decoded by one run of the package (its start-up dominates); the
// outputs are kept in the build tree under the seed, so the other test processes ctest
// starts reuse them. Blocks are regenerated from the seed in each process.
class AgainstGgufPackage : public ::testing::TestWithParam<TypeCase> {
 protected:
  static constexpr std::uint64_t kSeed = 0x14D0;
  static constexpr std::int64_t kValues = 64 * 256;  // 64 super-blocks, 512 legacy blocks

  static void SetUpTestSuite() {
    std::cout << "random blocks: seed " << kSeed << "\n";
    std::uint64_t seed = kSeed;
    for (const TypeCase& t : all_types()) {
      if (const BlockCodec* codec = ggml_quant_codec(t.ggml_type)) {
        blocks_[t.name] = random_quant_blocks(t.ggml_type, kValues / codec->block_elems, seed++, false);
      } else {
        // Any bits: plain types have no structure to respect.
        const std::size_t bytes = kValues * dtype_size(view_of(t, {}).dtype);
        std::vector<std::byte> data = random_quant_blocks(8, static_cast<std::int64_t>(bytes / 34 + 1), seed++, false);
        data.resize(bytes);
        blocks_[t.name] = data;
      }
    }
    const auto site = gguf_python_site();
    if (!site) return;
    const char* bin = std::getenv("FUSECHECK_BINARY_DIR");
    const fs::path root = (bin ? fs::path(bin) : fs::temp_directory_path()) / "test-scratch";
    dir_ = root / fmt::format("gguf-package-seed-{}", kSeed);
    if (fs::exists(dir_ / "complete")) {
      tool_rc_ = 0;
      return;
    }
    const fs::path tmp = root / fmt::format("gguf-package-seed-{}.{}", kSeed, ::getpid());
    fs::create_directories(tmp);
    std::string args = "dequant";
    for (const TypeCase& t : all_types()) {
      write_bytes(tmp / (t.name + ".blocks"), blocks_.at(t.name));
      args += fmt::format(" {} '{}' '{}'", t.name, (tmp / (t.name + ".blocks")).string(), (tmp / (t.name + ".f32")).string());
    }
    tool_rc_ = run_gguf_tool(*site, args, tool_log_);
    if (tool_rc_ != 0) return;
    write_bytes(tmp / "complete", {});
    std::error_code ec;
    fs::rename(tmp, dir_, ec);  // another process may have got there first: same content
    if (ec) fs::remove_all(tmp);
  }

  static inline fs::path dir_;
  static inline std::map<std::string, std::vector<std::byte>> blocks_;
  static inline int tool_rc_ = -1;
  static inline std::string tool_log_;
};

TEST_P(AgainstGgufPackage, RandomBlocksDecodeBitExactly) {
  if (!gguf_python_site()) GTEST_SKIP() << gguf_python_skip_reason();
  ASSERT_EQ(tool_rc_, 0) << tool_log_;
  const TypeCase& type = GetParam();
  const TensorView v = view_of(type, blocks_.at(type.name));
  ASSERT_EQ(v.numel(), kValues);
  EXPECT_TRUE(same_bits(v.codec != nullptr, v.to_float(), float_bits(read_bytes(dir_ / (type.name + ".f32")))));
}

INSTANTIATE_TEST_SUITE_P(Gguf, AgainstGgufPackage, ::testing::ValuesIn(all_types()),
                         [](const auto& info) { return info.param.name; });

// ---- one block, by hand: what each field means ----

TEST(GgufQuants, Q8_0BlockIsScaleTimesSignedBytes) {
  std::vector<std::byte> block(34);
  const std::uint16_t half = float_to_fp16(0.5f);
  block[0] = static_cast<std::byte>(half & 0xFF);
  block[1] = static_cast<std::byte>(half >> 8);
  for (int j = 0; j < 32; ++j) block[2 + j] = static_cast<std::byte>(static_cast<std::int8_t>(j - 16));
  const std::vector<float> v = view_of({"Q8_0", 8}, block).to_float();
  for (int j = 0; j < 32; ++j) EXPECT_EQ(v[j], 0.5f * static_cast<float>(j - 16)) << j;
}

TEST(GgufQuants, Q4_0LowNibblesFirstThenHighNibbles) {
  std::vector<std::byte> block(18);
  const std::uint16_t two = float_to_fp16(2.0f);
  block[0] = static_cast<std::byte>(two & 0xFF);
  block[1] = static_cast<std::byte>(two >> 8);
  for (int j = 0; j < 16; ++j) block[2 + j] = static_cast<std::byte>((15 - j) << 4 | j);
  const std::vector<float> v = view_of({"Q4_0", 2}, block).to_float();
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(v[j], 2.0f * static_cast<float>(j - 8)) << j;
    EXPECT_EQ(v[j + 16], 2.0f * static_cast<float>(15 - j - 8)) << j + 16;
  }
}

TEST(GgufQuants, ElementAccessAndRowRangesAgreeWithWholeTensor) {
  const TypeCase q4k{"Q4_K", 12};
  const std::vector<std::byte> data = random_quant_blocks(q4k.ggml_type, 3, 99, true);
  const TensorView v = view_of(q4k, data);
  const std::vector<float> all = v.to_float();
  std::vector<float> middle(256);
  v.to_float(256, middle);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(std::bit_cast<std::uint32_t>(middle[i]), std::bit_cast<std::uint32_t>(all[256 + i]));
  for (const std::int64_t i : {0L, 255L, 256L, 600L, 767L}) EXPECT_EQ(v.at(i), all[static_cast<std::size_t>(i)]) << i;
  EXPECT_THROW(v.to_float(100, std::span<float>(middle)), std::logic_error);
}

TEST(GgufQuants, NanScalePropagates) {
  std::vector<std::byte> block = random_quant_blocks(8, 1, 5, true);
  block[0] = std::byte{0x00};
  block[1] = std::byte{0x7E};  // fp16 quiet NaN
  for (const float x : view_of({"Q8_0", 8}, block).to_float()) EXPECT_TRUE(std::isnan(x));
}

// ---- every tensor of a real model stored quantized ----

TEST(RealQuantizedModel, EveryTensorMatchesGgufPackage) {
  const auto model = quantized_model();
  if (!model) GTEST_SKIP() << quantized_model_skip_reason();
  const auto site = gguf_python_site();
  if (!site) GTEST_SKIP() << gguf_python_skip_reason();
  const fs::path out = scratch_dir() / "dequantized";
  fs::create_directories(out);
  std::string log;
  ASSERT_EQ(run_gguf_tool(*site, fmt::format("dequant-model '{}' '{}'", model->string(), out.string()), log), 0) << log;
  const MappedFile file(*model);
  const GgufContents contents = parse_gguf(file.bytes(), model->string());
  std::ifstream index_in(out / "index.json");
  const nlohmann::json index = nlohmann::json::parse(index_in);
  ASSERT_EQ(index.size(), contents.tensors.size());
  std::map<std::string, int> quantized_by_type;
  for (std::size_t i = 0; i < contents.tensors.size(); ++i) {
    const TensorView& t = contents.tensors[i];
    ASSERT_EQ(index[i]["name"], t.name);
    EXPECT_EQ(index[i]["type"], contents.tensor_types[i]) << t.name;
    if (t.codec) ++quantized_by_type[std::string(t.codec->name)];
    EXPECT_TRUE(same_bits(t.codec != nullptr, t.to_float(),
                          float_bits(read_bytes(out / index[i]["file"].get<std::string>()))))
        << t.name;
  }
  // The model is the Q8_0 one: most matrices quantized, the rest (norms, rows of 172) F32.
  EXPECT_EQ(quantized_by_type["Q8_0"], 32);
}

}  // namespace
}  // namespace fusecheck::test
