// for_each_float_chunk hands over exactly TensorView::to_float's values, in order, chunk
// after chunk, for every stored dtype and a block-quantized tensor, at sizes that leave a
// partial last chunk; a reused buffer gives the same values for a second tensor.
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness/checkpoint/float_chunks.h"
#include "harness/checkpoint/gguf_quants.h"
#include "harness/core/dtype.h"
#include "tests/checkpoint/fixtures.h"

namespace fusecheck {
namespace {

// Seeded bytes of `n` values of `dtype` (non-zero, finite: random bits with the exponent tamed).
std::vector<std::byte> random_values(DType dtype, std::int64_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 2.0);
  std::vector<std::byte> out(static_cast<std::size_t>(n) * dtype_size(dtype));
  for (std::int64_t i = 0; i < n; ++i) {
    const double v = normal(rng) + (normal(rng) > 0 ? 0.5 : -0.5);
    std::byte* p = out.data() + static_cast<std::size_t>(i) * dtype_size(dtype);
    switch (dtype) {
      case DType::F64: std::memcpy(p, &v, 8); break;
      case DType::F32: { const float f = static_cast<float>(v); std::memcpy(p, &f, 4); break; }
      case DType::BF16: { const std::uint16_t b = double_to_bf16(v); std::memcpy(p, &b, 2); break; }
      case DType::F16: { const std::uint16_t b = double_to_fp16(v); std::memcpy(p, &b, 2); break; }
    }
  }
  return out;
}

TensorView view(const std::vector<std::byte>& bytes, DType dtype, std::int64_t n, const BlockCodec* codec = nullptr) {
  TensorView t;
  t.name = "chunked_tensor";
  t.dtype = dtype;
  t.codec = codec;
  t.shape = {n};
  t.bytes = bytes;
  return t;
}

// The chunks, concatenated, with a check that they arrive in order and cover the tensor.
std::vector<float> gather(const TensorView& t, std::vector<float>& buffer, std::int64_t chunk) {
  std::vector<float> all;
  for_each_float_chunk(t, buffer, [&](std::int64_t first, std::span<const float> values) {
    EXPECT_EQ(first, static_cast<std::int64_t>(all.size()));
    all.insert(all.end(), values.begin(), values.end());
  }, chunk);
  EXPECT_EQ(static_cast<std::int64_t>(all.size()), t.numel());
  return all;
}

void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

struct Case {
  DType dtype;
  std::int64_t n, chunk;
};
class FloatChunks : public testing::TestWithParam<Case> {};

TEST_P(FloatChunks, ChunksConcatenateToToFloat) {
  const Case c = GetParam();
  const auto bytes = random_values(c.dtype, c.n, 0x18d + c.n);
  const TensorView t = view(bytes, c.dtype, c.n);
  std::vector<float> buffer;
  expect_same_bits(gather(t, buffer, c.chunk), t.to_float());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, FloatChunks,
                         testing::Values(Case{DType::BF16, 100003, 4099}, Case{DType::F16, 100003, 4099},
                                         Case{DType::F32, 100003, 4099}, Case{DType::F64, 100003, 4099},
                                         Case{DType::BF16, 7, 1 << 24}, Case{DType::BF16, 4099, 4099}),
                         [](const testing::TestParamInfo<Case>& i) {
                           return std::string(dtype_name(i.param.dtype)) + "_" + std::to_string(i.param.n) + "_by_" +
                                  std::to_string(i.param.chunk);
                         });

TEST(FloatChunksQuantized, ChunksAreWholeBlocksAndMatchToFloat) {
  const BlockCodec* codec = ggml_quant_codec(static_cast<std::uint32_t>(GgmlQuant::Q4_K));
  ASSERT_NE(codec, nullptr);
  const std::int64_t blocks = 37;
  const auto bytes = test::random_quant_blocks(static_cast<std::uint32_t>(GgmlQuant::Q4_K), blocks, 7, true);
  const TensorView t = view(bytes, DType::F32, blocks * codec->block_elems, codec);
  std::vector<float> buffer;
  // A chunk of 1000 values is not a whole number of 256-value blocks: it is cut to 768.
  std::vector<std::int64_t> sizes;
  for_each_float_chunk(t, buffer, [&](std::int64_t, std::span<const float> v) {
    sizes.push_back(static_cast<std::int64_t>(v.size()));
  }, 1000);
  for (std::size_t i = 0; i + 1 < sizes.size(); ++i) EXPECT_EQ(sizes[i], 768);
  expect_same_bits(gather(t, buffer, 1000), t.to_float());
}

TEST(FloatChunksReuse, AReusedBufferGivesTheSecondTensorItsOwnValues) {
  const auto a = random_values(DType::BF16, 50000, 1), b = random_values(DType::BF16, 3000, 2);
  const TensorView ta = view(a, DType::BF16, 50000), tb = view(b, DType::BF16, 3000);
  std::vector<float> buffer;
  gather(ta, buffer, 1 << 24);
  expect_same_bits(gather(tb, buffer, 1 << 24), tb.to_float());
}

}  // namespace
}  // namespace fusecheck
