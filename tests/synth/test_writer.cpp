// The safetensors / HF directory writer: layout read back with a parser written here
// (independent of the reader in harness/checkpoint), determinism, and sharding.
#include <cstring>
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/checkpoint/safetensors_writer.h"
#include "harness/core/error.h"
#include "tests/common/test_support.h"

namespace fusecheck {
namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct ParsedFile {
  std::uint64_t header_len = 0;
  std::string header_text;
  nlohmann::ordered_json header;
  std::string data;
};

ParsedFile parse(const std::filesystem::path& p) {
  ParsedFile f;
  const std::string bytes = slurp(p);
  EXPECT_GE(bytes.size(), 8u);
  std::memcpy(&f.header_len, bytes.data(), 8);
  f.header_text = bytes.substr(8, f.header_len);
  f.header = nlohmann::ordered_json::parse(f.header_text);
  f.data = bytes.substr(8 + f.header_len);
  return f;
}

std::vector<TensorToWrite> sample_tensors() {
  // Non-trivial values (never zeros) at odd sizes.
  std::vector<float> a(7 * 3), b(5), c(11);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = 0.25f * static_cast<float>(i) - 1.5f;
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = 1.0f + 1.0f / static_cast<float>(i + 3);
  for (std::size_t i = 0; i < c.size(); ++i) c[i] = -3.0f + static_cast<float>(i * i);
  return {make_tensor("z.weight", DType::BF16, {7, 3}, a), make_tensor("a.norm", DType::F32, {5}, b),
          make_tensor("m.half", DType::F16, {11}, c)};
}

TEST(SafetensorsWriter, HeaderIsPaddedWithSpacesToEightBytesAndKeepsTensorOrder) {
  const auto dir = test::scratch_dir();
  write_safetensors(dir / "t.safetensors", sample_tensors(), {{"k", "v"}});
  const ParsedFile f = parse(dir / "t.safetensors");
  EXPECT_EQ(f.header_len % 8, 0u);
  EXPECT_EQ(f.header_text.front(), '{');
  const auto last = f.header_text.find_last_of('}');
  EXPECT_EQ(f.header_text.find_first_not_of(' ', last + 1), std::string::npos);
  std::vector<std::string> keys;
  for (const auto& [k, v] : f.header.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"__metadata__", "z.weight", "a.norm", "m.half"}));
  EXPECT_EQ(f.header["__metadata__"]["k"], "v");
}

TEST(SafetensorsWriter, TensorsAreContiguousAndHoldTheEncodedValues) {
  const auto dir = test::scratch_dir();
  const auto tensors = sample_tensors();
  write_safetensors(dir / "t.safetensors", tensors);
  const ParsedFile f = parse(dir / "t.safetensors");
  std::uint64_t expected_begin = 0;
  for (const TensorToWrite& t : tensors) {
    const auto& entry = f.header[t.name];
    EXPECT_EQ(entry["dtype"], std::string(dtype_name(t.dtype)));
    EXPECT_EQ(entry["shape"].get<std::vector<std::int64_t>>(), t.shape);
    const auto begin = entry["data_offsets"][0].get<std::uint64_t>();
    const auto end = entry["data_offsets"][1].get<std::uint64_t>();
    EXPECT_EQ(begin, expected_begin);
    ASSERT_EQ(end - begin, t.data.size());
    EXPECT_EQ(0, std::memcmp(f.data.data() + begin, t.data.data(), t.data.size())) << t.name;
    expected_begin = end;
  }
  EXPECT_EQ(expected_begin, f.data.size());
}

TEST(SafetensorsWriter, MakeTensorRoundsToNearestEven) {
  // 1 + 2^-8 lies halfway between two bf16 values; ties go to the even one (1.0).
  const auto t = make_tensor("x", DType::BF16, {2}, {1.0f + 1.0f / 256.0f, 1.0f + 3.0f / 256.0f});
  std::uint16_t bits[2];
  std::memcpy(bits, t.data.data(), 4);
  EXPECT_EQ(bits[0], 0x3f80);
  EXPECT_EQ(bits[1], 0x3f82);
}

