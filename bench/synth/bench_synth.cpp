// How fast `fusecheck synth` writes checkpoints: the full 28-layer qwen3-0.6b in bf16
// (1.19 GB) with 1 and all threads, to disk and to tmpfs, and the normal sampler alone. CPU timings, wall
// clock (the generator is multi-threaded and the writer overlaps disk with generation).
#include <filesystem>
#include <thread>

#include <benchmark/benchmark.h>

#include "harness/checkpoint/synth.h"

namespace fusecheck {
namespace {

void write_qwen3_0_6b(benchmark::State& state, const std::filesystem::path& dir) {
  SynthOptions options;
  options.threads = static_cast<unsigned>(state.range(0));
  std::uint64_t bytes = 0;
  for (auto _ : state) {
    const SynthResult r = write_synthetic_checkpoint("qwen3-0.6b", options, dir);
    bytes += r.total_bytes;
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  state.counters["threads"] = static_cast<double>(options.threads);
  std::filesystem::remove_all(dir);
}

// Into the build tree: what a user sees, disk included.
void BM_SynthQwen3_0_6B(benchmark::State& state) {
  write_qwen3_0_6b(state, std::filesystem::path(FUSECHECK_BENCH_SCRATCH) / "synth-qwen3-0.6b");
}

// Into tmpfs, when the machine has one: the generator's own speed, without the disk.
void BM_SynthQwen3_0_6B_Tmpfs(benchmark::State& state) {
  if (!std::filesystem::is_directory("/dev/shm")) {
    state.SkipWithError("no /dev/shm");
    return;
  }
  write_qwen3_0_6b(state, "/dev/shm/fusecheck-bench-synth");
}

void thread_counts(benchmark::internal::Benchmark* b) {
  b->Arg(1)->Arg(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  b->Iterations(3)->Unit(benchmark::kSecond)->UseRealTime();
}
BENCHMARK(BM_SynthQwen3_0_6B)->Apply(thread_counts);
BENCHMARK(BM_SynthQwen3_0_6B_Tmpfs)->Apply(thread_counts);

void BM_NormalSampler(benchmark::State& state) {
  std::uint32_t bits = 0x9e3779b9u;
  float sum = 0;
  for (auto _ : state) {
    for (int i = 0; i < 4096; ++i) {
      bits = bits * 1664525u + 1013904223u;  // cheap bit source: this times the sampler only
      sum += standard_normal_from_bits(bits);
    }
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations() * 4096);
}
BENCHMARK(BM_NormalSampler);

}  // namespace
}  // namespace fusecheck

BENCHMARK_MAIN();
