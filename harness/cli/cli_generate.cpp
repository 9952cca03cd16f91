// `fusecheck generate MODEL`: greedy decoding on a chosen path (ref32-cpu by default),
// printing the token ids and, when the checkpoint has a tokenizer (GGUF vocabulary or
// tokenizer.json), the decoded text. `--prompt TEXT` encodes the prompt with that tokenizer.
// `--dump-hidden FILE.json` also writes one prefill of the prompt, layer by layer
// (embedding, every layer's output, final norm, logits), for scripts/hf_peer_check.py.
#include <charconv>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "harness/cli/command.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"
#include "harness/core/greedy.h"
#include "harness/core/path_registry.h"
#include "harness/paths/plugin_loader.h"
#include "harness/tokenizer/tokenizer.h"
#include "harness/run/run_command.h"
#include "harness/run/run_limits.h"
#include "reference/recipe.h"

namespace fusecheck::cli {

namespace {

struct GenerateArgs {
  std::string model;
  std::string path = "ref32-cpu";
  std::string recipe;
  std::vector<std::string> plugins;  // path plug-ins loaded first (e.g. flashinfer-cuda)
  int steps = 32;
  std::string prompt_ids;
  std::optional<std::string> prompt;
  std::string dump_hidden;
  bool headroom = false;
};

std::vector<std::int32_t> parse_ids(const std::string& text, int vocab) {
  std::vector<std::int32_t> ids;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    std::int32_t id = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size()) {
      throw InputError("--prompt-ids", "'" + item + "' is not a token id (expected e.g. 1,2,3)");
    }
    if (id < 0 || id >= vocab) {
      throw InputError("--prompt-ids", fmt::format("token id {} is outside the vocabulary (0..{})", id, vocab - 1));
    }
    ids.push_back(id);
    pos = comma + 1;
  }
  return ids;
}

void write_matrix(std::FILE* f, const TapMatrix& m) {
  std::fputc('[', f);
  for (Eigen::Index r = 0; r < m.rows(); ++r) {
    std::fputs(r ? ",[" : "[", f);
    for (Eigen::Index c = 0; c < m.cols(); ++c) {
      // 17 significant digits round-trip a double; JSON has no NaN/Inf, Python reads these.
      fmt::print(f, "{}{:.17g}", c ? "," : "", m(r, c));
    }
    std::fputc(']', f);
  }
  std::fputc(']', f);
}

// One prefill of the whole prompt: every row of every layer output, then the head.
void dump_hidden(Path& path, const Checkpoint& ckpt, const GenerateArgs& a,
                 const std::vector<std::int32_t>& prompt) {
  std::FILE* f = std::fopen(a.dump_hidden.c_str(), "w");
  if (!f) throw InputError(a.dump_hidden, "cannot open for writing");
  const int n_layers = ckpt.spec().n_layers;
  path.reset(1, static_cast<int>(prompt.size()));
  TapMatrix h = path.embed(prompt);
  fmt::print(f, "{{\"model\":\"{}\",\"path\":\"{}\",\"recipe\":\"{}\",\"prompt_ids\":[", ckpt.path().string(),
             a.path, a.recipe);
  for (std::size_t i = 0; i < prompt.size(); ++i) fmt::print(f, "{}{}", i ? "," : "", prompt[i]);
  std::fputs("],\n\"hidden\":[", f);
  write_matrix(f, h);
  for (int l = 0; l < n_layers; ++l) {
    h = path.layer(l, h).at(Tap::resid_out);
    std::fputs(",\n", f);
    write_matrix(f, h);
  }
  const TapSet head = path.head(h);
  std::fputs("],\n\"final_norm\":", f);
  write_matrix(f, head.at(Tap::final_norm));
  std::fputs(",\n\"logits\":", f);
  write_matrix(f, head.at(Tap::logits));
  std::fputs("}\n", f);
  if (std::fclose(f) != 0) throw InputError(a.dump_hidden, "write failed");
}

