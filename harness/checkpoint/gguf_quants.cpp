// Dequantization of ggml's block types, written from the block layouts of ggml's
// specification (ggml-common.h block_q4_0 ... block_q6_K, docs in ggml-quants.c). Every
// value is computed with the same float operations in the same order as ggml's reference
// dequantize_row_* (and gguf-py's numpy code): float(fp16 scale) times the integer, plus or
// minus the float min, each product rounded to float on its own. This file is compiled
// with -ffp-contract=off, so the compiler cannot fuse a multiply and an add into one FMA
// (one rounding instead of two) and change the last bit.
#include "harness/checkpoint/gguf_quants.h"

#include <array>
#include <cstring>

namespace fusecheck {

namespace {

constexpr std::int64_t kQK = 32;   // values per block of the legacy types (Q4_0 ... Q8_0)
constexpr std::int64_t kQKK = 256; // values per super-block of the K types
// Below this many values a tensor decodes on the calling thread: a norm weight or one
// embedding row is not worth waking the thread pool for.
[[maybe_unused]] constexpr std::int64_t kParallelValues = std::int64_t{1} << 20;

float f16(const std::byte* p) {
  std::uint16_t bits;
  std::memcpy(&bits, p, 2);
  return fp16_to_float(bits);
}
std::uint8_t u8(const std::byte* p, std::int64_t i) { return std::to_integer<std::uint8_t>(p[i]); }

// block_q4_0 (18 bytes): fp16 d, 16 bytes of 4-bit quants. Value j (< 16) is the low
// nibble of byte j, value j + 16 its high nibble; x = (q - 8) * d.
void block_q4_0(const std::byte* b, float* y) {
  const float d = f16(b);
  const std::byte* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((u8(qs, j) & 0x0F) - 8) * d;
    y[j + 16] = static_cast<float>((u8(qs, j) >> 4) - 8) * d;
  }
}

// block_q4_1 (20 bytes): fp16 d, fp16 m, 16 bytes of nibbles; x = q * d + m.
void block_q4_1(const std::byte* b, float* y) {
  const float d = f16(b), m = f16(b + 2);
  const std::byte* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(u8(qs, j) & 0x0F) * d + m;
    y[j + 16] = static_cast<float>(u8(qs, j) >> 4) * d + m;
  }
}

// The fifth bits of the 32 values of a Q5 block: bit j of a little-endian uint32.
std::uint32_t high_bits(const std::byte* p) {
  return static_cast<std::uint32_t>(u8(p, 0)) | static_cast<std::uint32_t>(u8(p, 1)) << 8 |
         static_cast<std::uint32_t>(u8(p, 2)) << 16 | static_cast<std::uint32_t>(u8(p, 3)) << 24;
}

// block_q5_0 (22 bytes): fp16 d, uint32 fifth bits, 16 bytes of nibbles; x = (q - 16) * d.
void block_q5_0(const std::byte* b, float* y) {
  const float d = f16(b);
  const std::uint32_t qh = high_bits(b + 2);
  const std::byte* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int lo = static_cast<int>((u8(qs, j) & 0x0F) | (((qh >> j) & 1u) << 4));
    const int hi = static_cast<int>((u8(qs, j) >> 4) | (((qh >> (j + 16)) & 1u) << 4));
    y[j] = static_cast<float>(lo - 16) * d;
    y[j + 16] = static_cast<float>(hi - 16) * d;
  }
}

// block_q5_1 (24 bytes): fp16 d, fp16 m, uint32 fifth bits, 16 bytes of nibbles;
// x = q * d + m.
void block_q5_1(const std::byte* b, float* y) {
  const float d = f16(b), m = f16(b + 2);
  const std::uint32_t qh = high_bits(b + 4);
  const std::byte* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const unsigned lo = (u8(qs, j) & 0x0Fu) | (((qh >> j) & 1u) << 4);
    const unsigned hi = (u8(qs, j) >> 4) | (((qh >> (j + 16)) & 1u) << 4);
    y[j] = static_cast<float>(lo) * d + m;
    y[j + 16] = static_cast<float>(hi) * d + m;
  }
}

// block_q8_0 (34 bytes): fp16 d, 32 int8 quants; x = q * d.
void block_q8_0(const std::byte* b, float* y) {
  const float d = f16(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<std::int8_t>(u8(b + 2, j))) * d;
}

