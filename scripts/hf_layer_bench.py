#!/usr/bin/env python3
"""Times one Hugging Face transformers decoder layer (PyTorch eager, bf16, CUDA) on the
shapes of bench/fused (llama-3-8b, qwen3-8b, qwen3-0.6b; decode batch 1/8/64 over a KV
cache of 1024, prefill 512 and 2048), so the fused layer can be compared with it.

No network: each layer is built from a config with seeded random weights. Timing: CUDA
events around one layer call, after warm-up, median of repetitions; decode reuses a
DynamicCache pre-filled to 1023 positions and crops it back after every call.
Prints one line per case and, with --json FILE, writes the numbers.
"""
import argparse
import json
import statistics

import torch

MODELS = {
    "llama-3-8b": dict(arch="llama", hidden_size=4096, num_attention_heads=32,
                       num_key_value_heads=8, intermediate_size=14336, rms_norm_eps=1e-5,
                       rope_theta=500000.0,
                       rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                         high_freq_factor=4.0,
                                         original_max_position_embeddings=8192)),
    "qwen3-8b": dict(arch="qwen3", hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=12288, rms_norm_eps=1e-6, rope_theta=1e6, head_dim=128),
    "qwen3-0.6b": dict(arch="qwen3", hidden_size=1024, num_attention_heads=16,
                       num_key_value_heads=8, intermediate_size=3072, rms_norm_eps=1e-6,
                       rope_theta=1e6, head_dim=128),
}
CASES = [("decode_b1_kv1024", 1, 1, 1023), ("decode_b8_kv1024", 8, 1, 1023),
         ("decode_b64_kv1024", 64, 1, 1023), ("prefill_512", 1, 512, 0),
         ("prefill_2048", 1, 2048, 0)]


def build(name, attn):
    cfg = dict(MODELS[name])
    arch = cfg.pop("arch")
    if arch == "llama":
        from transformers import LlamaConfig as Config
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer as Layer
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding as Rope
    else:
        from transformers import Qwen3Config as Config
        from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer as Layer
        from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding as Rope
    config = Config(num_hidden_layers=1, vocab_size=1024, max_position_embeddings=8192,
                    attn_implementation=attn, **cfg)
    torch.manual_seed(0)
    layer = Layer(config, layer_idx=0)
    with torch.no_grad():
        for p in layer.parameters():  # never zeros: N(0, 0.02) matrices, norms near 1
            if p.dim() > 1:
                p.normal_(0, 0.02)
            else:
                p.uniform_(0.8, 1.2)
    return config, layer.to("cuda", torch.bfloat16).eval(), Rope(config=config).to("cuda")


def time_case(config, layer, rope, batch, n, start, reps):
    from transformers import DynamicCache
    h = config.hidden_size
    cache = DynamicCache(config=config)
    x = torch.randn(batch, n, h, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        if start:
            pre = torch.randn(batch, start, h, device="cuda", dtype=torch.bfloat16)
            pos = torch.arange(start, device="cuda").unsqueeze(0).expand(batch, -1)
            layer(pre, position_embeddings=rope(pre, pos), past_key_values=cache,
                  cache_position=torch.arange(start, device="cuda"), position_ids=pos,
                  use_cache=True)
        pos = torch.arange(start, start + n, device="cuda").unsqueeze(0).expand(batch, -1)
        emb = rope(x, pos)
        cpos = torch.arange(start, start + n, device="cuda")
        mask = None
        if n > 1:  # causal mask for eager attention (SDPA uses is_causal itself)
            mask = torch.full((n, start + n), float("-inf"), device="cuda", dtype=torch.bfloat16)
            mask = torch.triu(mask, diagonal=start + 1)[None, None].expand(batch, 1, -1, -1)

        def call():
            layer(x, attention_mask=mask, position_embeddings=emb, past_key_values=cache if start else None,
                  cache_position=cpos, position_ids=pos, use_cache=bool(start))
            if start:
                cache.crop(start)

        for _ in range(3):
            call()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            call()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attn", default="eager", help="attn_implementation (eager or sdpa)")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name()}, attention {args.attn}")
    out = []
    for name in MODELS:
        config, layer, rope = build(name, args.attn)
        for case, batch, n, start in CASES:
            ms = time_case(config, layer, rope, batch, n, start, args.reps)
            print(f"hf/{name}/{case}/layer  {ms * 1000:10.1f} us", flush=True)
            out.append(dict(model=name, case=case, attn=args.attn, median_us=ms * 1000))
        del layer
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
