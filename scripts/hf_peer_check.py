#!/usr/bin/env python3
"""Peer check of fusecheck's CPU reference against Hugging Face transformers.

Runs where torch and transformers are installed (no network needed):

  scripts/hf_peer_check.py --fusecheck build/host/harness/cli/fusecheck [--work DIR]

Checkpoints, both ways round:
  (a) fusecheck synth profiles (qwen3-tiny, qwen2-tiny, llama-tiny) loaded into HF with
      from_pretrained;
  (b) HF's own randomly initialised Qwen3 and Llama models (the Llama with llama3 RoPE
      scaling) written with save_pretrained and read by fusecheck.
For each, one prefill of a seeded prompt is compared layer by layer (embedding, every
decoder layer's output, final norm, logits) by relative L2 = ||a - b|| / ||b||:
  HF float64 vs ref64-cpu   (expected ~1e-12 once HF is made to stay in float64, below)
  HF float32 vs ref32-cpu   (expected ~1e-6)
  HF bf16    vs emulated-cpu --recipe hf-bf16 (reported; see docs/recipes.md for why it
                                              is not bit exact)
fusecheck's values come from `fusecheck generate --dump-hidden FILE.json`.

HF computes three things in float32 even for a float64 model: RMSNorm upcasts with
`.to(torch.float32)`, the rotary embedding forces float32 (inv_freq, angles, cos/sin),
and eager attention's softmax is called with dtype=torch.float32.
For the float64 comparison the script replaces those forwards with float64 versions of
the same formulas and prints the unpatched figures too, so both are on record.

Exit status: 0 when float64 and float32 agree within their bounds, 1 otherwise, 2 on a
setup problem (missing binary, transformers unable to load a checkpoint).
"""

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

FP64_BOUND = 1e-10   # sums of a few hundred products in another order: ~1e-15 each
FP32_BOUND = 2e-5    # FP32 rounding (6e-8) through 3 layers and k_norm outliers up to 96.5


def die(msg, code=2):
    print(f"hf_peer_check: {msg}", file=sys.stderr)
    sys.exit(code)


try:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
except ImportError as e:  # the dev box has no torch; this runs on the GPU machine
    die(f"needs torch and transformers ({e})")


# ----------------------------------------------------------------------------- fusecheck
def run_fusecheck(binary, args):
    proc = subprocess.run([binary] + args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fusecheck {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def fusecheck_dump(binary, model_dir, path, prompt, work, recipe=None):
    out = os.path.join(work, f"dump-{os.path.basename(model_dir)}-{path}-{recipe or 'none'}.json")
    args = ["generate", model_dir, "--path", path, "--steps", "1",
            "--prompt-ids", ",".join(str(i) for i in prompt), "--dump-hidden", out]
    if recipe:
        args += ["--recipe", recipe]
    run_fusecheck(binary, args)
    with open(out) as f:
        d = json.load(f)
    return {
        "hidden": [np.asarray(h, dtype=np.float64) for h in d["hidden"]],
        "final_norm": np.asarray(d["final_norm"], dtype=np.float64),
        "logits": np.asarray(d["logits"], dtype=np.float64),
    }


# ---------------------------------------------------------------------- float64 patches
def rms_norm_forward_keep_dtype(self, hidden_states):
    # HF's formula (eps inside the sqrt, normalise, then weight * x) without the float32 cast.
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    normed = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
    return self.weight * normed


def inv_freq_float64(config, head_dim):
    """HF's default / linear / llama3 inverse frequencies, in float64."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if rope_type == "linear":
        inv = inv / params["factor"]
    elif rope_type == "llama3":
        factor = params["factor"]
        low, high = params["low_freq_factor"], params["high_freq_factor"]
        old = params["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = np.where(medium, smoothed, scaled)
    elif rope_type != "default":
        raise ValueError(f"rope type {rope_type} not handled by the float64 patch")
    return torch.tensor(inv, dtype=torch.float64)


def make_rotary_forward_float64(config, head_dim):
    inv = inv_freq_float64(config, head_dim)

    def forward(self, x, position_ids, *args, **kwargs):
        freqs = position_ids[:, :, None].to(torch.float64) * inv.to(x.device)[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    return forward


def patch_float64(model):
    """Makes every RMSNorm and the rotary embedding compute in float64 (see module doc)."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    n_norm = 0
    for module in model.modules():
        name = type(module).__name__
        if name.endswith("RMSNorm"):
            module.forward = rms_norm_forward_keep_dtype.__get__(module)
            n_norm += 1
        elif name.endswith("RotaryEmbedding"):
            module.forward = make_rotary_forward_float64(cfg, head_dim).__get__(module)
    return n_norm


@contextlib.contextmanager
def float64_softmax():
    """HF's eager attention calls softmax(..., dtype=torch.float32) whatever the model's
    dtype; for float64 inputs keep float64 while the patched forward runs."""
    original = torch.nn.functional.softmax

    def softmax(x, dim=None, _stacklevel=3, dtype=None):
        if x.dtype == torch.float64 and dtype == torch.float32:
            dtype = torch.float64
        return original(x, dim=dim, dtype=dtype)

    torch.nn.functional.softmax = softmax
    try:
        yield
    finally:
        torch.nn.functional.softmax = original


# ---------------------------------------------------------------------------- HF side
def load_hf(model_dir, dtype, device):
    kwargs = dict(attn_implementation="eager")
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, **kwargs)
    except TypeError:  # transformers before the torch_dtype -> dtype rename
        model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=dtype, **kwargs)
    model.to(device).eval()
    # HF builds inv_freq in float32; make sure no dtype cast of the model lowered it.
    for module in model.modules():
        if type(module).__name__.endswith("RotaryEmbedding") and module.inv_freq.dtype != torch.float32:
            module.inv_freq = module.inv_freq.float()
    return model


