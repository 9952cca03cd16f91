// CPU benchmarks of GGUF reading (timings are CPU wall time, labelled as such):
//  - BM_Dequantize/<type>/<threads>: values of a 16M-value tensor decoded to FP32, in GB/s
//    of FP32 output, on one thread (per-core throughput) and on every OpenMP thread. Each
//    type is first validated bit for bit against the committed golden vectors
//    (tests/checkpoint/data/gguf_golden.json, made with the gguf Python package).
//    The counter est_1B_load_s is the time to dequantize a Llama-3.2-1B-shaped model
//    (1.236e9 values, tied embeddings) at the measured rate: loading it into the
//    reference converts every tensor once, so this is its floor on that many threads.
//  - BM_GgufOpen/<MiB>: Checkpoint::open of a GGUF whose one big Q8_0 tensor is a sparse
//    hole of the given size: open reads headers and norm weights only, so the time must
//    stay flat from 16 MiB to 4 GiB.
#include <bit>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "harness/checkpoint/gguf_quants.h"
#include "harness/core/checkpoint.h"

namespace fusecheck {
namespace {

namespace fs = std::filesystem;

constexpr double kLlama1BValues = 1.236e9;  // Llama-3.2-1B: 16 layers of 60.8M + 262.7M embedding

struct Type {
  const char* name;
  std::uint32_t id;
};
constexpr Type kTypes[] = {{"Q4_0", 2}, {"Q4_1", 3}, {"Q5_0", 6}, {"Q5_1", 7}, {"Q8_0", 8},
                           {"Q2_K", 10}, {"Q3_K", 11}, {"Q4_K", 12}, {"Q5_K", 13}, {"Q6_K", 14}};

std::vector<std::byte> from_hex(const std::string& hex) {
  std::vector<std::byte> out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::byte>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

// Decodes the golden blocks of `name` and compares every bit; throws on any difference.
void validate(const Type& type, const BlockCodec& codec) {
  std::ifstream in(fs::path(FUSECHECK_SOURCE_DIR) / "tests" / "checkpoint" / "data" / "gguf_golden.json");
  const nlohmann::json golden = nlohmann::json::parse(in);
  for (const auto& c : golden["cases"]) {
    if (c["type"] != type.name) continue;
    const std::vector<std::byte> data = from_hex(c["data_hex"]);
    const std::vector<std::byte> expected = from_hex(c["values_hex"]);
    std::vector<float> out(expected.size() / 4);
    codec.decode(data.data(), static_cast<std::int64_t>(data.size() / codec.block_bytes), out.data());
    if (std::memcmp(out.data(), expected.data(), expected.size()) != 0) {
      throw std::runtime_error(std::string("validation failed before timing: ") + type.name);
    }
    return;
  }
  throw std::runtime_error(std::string("no golden vectors for ") + type.name);
}

// Seeded random blocks with small finite scales (seed 2026, fixed).
std::vector<std::byte> blocks(const BlockCodec& codec, std::int64_t n_blocks) {
  std::mt19937_64 rng(2026);
  std::vector<std::byte> out(static_cast<std::size_t>(n_blocks) * codec.block_bytes);
  for (std::byte& b : out) b = static_cast<std::byte>(rng() & 0x3F);  // keeps every fp16 scale finite
  return out;
}

void BM_Dequantize(benchmark::State& state) {
  const Type& type = kTypes[state.range(0)];
  const int threads = static_cast<int>(state.range(1)) == 0 ? omp_get_max_threads() : static_cast<int>(state.range(1));
  const BlockCodec* codec = ggml_quant_codec(type.id);
  validate(type, *codec);
  const std::int64_t values = std::int64_t{1} << 24;
  const std::int64_t n_blocks = values / codec->block_elems;
  const std::vector<std::byte> data = blocks(*codec, n_blocks);
  std::vector<float> out(static_cast<std::size_t>(values));
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  for (auto _ : state) {
    codec->decode(data.data(), n_blocks, out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  omp_set_num_threads(saved);
  state.SetLabel(std::string(type.name) + ", " + std::to_string(threads) + " thread(s), cpu wall time");
  state.SetBytesProcessed(state.iterations() * values * 4);
  state.counters["out_GBps"] = benchmark::Counter(static_cast<double>(values) * 4 * state.iterations() / 1e9,
                                                  benchmark::Counter::kIsRate);
  state.counters["in_GBps"] = benchmark::Counter(static_cast<double>(data.size()) * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
  // Seconds per 1B model at this rate: (1B models decoded per second)^-1.
  state.counters["est_1B_load_s"] = benchmark::Counter(static_cast<double>(values) * state.iterations() / kLlama1BValues,
                                                       benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["threads"] = threads;
}

void dequantize_args(benchmark::internal::Benchmark* b) {
  for (int t = 0; t < static_cast<int>(std::size(kTypes)); ++t) {
    b->Args({t, 1});
    b->Args({t, 0});  // 0: every OpenMP thread
  }
}
BENCHMARK(BM_Dequantize)->Apply(dequantize_args)->UseRealTime()->Unit(benchmark::kMillisecond);

// A GGUF image: a llama model of one layer (hidden 64, F32) and one Q8_0 tensor of `rows`
// x 4096 values stored last as a sparse hole.
fs::path sparse_model(std::int64_t mib) {
  const fs::path file = fs::temp_directory_path() / ("fusecheck-bench-open-" + std::to_string(mib) + ".gguf");
  std::vector<std::byte> out;
  const auto put = [&](const void* p, std::size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    out.insert(out.end(), b, b + n);
  };
  const auto u32 = [&](std::uint32_t v) { put(&v, 4); };
  const auto u64 = [&](std::uint64_t v) { put(&v, 8); };
  const auto str = [&](const std::string& s) { u64(s.size()); put(s.data(), s.size()); };
  const auto kv_u32 = [&](const std::string& k, std::uint32_t v) { str(k); u32(4); u32(v); };
  const std::uint64_t h = 64, inter = 128, vocab = 32;
  const std::int64_t rows = mib * (1 << 20) / (4096 / 32 * 34) + 1;
  struct T { std::string name; std::vector<std::uint64_t> dims; std::uint32_t type; std::uint64_t bytes; };
  const std::vector<T> tensors = {
      {"token_embd.weight", {h, vocab}, 0, h * vocab * 4},     {"output_norm.weight", {h}, 0, h * 4},
      {"output.weight", {h, vocab}, 0, h * vocab * 4},         {"blk.0.attn_norm.weight", {h}, 0, h * 4},
      {"blk.0.attn_q.weight", {h, h}, 0, h * h * 4},           {"blk.0.attn_k.weight", {h, h}, 0, h * h * 4},
      {"blk.0.attn_v.weight", {h, h}, 0, h * h * 4},           {"blk.0.attn_output.weight", {h, h}, 0, h * h * 4},
      {"blk.0.ffn_norm.weight", {h}, 0, h * 4},                {"blk.0.ffn_gate.weight", {h, inter}, 0, h * inter * 4},
      {"blk.0.ffn_up.weight", {h, inter}, 0, h * inter * 4},   {"blk.0.ffn_down.weight", {inter, h}, 0, h * inter * 4},
      {"blk.0.extra.weight", {4096, static_cast<std::uint64_t>(rows)}, 8, static_cast<std::uint64_t>(rows) * 128 * 34},
  };
  put("GGUF", 4);
  u32(3);
  u64(tensors.size());
  u64(8);
  str("general.architecture"); u32(8); str("llama");
  kv_u32("llama.block_count", 1);
  kv_u32("llama.embedding_length", h);
  kv_u32("llama.feed_forward_length", inter);
  kv_u32("llama.attention.head_count", 4);
  kv_u32("llama.context_length", 256);
  str("llama.attention.layer_norm_rms_epsilon"); u32(6); { const float eps = 1e-5f; put(&eps, 4); }
  kv_u32("general.alignment", 32);
  std::uint64_t offset = 0;
  for (const T& t : tensors) {
    str(t.name);
    u32(static_cast<std::uint32_t>(t.dims.size()));
    for (const auto d : t.dims) u64(d);
    u32(t.type);
    u64(offset);
    offset += (t.bytes + 31) / 32 * 32;
  }
  out.resize((out.size() + 31) / 32 * 32);
  const std::size_t data_start = out.size();
  // Every dense tensor filled with 0.02 (norms read as finite); the big one left a hole.
  for (std::size_t i = 0; i + 1 < tensors.size(); ++i) {
    const float v = 0.02f;
    for (std::uint64_t k = 0; k < tensors[i].bytes / 4; ++k) put(&v, 4);
    out.resize((out.size() + 31) / 32 * 32);
  }
  std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
  fs::resize_file(file, data_start + offset);
  return file;
}

void BM_GgufOpen(benchmark::State& state) {
  const fs::path file = sparse_model(state.range(0));
  if (Checkpoint::open(file)->tensors().size() != 13) throw std::runtime_error("validation failed before timing: open");
  for (auto _ : state) {
    auto ck = Checkpoint::open(file);
    benchmark::DoNotOptimize(ck.get());
  }
  state.SetLabel("file " + std::to_string(fs::file_size(file) >> 20) + " MiB, cpu wall time");
  fs::remove(file);
}
BENCHMARK(BM_GgufOpen)->Arg(16)->Arg(256)->Arg(4096)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace fusecheck

BENCHMARK_MAIN();