// block_q2_K (84 bytes): 16 scale bytes (low nibble scale, high nibble min, one per 16
// values), 64 bytes of 2-bit quants, fp16 d, fp16 dmin. Each half of 128 values reads 32
// quant bytes four times, at shifts 0, 2, 4, 6; x = (d * scale) * q - (dmin * min).
void block_q2_k(const std::byte* b, float* y) {
  const std::byte* scales = b;
  const std::byte* qs = b + 16;
  const float d = f16(b + 80), dmin = f16(b + 82);
  int is = 0;
  for (int half = 0; half < 2; ++half) {
    const std::byte* q = qs + 32 * half;
    for (int shift = 0; shift < 8; shift += 2) {
      for (int part = 0; part < 2; ++part) {
        const std::uint8_t sc = u8(scales, is++);
        const float dl = d * static_cast<float>(sc & 0x0F);
        const float ml = dmin * static_cast<float>(sc >> 4);
        for (int l = 0; l < 16; ++l) {
          *y++ = dl * static_cast<float>((u8(q, 16 * part + l) >> shift) & 3) - ml;
        }
      }
    }
  }
}

// block_q3_K (110 bytes): 32 bytes of high-bit masks, 64 bytes of 2-bit quants, 12 bytes
// holding sixteen 6-bit scales, fp16 d. Scale k: low 4 bits from byte k (k < 8) or the high
// nibble of byte k - 8, top 2 bits from byte 8 + k % 4 at shift 2 * (k / 4); it is stored
// plus 32. A value's quant is its 2 low bits minus 4 unless its mask bit is set;
// x = (d * (scale - 32)) * q.
void block_q3_k(const std::byte* b, float* y) {
  const std::byte* hmask = b;
  const std::byte* qs = b + 32;
  const std::byte* packed = b + 96;
  const float d = f16(b + 108);
  std::array<int, 16> scale;
  for (int k = 0; k < 16; ++k) {
    const int low = k < 8 ? (u8(packed, k) & 0x0F) : (u8(packed, k - 8) >> 4);
    const int high = (u8(packed, 8 + k % 4) >> (2 * (k / 4))) & 3;
    scale[static_cast<std::size_t>(k)] = (low | (high << 4)) - 32;
  }
  int is = 0;
  for (int half = 0; half < 2; ++half) {
    const std::byte* q = qs + 32 * half;
    for (int j = 0; j < 4; ++j) {
      const int shift = 2 * j;
      const std::uint8_t mask = static_cast<std::uint8_t>(1u << (4 * half + j));
      for (int part = 0; part < 2; ++part) {
        const float dl = d * static_cast<float>(scale[static_cast<std::size_t>(is++)]);
        for (int l = 16 * part; l < 16 * part + 16; ++l) {
          const int q2 = (u8(q, l) >> shift) & 3;
          const int v = q2 - ((u8(hmask, l) & mask) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
    }
  }
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block from its 12 packed
// bytes: j < 4 in the low 6 bits of bytes j and j + 4; j >= 4 in the nibbles of byte j + 4
// with their top 2 bits in the high bits of bytes j - 4 and j.
void scale_min_k4(int j, const std::byte* q, std::uint8_t& sc, std::uint8_t& m) {
  if (j < 4) {
    sc = u8(q, j) & 63;
    m = u8(q, j + 4) & 63;
  } else {
    sc = static_cast<std::uint8_t>((u8(q, j + 4) & 0x0F) | ((u8(q, j - 4) >> 6) << 4));
    m = static_cast<std::uint8_t>((u8(q, j + 4) >> 4) | ((u8(q, j) >> 6) << 4));
  }
}

// block_q4_K (144 bytes): fp16 d, fp16 dmin, 12 scale bytes, 128 bytes of nibbles. Each
// 64 values read 32 bytes: low nibbles for sub-block 2i, high for 2i + 1;
// x = (d * scale) * q - (dmin * min).
void block_q4_k(const std::byte* b, float* y) {
  const float d = f16(b), dmin = f16(b + 2);
  const std::byte* scales = b + 4;
  const std::byte* qs = b + 16;
  for (int i = 0; i < 4; ++i) {
    for (int nibble = 0; nibble < 2; ++nibble) {
      std::uint8_t sc, m;
      scale_min_k4(2 * i + nibble, scales, sc, m);
      const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) {
        *y++ = dl * static_cast<float>((u8(qs, 32 * i + l) >> (4 * nibble)) & 0x0F) - ml;
      }
    }
  }
}

// block_q5_K (176 bytes): as Q4_K with 32 bytes of fifth bits after the scales: bit s of
// byte l is the fifth bit of value l of sub-block s.
void block_q5_k(const std::byte* b, float* y) {
  const float d = f16(b), dmin = f16(b + 2);
  const std::byte* scales = b + 4;
  const std::byte* qh = b + 16;
  const std::byte* qs = b + 48;
  for (int i = 0; i < 4; ++i) {
    for (int nibble = 0; nibble < 2; ++nibble) {
      const int s = 2 * i + nibble;
      std::uint8_t sc, m;
      scale_min_k4(s, scales, sc, m);
      const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) {
        const int q = ((u8(qs, 32 * i + l) >> (4 * nibble)) & 0x0F) | (((u8(qh, l) >> s) & 1) << 4);
        *y++ = dl * static_cast<float>(q) - ml;
      }
    }
  }
}

// block_q6_K (210 bytes): 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8
// scales (one per 16 values), fp16 d. In each half of 128 values, value 32 * j + l takes
// the low (j < 2) or high nibble of low byte l + 32 * (j % 2) and bits 2j..2j+1 of high
// byte l; x = (d * scale) * (q - 32).
void block_q6_k(const std::byte* b, float* y) {
  const float d = f16(b + 208);
  for (int half = 0; half < 2; ++half) {
    const std::byte* ql = b + 64 * half;
    const std::byte* qh = b + 128 + 32 * half;
    const std::byte* sc = b + 192 + 8 * half;
    for (int j = 0; j < 4; ++j) {
      const std::byte* low_bytes = ql + 32 * (j % 2);
      const int low_shift = 4 * (j / 2);
      for (int group = 0; group < 2; ++group) {
        const float dl = d * static_cast<float>(static_cast<std::int8_t>(u8(sc, group + 2 * j)));
        for (int l = 16 * group; l < 16 * group + 16; ++l) {
          const int low = (u8(low_bytes, l) >> low_shift) & 0x0F;
          const int high = (u8(qh, l) >> (2 * j)) & 3;
          y[32 * j + l] = dl * static_cast<float>((low | (high << 4)) - 32);
        }
      }
    }
    y += 128;
  }
}

template <void (*Block)(const std::byte*, float*), std::int64_t kElems, std::size_t kBytes>
void decode_blocks(const std::byte* blocks, std::int64_t n_blocks, float* out) {
#pragma omp parallel for schedule(static) if (n_blocks * kElems >= kParallelValues)
  for (std::int64_t i = 0; i < n_blocks; ++i) Block(blocks + i * static_cast<std::int64_t>(kBytes), out + i * kElems);
}

template <void (*Block)(const std::byte*, float*), std::int64_t kElems, std::size_t kBytes>
constexpr BlockCodec codec(std::string_view name) {
  return BlockCodec{name, kElems, kBytes, &decode_blocks<Block, kElems, kBytes>};
}

struct IdCodec {
  GgmlQuant id;
  BlockCodec codec;
};
// Block sizes from ggml-common.h (static_asserts there give the byte counts).
constexpr std::array<IdCodec, 10> kCodecs = {{
    {GgmlQuant::Q4_0, codec<block_q4_0, kQK, 18>("Q4_0")},
    {GgmlQuant::Q4_1, codec<block_q4_1, kQK, 20>("Q4_1")},
    {GgmlQuant::Q5_0, codec<block_q5_0, kQK, 22>("Q5_0")},
    {GgmlQuant::Q5_1, codec<block_q5_1, kQK, 24>("Q5_1")},
    {GgmlQuant::Q8_0, codec<block_q8_0, kQK, 34>("Q8_0")},
    {GgmlQuant::Q2_K, codec<block_q2_k, kQKK, 84>("Q2_K")},
    {GgmlQuant::Q3_K, codec<block_q3_k, kQKK, 110>("Q3_K")},
    {GgmlQuant::Q4_K, codec<block_q4_k, kQKK, 144>("Q4_K")},
    {GgmlQuant::Q5_K, codec<block_q5_k, kQKK, 176>("Q5_K")},
    {GgmlQuant::Q6_K, codec<block_q6_k, kQKK, 210>("Q6_K")},
}};

}  // namespace

const BlockCodec* ggml_quant_codec(std::uint32_t ggml_type) {
  for (const IdCodec& c : kCodecs) {
    if (static_cast<std::uint32_t>(c.id) == ggml_type) return &c.codec;
  }
  return nullptr;
}

std::string ggml_quant_names() {
  std::string out;
  for (const IdCodec& c : kCodecs) out += (out.empty() ? "" : ", ") + std::string(c.codec.name);
  return out;
}

}  // namespace fusecheck