def hf_forward(model, prompt, device):
    """One prefill; returns the embedding, each decoder layer's output, final norm, logits."""
    captured = {}
    base = model.model
    hooks = []

    def grab(key):
        def hook(_module, _inputs, output):
            t = output[0] if isinstance(output, (tuple, list)) else output
            captured[key] = t.detach().to(torch.float64).cpu().numpy()[0]
        return hook

    hooks.append(base.embed_tokens.register_forward_hook(grab("embed")))
    for i, layer in enumerate(base.layers):
        hooks.append(layer.register_forward_hook(grab(f"layer{i}")))
    hooks.append(base.norm.register_forward_hook(grab("final_norm")))
    with torch.no_grad():
        ids = torch.tensor([prompt], dtype=torch.long, device=device)
        out = model(input_ids=ids, use_cache=False)
    for h in hooks:
        h.remove()
    n_layers = len(base.layers)
    return {
        "hidden": [captured["embed"]] + [captured[f"layer{i}"] for i in range(n_layers)],
        "final_norm": captured["final_norm"],
        "logits": out.logits.detach().to(torch.float64).cpu().numpy()[0],
    }


# ------------------------------------------------------------------------ comparison
def rel_l2(a, b):
    nb = np.linalg.norm(b)
    if nb == 0:
        return float("nan")
    return float(np.linalg.norm(a - b) / nb)


def compare(ours, theirs):
    """Rows of (name, relative L2, max abs difference)."""
    rows = []
    for i, (a, b) in enumerate(zip(ours["hidden"], theirs["hidden"])):
        if a.shape != b.shape:
            raise RuntimeError(f"shape mismatch at hidden {i}: {a.shape} vs {b.shape}")
        rows.append(("embedding" if i == 0 else f"layer {i - 1}", rel_l2(a, b), float(np.max(np.abs(a - b)))))
    for key in ("final_norm", "logits"):
        rows.append((key, rel_l2(ours[key], theirs[key]), float(np.max(np.abs(ours[key] - theirs[key])))))
    top1 = float(np.mean(np.argmax(ours["logits"], -1) == np.argmax(theirs["logits"], -1)))
    return rows, top1


def print_table(title, rows, top1):
    print(f"\n{title}")
    print(f"  {'where':<12} {'rel L2':>12} {'max |diff|':>12}")
    for name, rel, mx in rows:
        print(f"  {name:<12} {rel:12.3e} {mx:12.3e}")
    print(f"  top-1 agreement of the logits over the prompt's positions: {top1:.3f}")


# ------------------------------------------------------------------------ checkpoints
def synth_checkpoints(binary, work, profiles):
    out = []
    for profile in profiles:
        d = os.path.join(work, f"synth-{profile}")
        run_fusecheck(binary, ["synth", profile, d, "--seed", "7", "--dtype", "f32"])
        out.append((f"(a) fusecheck synth {profile}", d))
    return out


