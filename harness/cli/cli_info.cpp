// `fusecheck info MODEL`: what fusecheck reads from a checkpoint: the ModelSpec, the
// stored tensors by storage type (F32 ... Q4_K: count, values, bytes), and the tensors no
// role was bound to. It reads headers only: no tensor is converted or dequantized.
#include <cstdio>
#include <map>
#include <string>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "harness/cli/command.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"

namespace fusecheck::cli {

namespace {

nlohmann::ordered_json describe(const Checkpoint& ck) {
  const ModelSpec& s = ck.spec();
  nlohmann::ordered_json spec = {
      {"architecture", s.architecture},
      {"source_format", s.source_format},
      {"n_layers", s.n_layers},
      {"hidden", s.hidden},
      {"n_heads", s.n_heads},
      {"n_kv_heads", s.n_kv_heads},
      {"head_dim", s.head_dim},
      {"intermediate", s.intermediate},
      {"vocab", s.vocab},
      {"rms_eps", s.rms_eps},
      {"rope_theta", s.rope_theta},
      {"rope_dim", s.rope_dim},
      {"rope_style", rope_style_name(s.rope_style)},
      {"rope_scaling", {{"type", s.rope_scaling.type},
                        {"factor", s.rope_scaling.factor},
                        {"low_freq_factor", s.rope_scaling.low_freq_factor},
                        {"high_freq_factor", s.rope_scaling.high_freq_factor},
                        {"original_max_position", s.rope_scaling.original_max_position}}},
      {"has_qk_norm", s.has_qk_norm},
      {"has_qkv_bias", s.has_qkv_bias},
      {"tied_embeddings", s.tied_embeddings},
      {"max_position", s.max_position},
      {"bos_id", s.bos_id},
      {"eos_id", s.eos_id},
      {"dtype", s.dtype},
  };
  // Storage types as stored (GGUF's Q4_K, Q6_K, ... by name), from the tensor headers alone.
  struct TypeTotals {
    std::uint64_t tensors = 0, elements = 0, bytes = 0;
  };
  std::map<std::string, TypeTotals> by_type;
  for (const TensorView& t : ck.tensors()) {
    TypeTotals& totals = by_type[std::string(t.storage_name())];
    totals.tensors += 1;
    totals.elements += static_cast<std::uint64_t>(t.numel());
    totals.bytes += t.bytes.size();
  }
  nlohmann::ordered_json dtypes = nlohmann::ordered_json::object();
  for (const auto& [name, totals] : by_type) {
    dtypes[name] = {{"tensors", totals.tensors}, {"elements", totals.elements}, {"bytes", totals.bytes}};
  }
  return {
      {"path", ck.path().string()},
      {"format", ck.format()},
      {"spec", spec},
      {"tensor_count", ck.tensors().size()},
      {"dtypes", dtypes},
      {"tokenizer_pieces", ck.vocab().size()},
      {"unused_tensors", ck.unused_tensors()},
  };
}

std::string scalar_text(const nlohmann::ordered_json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

void print_text(const nlohmann::ordered_json& d) {
  fmt::print("path         {}\nformat       {}\n", scalar_text(d["path"]), scalar_text(d["format"]));
  fmt::print("spec\n");
  for (const auto& [key, value] : d["spec"].items()) {
    if (value.is_object()) {
      std::string parts;
      for (const auto& [k, v] : value.items()) parts += fmt::format("{}{}={}", parts.empty() ? "" : " ", k, scalar_text(v));
      fmt::print("  {:<16} {}\n", key, parts);
    } else {
      fmt::print("  {:<16} {}\n", key, scalar_text(value));
    }
  }
  fmt::print("tensors      {}\n", d["tensor_count"].get<std::size_t>());
  for (const auto& [dtype, info] : d["dtypes"].items()) {
    fmt::print("  {:<6} {:>6} tensors {:>14} values {:>16} bytes\n", dtype, info["tensors"].get<std::uint64_t>(),
               info["elements"].get<std::uint64_t>(), info["bytes"].get<std::uint64_t>());
  }
  fmt::print("tokenizer    {} pieces\n", d["tokenizer_pieces"].get<std::size_t>());
  const auto& unused = d["unused_tensors"];
  fmt::print("unused       {}\n", unused.empty() ? std::string("none") : std::to_string(unused.size()));
  for (const auto& name : unused) fmt::print("  {}\n", name.get<std::string>());
}

const CommandRegistrar registrar({
    "info",
    "Print the ModelSpec and tensor summary of a checkpoint (HF directory or GGUF file)",
    [](CLI::App& sub) -> std::function<int()> {
      auto model = std::make_shared<std::string>();
      auto format = std::make_shared<std::string>("text");
      sub.add_option("MODEL", *model, "HF checkpoint directory or .gguf file")->required();
      sub.add_option("--format", *format, "Output format")->check(CLI::IsMember({"text", "json"}));
      return [model, format]() {
        const auto ck = Checkpoint::open(*model);
        const auto d = describe(*ck);
        if (*format == "json") {
          fmt::print("{}\n", d.dump(2));
        } else {
          print_text(d);
        }
        return 0;
      };
    },
});

}  // namespace

}  // namespace fusecheck::cli