// A path with the headroom capability (emulated-cpu): per layer (then the head), the point
// closest to overflow and the points where values overflowed or saturated, over every
// forward of the run.
void print_headroom(const Path& path, const std::string& recipe, int n_layers) {
  fmt::print("headroom ({}; ratio = max |x| before rounding / largest finite):\n", recipe);
  for (int l = 0; l <= n_layers; ++l) {
    const auto points = path.headroom(l);
    std::string worst;
    double worst_ratio = -1;
    std::string overflows;
    for (const auto& [name, h] : points) {
      if (name == "weights") continue;
      if (h.ratio() > worst_ratio) {
        worst_ratio = h.ratio();
        worst = name;
      }
      if (h.n_overflow || h.n_saturated) {
        overflows += fmt::format(" {}{}: {} inf, {} saturated;", name, h.rounded ? "" : " (kept FP32)",
                                 h.n_overflow, h.n_saturated);
      }
    }
    fmt::print("  {:<6} worst {} {:.3g}{}\n", l == n_layers ? "head" : fmt::format("L{}", l), worst,
               worst_ratio, overflows.empty() ? "" : ";" + overflows);
  }
}

int run_generate(const GenerateArgs& a) {
  const auto ckpt = Checkpoint::open(a.model);
  const ModelSpec& spec = ckpt->spec();
  register_builtin_paths();
  for (const auto& file : a.plugins) load_plugin(file);
  PathOptions opts;
  opts.recipe = a.recipe;
  if (!a.recipe.empty() && a.path != "emulated-cpu") {
    throw InputError("--recipe", "only the emulated-cpu path takes a recipe");
  }
  // A CUDA path without a usable device is the user's choice of path, not a fusecheck bug.
  if (const PathInfo* info = find_path(a.path); info && info->device == "cuda") {
    if (const std::string why = run::cuda_unusable_reason(); !why.empty()) {
      throw InputError("--path " + a.path, "needs a CUDA device: " + why + " (use a cpu path: ref32-cpu, emulated-cpu)");
    }
  }
  auto path = make_path(a.path, *ckpt, opts);
  if (a.headroom && !path->capabilities().headroom) {
    throw InputError("--headroom", a.path + " does not record headroom (emulated-cpu does)");
  }
  if (a.steps < 1) throw InputError("--steps", "must be at least 1");

  // The tokenizer is needed for --prompt; otherwise it only turns ids into text, and a
  // vocabulary that does not load costs the text, not the run.
  std::unique_ptr<tok::Tokenizer> tokenizer;
  std::string no_text_reason;
  try {
    tokenizer = tok::load_tokenizer(a.model);
  } catch (const InputError& e) {
    if (a.prompt) throw;
    no_text_reason = e.what();
  }
  std::vector<std::int32_t> prompt;
  if (a.prompt) {
    if (!a.prompt_ids.empty()) throw InputError("--prompt", "give --prompt or --prompt-ids, not both");
    if (!tokenizer) {
      throw InputError(a.model, "has no tokenizer (tokenizer.json or a GGUF vocabulary): give --prompt-ids");
    }
    prompt = tok::encode_prompt(*tokenizer, *a.prompt, spec.vocab);
  } else if (!a.prompt_ids.empty()) {
    prompt = parse_ids(a.prompt_ids, spec.vocab);
  } else if (spec.bos_id >= 0 && spec.bos_id < spec.vocab) {
    prompt = {spec.bos_id};
  } else {
    throw InputError(a.model, "the checkpoint names no BOS token: give --prompt-ids");
  }
  // The KV cache holds the prompt and every generated token (FP64 at most).
  const double tokens = static_cast<double>(prompt.size()) + a.steps;
  if (spec.max_position > 0 && tokens > spec.max_position) {
    throw InputError("--steps", fmt::format("{} prompt tokens + {} steps are past the model's context length {}",
                                            prompt.size(), a.steps, spec.max_position));
  }
  const double kv_bytes = tokens * spec.n_layers * spec.kv_width() * 2 * 8;
  if (const auto limits = run::host_memory_limits(); limits.host_bytes > 0 && kv_bytes > limits.host_bytes) {
    throw InputError("--steps", fmt::format("{} tokens need a KV cache of about {}; {} is available ({})",
                                            tokens, run::format_bytes(static_cast<std::uint64_t>(std::min(kv_bytes, 1.8e19))),
                                            run::format_bytes(limits.host_bytes), limits.host_source));
  }
  if (!a.dump_hidden.empty()) dump_hidden(*path, *ckpt, a, prompt);

  const GreedyResult r = greedy_decode(*path, spec.n_layers, prompt, a.steps);
  std::string prompt_text, ids_text;
  for (auto id : prompt) prompt_text += (prompt_text.empty() ? "" : " ") + std::to_string(id);
  for (auto id : r.ids) ids_text += (ids_text.empty() ? "" : " ") + std::to_string(id);
  double min_margin = r.steps.front().margin;
  for (const auto& s : r.steps) min_margin = std::min(min_margin, s.margin);
  fmt::print("model: {} ({}, {} layers)\npath: {}{} on {}\n", a.model, spec.architecture,
             spec.n_layers, path->name(), a.recipe.empty() ? "" : " recipe " + a.recipe, path->device());
  if (a.prompt) fmt::print("prompt: \"{}\"\n", *a.prompt);
  fmt::print("prompt ids: {}\nids: {}\n", prompt_text, ids_text);
  fmt::print("smallest top-1 margin: {:.6g}\n", min_margin);
  std::vector<int> decoded(r.ids.begin(), r.ids.end());
  if (!decoded.empty() && decoded.back() == kNoToken) {
    decoded.pop_back();
    fmt::print("stopped: every logit was NaN at step {}\n", decoded.size());
  }
  if (tokenizer) {
    fmt::print("text: {}\n", tokenizer->decode_continuation(prompt, std::vector<std::int32_t>(decoded.begin(), decoded.end())));
  } else if (!no_text_reason.empty()) {
    fmt::print("text: (none: {})\n", no_text_reason);
  }
  if (a.headroom) print_headroom(*path, a.recipe.empty() ? kDefaultRecipe : a.recipe, spec.n_layers);
  return 0;
}

