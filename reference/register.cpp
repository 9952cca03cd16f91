// Registers ref64-cpu, ref32-cpu, ref32-cpu-bf16w (ref32 on bf16-rounded weights) and
// emulated-cpu (PathOptions.recipe picks the recipe, hf-bf16 by default) in the path
// registry.
#include "reference/register.h"

#include "harness/core/path_registry.h"
#include "reference/decoder_path.h"

namespace fusecheck {

void register_cpu_paths() {
  register_path({.name = "ref64-cpu", .device = "cpu", .description = "FP64 reference on Eigen (the truth)",
                 .factory = [](const Checkpoint& ckpt, const PathOptions&) -> std::unique_ptr<Path> {
                   return std::make_unique<ref::Ref64Path>(ckpt, "ref64-cpu");
                 }});
  register_path({.name = "ref32-cpu", .device = "cpu", .description = "FP32 reference on Eigen",
                 .factory = [](const Checkpoint& ckpt, const PathOptions&) -> std::unique_ptr<Path> {
                   return std::make_unique<ref::Ref32Path>(ckpt, "ref32-cpu");
                 }});
  register_path({.name = "ref32-cpu-bf16w", .device = "cpu",
                 .description = "FP32 reference on weights rounded once to bf16, as the GPU paths store "
                                "them (the share of their divergence due to weight rounding alone)",
                 .factory = [](const Checkpoint& ckpt, const PathOptions&) -> std::unique_ptr<Path> {
                   return std::make_unique<ref::Ref32Path>(ckpt, "ref32-cpu-bf16w", nullptr,
                                                           ref::WeightFormat::bf16);
                 }});
  register_path({.name = "emulated-cpu", .device = "cpu",
                 .description = "FP32 on Eigen rounded to bf16/fp16 at a recipe's points (docs/recipes.md)",
                 .factory = [](const Checkpoint& ckpt, const PathOptions& opts) -> std::unique_ptr<Path> {
                   const RecipeMix mix = parse_recipe_mix(opts.recipe.empty() ? kDefaultRecipe : opts.recipe);
                   if (mix.mixed()) {
                     return std::make_unique<ref::EmulatedPath>(ckpt, "emulated-cpu",
                                                                recipes_per_slot(mix, ckpt.spec().n_layers));
                   }
                   return std::make_unique<ref::EmulatedPath>(ckpt, "emulated-cpu", &find_recipe(mix.base));
                 },
                 .recipe = "per use (default hf-bf16); per layer: BASE+RECIPE@FIRST-LAST"});
}

}  // namespace fusecheck