def hf_random_checkpoints(work, seed):
    """HF-initialised models written with save_pretrained (float32 safetensors)."""
    from transformers import LlamaConfig, Qwen3Config
    import inspect

    def rope_kwargs(cls, theta, scaling=None):
        if "rope_parameters" in inspect.signature(cls.__init__).parameters:
            p = {"rope_type": "default", "rope_theta": theta}
            if scaling:
                p.update(scaling)
            return {"rope_parameters": p}
        kw = {"rope_theta": theta}
        if scaling:
            kw["rope_scaling"] = dict(scaling)
        return kw

    common = dict(vocab_size=257, hidden_size=64, intermediate_size=144, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                  max_position_embeddings=512, initializer_range=0.08, bos_token_id=1, eos_token_id=2)
    configs = [
        ("qwen3", Qwen3Config(head_dim=32, tie_word_embeddings=True, **common, **rope_kwargs(Qwen3Config, 1e6))),
        ("llama-llama3-rope", LlamaConfig(head_dim=16, tie_word_embeddings=False, **common,
                                          **rope_kwargs(LlamaConfig, 500000.0, {
                                              "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}))),
    ]
    out = []
    for name, cfg in configs:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
        # HF initialises norm weights to ones; spread them so a swapped or missing weight shows.
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "norm" in pname:
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
        d = os.path.join(work, f"hf-{name}")
        model.to(torch.float32).save_pretrained(d, safe_serialization=True)
        out.append((f"(b) HF save_pretrained {name}", d))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fusecheck", default="build/host/harness/cli/fusecheck", help="fusecheck binary")
    ap.add_argument("--work", default=None, help="directory for checkpoints and dumps (default: a temp dir)")
    ap.add_argument("--profiles", default="qwen3-tiny,qwen2-tiny,llama-tiny")
    ap.add_argument("--tokens", type=int, default=12, help="prompt length")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cpu", help="where HF runs (cpu, or cuda with TF32 off)")
    args = ap.parse_args()

    if not (os.path.isfile(args.fusecheck) and os.access(args.fusecheck, os.X_OK)):
        die(f"no fusecheck binary at {args.fusecheck} (build it, or pass --fusecheck)")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    work = args.work or tempfile.mkdtemp(prefix="hf_peer_")
    os.makedirs(work, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, HF on {args.device}, work dir {work}")

    try:
        checkpoints = synth_checkpoints(args.fusecheck, work, [p for p in args.profiles.split(",") if p])
        checkpoints += hf_random_checkpoints(work, args.seed)
    except Exception as e:  # a setup failure is not a numerical verdict
        die(f"could not prepare checkpoints: {e}")

    failures = []
    summary = []
    for label, d in checkpoints:
        with open(os.path.join(d, "config.json")) as f:
            vocab = json.load(f)["vocab_size"]
        rng = np.random.default_rng(args.seed)
        prompt = [1] + [int(t) for t in rng.integers(3, vocab, size=args.tokens - 1)]
        print(f"\n=== {label}: {d}\n    prompt ids {prompt}")
        runs = [
            ("float64 (HF patched to stay float64) vs ref64-cpu", torch.float64, True, "ref64-cpu", None, FP64_BOUND),
            ("float64 (HF as shipped: norms and RoPE in float32) vs ref64-cpu", torch.float64, False, "ref64-cpu", None, None),
            ("float32 vs ref32-cpu", torch.float32, False, "ref32-cpu", None, FP32_BOUND),
            ("bf16 (eager) vs emulated-cpu --recipe hf-bf16", torch.bfloat16, False, "emulated-cpu", "hf-bf16", None),
            ("bf16 (eager) vs emulated-cpu --recipe fused-v1 (for contrast)", torch.bfloat16, False, "emulated-cpu", "fused-v1", None),
        ]
        for title, dtype, patch, path, recipe, bound in runs:
            try:
                model = load_hf(d, dtype, args.device)
                if patch:
                    patch_float64(model)
                with float64_softmax() if patch else contextlib.nullcontext():
                    theirs = hf_forward(model, prompt, args.device)
                ours = fusecheck_dump(args.fusecheck, d, path, prompt, work, recipe)
                rows, top1 = compare(ours, theirs)
            except Exception as e:
                failures.append(f"{label} / {title}: {e}")
                print(f"\n{title}\n  ERROR: {e}")
                continue
            print_table(title, rows, top1)
            worst = max(r[1] for r in rows)
            summary.append((label, title, worst, top1))
            if bound is not None and not worst <= bound:
                failures.append(f"{label} / {title}: worst rel L2 {worst:.3e} above {bound:.0e}")

    print("\n=== summary (worst relative L2 over embedding, layers, final norm, logits)")
    for label, title, worst, top1 in summary:
        print(f"  {worst:10.3e}  top-1 {top1:.3f}  {label} | {title}")
    if failures:
        print("\nFAILED:")
        for f in failures:
            print(f"  {f}")
        return 1
    print("\nOK: float64 and float32 agree with HF within their bounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
