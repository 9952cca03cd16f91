// bench_check: how long the weights-only check takes on synthetic checkpoints of real
// shapes (qwen3-0.6b with 2 and 28 layers, llama-3-8b with a few layers), beside the time
// to read every byte of the same files. The check reads only norm tensors through mmap, so
// its time must not grow with the checkpoint's bytes; `--deep` reads every MLP down
// projection as well, so its time per GB read is what it reports. CPU timings, page cache
// warm.
//
// Checkpoints are written once (seed 0, bf16) under $FUSECHECK_BENCH_DATA, default
// ./bench-data/check; FUSECHECK_BENCH_LLAMA_LAYERS sets the llama-3-8b depth (default 8).
//
// process_startup/*: the `fusecheck` binary itself (FUSECHECK_BIN, default the one built
// beside this benchmark) started as a user starts it: `--version`, and `check` on each
// checkpoint, wall time from spawn to exit. (Not peak RSS: wait4's ru_maxrss of a spawned
// child keeps the spawning process's high-water mark across exec; measure RSS with
// `/usr/bin/time -v`, as docs/plugin-paths.md does.) This is what the plug-in split bought
// (docs/plugin-paths.md): no CUDA library loads.
#include <fcntl.h>
#include <spawn.h>
#include <unistd.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <fmt/core.h>

#include "harness/check/check.h"
#include "harness/checkpoint/synth.h"
#include "harness/core/checkpoint.h"

namespace {

namespace fs = std::filesystem;
using fusecheck::check::Scorer;

struct Dataset {
  std::string label;  // benchmark argument name
  std::string profile;
  int layers;
  fs::path dir;
  std::vector<fs::path> files;
  std::uint64_t bytes = 0;
};

fs::path data_root() {
  const char* env = std::getenv("FUSECHECK_BENCH_DATA");
  return env && *env ? fs::path(env) : fs::path("bench-data") / "check";
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

// Writes the checkpoint unless a complete one (its synth.json last) is already there.
Dataset prepare(const std::string& profile, int layers) {
  Dataset d{fmt::format("{}-{}L", profile, layers), profile, layers,
            data_root() / fmt::format("{}-{}L", profile, layers), {}, 0};
  if (!fs::exists(d.dir / "synth.json")) {
    std::fprintf(stderr, "writing %s ...\n", d.dir.string().c_str());
    fusecheck::SynthOptions o;
    o.layers = layers;
    fusecheck::write_synthetic_checkpoint(profile, o, d.dir);
  }
  for (const auto& e : fs::directory_iterator(d.dir)) {
    if (e.is_regular_file()) {
      d.files.push_back(e.path());
      d.bytes += e.file_size();
    }
  }
  return d;
}

void check_once(benchmark::State& state, const Dataset& d, Scorer scorer, bool deep) {
  std::uint64_t norm_bytes = 0, deep_bytes = 0;
  for (auto _ : state) {
    const auto checkpoint = fusecheck::Checkpoint::open(d.dir);
    const auto result =
        fusecheck::check::check_model(*checkpoint, fusecheck::check::default_thresholds(), scorer, deep);
    benchmark::DoNotOptimize(result.score);
    norm_bytes = result.model.norm_bytes_read;
    deep_bytes = result.deep ? result.deep->bytes_read : 0;
  }
  state.counters["checkpoint_MB"] = static_cast<double>(d.bytes) / 1e6;
  state.counters["norm_KB_read"] = static_cast<double>(norm_bytes) / 1e3;
  if (deep) {
    state.counters["deep_MB_read"] = static_cast<double>(deep_bytes) / 1e6;
    // Seconds per GB of what --deep read: the iteration rate inverted, scaled by the bytes.
    state.counters["s_per_GB"] = benchmark::Counter(static_cast<double>(deep_bytes) / 1e9,
                                                    benchmark::Counter::kIsIterationInvariantRate |
                                                        benchmark::Counter::kInvert);
  }
  state.SetLabel(deep ? "CPU, open + check --deep, page cache warm" : "CPU, open + check, page cache warm");
}

// Reads every byte with read(2)-sized chunks and folds them, so nothing is skipped.
void read_all(benchmark::State& state, const Dataset& d) {
  std::vector<char> buf(std::size_t{8} << 20);
  for (auto _ : state) {
    std::uint64_t fold = 0;
    for (const auto& f : d.files) {
      std::ifstream in(f, std::ios::binary);
      while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
        const auto n = static_cast<std::size_t>(in.gcount());
        for (std::size_t i = 0; i < n; i += 4096) fold += static_cast<unsigned char>(buf[i]);
        if (in.eof()) break;
      }
    }
    benchmark::DoNotOptimize(fold);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * d.bytes));
  state.counters["checkpoint_MB"] = static_cast<double>(d.bytes) / 1e6;
  state.SetLabel("CPU, every byte via read(), page cache warm");
}