TEST(SafetensorsWriter, SameInputGivesByteIdenticalFiles) {
  const auto dir = test::scratch_dir();
  write_hf_checkpoint(dir / "a", "{}\n", sample_tensors(), 50);
  write_hf_checkpoint(dir / "b", "{}\n", sample_tensors(), 50);
  std::size_t compared = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir / "a")) {
    EXPECT_EQ(slurp(entry.path()), slurp(dir / "b" / entry.path().filename())) << entry.path();
    ++compared;
  }
  EXPECT_EQ(compared, 4u);  // config, two shards, index
}

TEST(HfCheckpointWriter, SmallCheckpointIsOneFileWithFormatPt) {
  const auto dir = test::scratch_dir();
  write_hf_checkpoint(dir, "{\"model_type\": \"llama\"}\n", sample_tensors(), 1 << 20);
  EXPECT_EQ(slurp(dir / "config.json"), "{\"model_type\": \"llama\"}\n");
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors.index.json"));
  const ParsedFile f = parse(dir / "model.safetensors");
  EXPECT_EQ(f.header["__metadata__"]["format"], "pt");
}

TEST(HfCheckpointWriter, PastTheShardSizeWritesShardsAndAnIndex) {
  const auto dir = test::scratch_dir();
  const auto tensors = sample_tensors();  // 42, 20 and 22 bytes
  write_hf_checkpoint(dir, "{}\n", tensors, 50);
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors"));
  const auto index = nlohmann::json::parse(slurp(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 84);
  // Greedy: 42 fits; 42 + 20 > 50 closes the shard; 20 + 22 fits.
  EXPECT_EQ(index["weight_map"]["z.weight"], "model-00001-of-00002.safetensors");
  EXPECT_EQ(index["weight_map"]["a.norm"], "model-00002-of-00002.safetensors");
  EXPECT_EQ(index["weight_map"]["m.half"], "model-00002-of-00002.safetensors");
  const ParsedFile second = parse(dir / "model-00002-of-00002.safetensors");
  EXPECT_EQ(second.header["a.norm"]["data_offsets"][0], 0);
  EXPECT_EQ(second.data.size(), 42u);
}

TEST(HfCheckpointWriter, RewritingUnshardedRemovesStaleShards) {
  const auto dir = test::scratch_dir();
  write_hf_checkpoint(dir, "{}\n", sample_tensors(), 50);
  write_hf_checkpoint(dir, "{}\n", sample_tensors(), 0);
  EXPECT_TRUE(std::filesystem::exists(dir / "model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(dir / "model-00001-of-00002.safetensors"));
}

TEST(HfCheckpointWriter, StreamedTensorsArriveInPiecesAtFixedOffsets) {
  const auto dir = test::scratch_dir();
  // 40M bf16 elements = 80 MiB: two pieces, the second starting at kTensorFillPieceBytes.
  const std::vector<TensorLayout> layout = {{"big", DType::BF16, {40, 1 << 20}}};
  std::vector<std::uint64_t> offsets;
  write_hf_checkpoint_streamed(dir, "{}\n", layout,
                               [&](std::size_t, std::uint64_t offset, std::span<std::byte> out) {
                                 offsets.push_back(offset);
                                 std::memset(out.data(), 0x3f, out.size());
                               });
  EXPECT_EQ(offsets, (std::vector<std::uint64_t>{0, kTensorFillPieceBytes}));
  EXPECT_GT(std::filesystem::file_size(dir / "model.safetensors"), std::uint64_t{80} << 20);
}

TEST(HfCheckpointWriter, UnwritableDirectoryIsAnInputErrorNamingIt) {
  EXPECT_THROW(write_hf_checkpoint("/proc/fusecheck-cannot-write", "{}", sample_tensors()), InputError);
}

}  // namespace
}  // namespace fusecheck