const CommandRegistrar kGenerate{{
    "generate",
    "Greedy decoding on a chosen path (ids, and text when the checkpoint has a vocabulary)",
    [](CLI::App& sub) {
      auto a = std::make_shared<GenerateArgs>();
      sub.add_option("MODEL", a->model, "HF checkpoint directory or .gguf file")->required();
      sub.add_option("--path", a->path, "ref32-cpu (default), ref64-cpu, emulated-cpu, or a CUDA path");
      sub.add_option("--recipe", a->recipe, "emulated-cpu recipe: hf-bf16 (default), hf-fp16, fused-v1, fused-v1-fp16, flashinfer");
      sub.add_option("--plugin", a->plugins, "path plug-in FILE.so to load (repeatable; docs/plugin-paths.md)");
      sub.add_option("--steps", a->steps, "tokens to generate (default 32)");
      sub.add_option("--prompt", a->prompt, "prompt text, encoded with the model's tokenizer (BOS as the file says)");
      sub.add_option("--prompt-ids", a->prompt_ids, "comma-separated prompt token ids (default: BOS)");
      sub.add_option("--dump-hidden", a->dump_hidden,
                     "write the prompt's prefill, layer by layer, to this JSON file");
      sub.add_flag("--headroom", a->headroom,
                   "emulated-cpu: print each layer's overflow headroom (see docs/recipes.md)");
      return [a] { return run_generate(*a); };
    },
}};

}  // namespace

}  // namespace fusecheck::cli