// The fusecheck binary to start: FUSECHECK_BIN, else the build's (FUSECHECK_BIN_DEFAULT).
std::string fusecheck_bin() {
  const char* env = std::getenv("FUSECHECK_BIN");
  return env && *env ? std::string(env) : std::string(FUSECHECK_BIN_DEFAULT);
}

// Spawns `bin args...` with stdout and stderr to /dev/null, waits; wall seconds. A child that fails to start or exits with a status above 2
// (check's exit codes 0-2 are verdicts) ends the benchmark with an error.
void startup(benchmark::State& state, std::vector<std::string> args) {
  const std::string bin = fusecheck_bin();
  args.insert(args.begin(), bin);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t io;
  posix_spawn_file_actions_init(&io);
  posix_spawn_file_actions_addopen(&io, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&io, 2, "/dev/null", O_WRONLY, 0);
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    pid_t pid = 0;
    if (posix_spawn(&pid, bin.c_str(), &io, nullptr, argv.data(), environ) != 0) {
      state.SkipWithError(("cannot start " + bin).c_str());
      break;
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) > 2) {
      state.SkipWithError((bin + " " + args.back() + ": failed").c_str());
      break;
    }
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  posix_spawn_file_actions_destroy(&io);
  state.SetLabel("process spawn to exit, wall");
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  std::vector<Dataset> sets;
  try {
    sets.push_back(prepare("qwen3-0.6b", 2));
    sets.push_back(prepare("qwen3-0.6b", 28));
    sets.push_back(prepare("llama-3-8b", env_int("FUSECHECK_BENCH_LLAMA_LAYERS", 8)));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_check: cannot prepare checkpoints: %s\n", e.what());
    return 1;
  }
  for (const auto& d : sets) {
    benchmark::RegisterBenchmark(("check_fusecheck/" + d.label).c_str(),
                                 [&d](benchmark::State& s) { check_once(s, d, Scorer::Fusecheck, false); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("check_fusecheck_deep/" + d.label).c_str(),
                                 [&d](benchmark::State& s) { check_once(s, d, Scorer::Fusecheck, true); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("check_braidinfer/" + d.label).c_str(),
                                 [&d](benchmark::State& s) { check_once(s, d, Scorer::Braidinfer, false); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("read_every_byte/" + d.label).c_str(),
                                 [&d](benchmark::State& s) { read_all(s, d); })
        ->Unit(benchmark::kMillisecond)
        ->MinTime(2.0)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("process_startup/version", [](benchmark::State& s) { startup(s, {"--version"}); })
      ->Unit(benchmark::kMillisecond)
      ->UseManualTime();
  for (const auto& d : sets) {
    benchmark::RegisterBenchmark(("process_startup/check/" + d.label).c_str(),
                                 [&d](benchmark::State& s) { startup(s, {"check", d.dir.string()}); })
        ->Unit(benchmark::kMillisecond)
        ->UseManualTime();
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
