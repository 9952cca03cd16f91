#!/usr/bin/python3
"""Writes the fuzzers' seed corpora (fuzz/corpus/*): tiny valid safetensors files, GGUF
files of each supported architecture and dtype (and one holding a block of every quantized
type fusecheck reads, with a tied head), HF config.json variants, and tiny results
files (one layer, one path) in both HDF5 storage forms a reader meets: the checksummed one
fusecheck writes (docs/results-format.md, "Damage") and the legacy one of the committed v1
baselines. Seeded and deterministic; every file stays below 64 KiB. Run from anywhere
with Debian's python3 (h5py): /usr/bin/python3 make_corpus.py"""
import json
import os
import random
import struct

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(11)


def values(n, center=0.0, spread=1.0):
    return [center + spread * rng.uniform(-1, 1) for _ in range(n)]


def encode(vals, dtype):
    a = np.asarray(vals, dtype=np.float32)
    if dtype == "F32":
        return a.tobytes()
    if dtype == "F16":
        return a.astype(np.float16).tobytes()
    if dtype == "F64":
        return a.astype(np.float64).tobytes()
    # BF16: the top half of the float bits, rounded to nearest even.
    bits = a.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return bits.astype(np.uint16).tobytes()


def tiny_model(arch, hidden=8, heads=2, kv=1, head_dim=4, inter=12, vocab=11, layers=1, gguf=False):
    """(name, shape, values) of every tensor, HF or GGUF naming."""
    out = []
    q, k = heads * head_dim, kv * head_dim
    names = {
        "embed": ("model.embed_tokens.weight", "token_embd.weight"),
        "norm": ("model.norm.weight", "output_norm.weight"),
        "head": ("lm_head.weight", "output.weight"),
    }
    pick = lambda pair: pair[1] if gguf else pair[0]
    out.append((pick(names["embed"]), [vocab, hidden], values(vocab * hidden, 0, 0.3)))
    for l in range(layers):
        p = f"blk.{l}." if gguf else f"model.layers.{l}."
        n = lambda hf, gg: p + (gg if gguf else hf)
        out.append((n("input_layernorm.weight", "attn_norm.weight"), [hidden], values(hidden, 1, 0.3)))
        out.append((n("self_attn.q_proj.weight", "attn_q.weight"), [q, hidden], values(q * hidden, 0, 0.3)))
        out.append((n("self_attn.k_proj.weight", "attn_k.weight"), [k, hidden], values(k * hidden, 0, 0.3)))
        out.append((n("self_attn.v_proj.weight", "attn_v.weight"), [k, hidden], values(k * hidden, 0, 0.3)))
        if arch == "qwen2":
            out.append((n("self_attn.q_proj.bias", "attn_q.bias"), [q], values(q, 0, 0.1)))
            out.append((n("self_attn.k_proj.bias", "attn_k.bias"), [k], values(k, 0, 0.1)))
            out.append((n("self_attn.v_proj.bias", "attn_v.bias"), [k], values(k, 0, 0.1)))
        if arch == "qwen3":
            out.append((n("self_attn.q_norm.weight", "attn_q_norm.weight"), [head_dim], values(head_dim, 1, 0.3)))
            out.append((n("self_attn.k_norm.weight", "attn_k_norm.weight"), [head_dim], values(head_dim, 1, 0.3)))
        out.append((n("self_attn.o_proj.weight", "attn_output.weight"), [hidden, q], values(q * hidden, 0, 0.3)))
        out.append((n("post_attention_layernorm.weight", "ffn_norm.weight"), [hidden], values(hidden, 1, 0.3)))
        out.append((n("mlp.gate_proj.weight", "ffn_gate.weight"), [inter, hidden], values(inter * hidden, 0, 0.3)))
        out.append((n("mlp.up_proj.weight", "ffn_up.weight"), [inter, hidden], values(inter * hidden, 0, 0.3)))
        out.append((n("mlp.down_proj.weight", "ffn_down.weight"), [hidden, inter], values(inter * hidden, 0, 0.3)))
    out.append((pick(names["norm"]), [hidden], values(hidden, 1, 0.3)))
    out.append((pick(names["head"]), [vocab, hidden], values(vocab * hidden, 0, 0.3)))
    return out


def safetensors(tensors, dtype, metadata=None):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, shape, vals in tensors:
        blob = encode(vals, dtype)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


# ggml id, values per block, bytes per block and fp16 scale offsets of each quantized type
# (ggml-common.h layouts).
QUANTS = {"Q4_0": (2, 32, 18, [0]), "Q4_1": (3, 32, 20, [0, 2]), "Q5_0": (6, 32, 22, [0]),
          "Q5_1": (7, 32, 24, [0, 2]), "Q8_0": (8, 32, 34, [0]), "Q2_K": (10, 256, 84, [80, 82]),
          "Q3_K": (11, 256, 110, [108]), "Q4_K": (12, 256, 144, [0, 2]), "Q5_K": (13, 256, 176, [0, 2]),
          "Q6_K": (14, 256, 210, [208])}


def quant_tensor(name, type_name, n_blocks):
    """(name, [n_blocks * block values], ggml id, blob): random bits, finite small scales."""
    ggml, elems, size, scales = QUANTS[type_name]
    blob = bytearray(rng.getrandbits(8) for _ in range(n_blocks * size))
    for b in range(n_blocks):
        for off in scales:
            blob[b * size + off:b * size + off + 2] = np.float16(rng.uniform(1e-3, 1e-2)).tobytes()
    return (name, [n_blocks * elems], ggml, bytes(blob))


def gguf(arch, tensors, dtype, extra_kv=(), raw_tensors=()):
    ggml = {"F32": 0, "F16": 1, "BF16": 30, "F64": 28}[dtype]
    kv = [("general.architecture", 8, gguf_string(arch)),
          ("general.alignment", 4, struct.pack("<I", 32))]
    hidden = tensors[0][1][1]
    counts = {"embedding_length": hidden, "block_count": 1, "feed_forward_length": 12,
              "attention.head_count": 2, "attention.head_count_kv": 1, "rope.dimension_count": 4}
    kv += [(f"{arch}.{k}", 4, struct.pack("<I", v)) for k, v in counts.items()]
    kv += [(f"{arch}.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-6)),
           (f"{arch}.rope.freq_base", 6, struct.pack("<f", 10000.0))]
    tokens = ["<unk>", "<s>", "</s>", "<0x0A>", "\u2581a", "\u2581b", "c", "d", "e", "f", "g"]
    kv.append(("tokenizer.ggml.tokens", 9,
               struct.pack("<IQ", 8, len(tokens)) + b"".join(gguf_string(t) for t in tokens)))
    kv.append(("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", 1)))
    kv += list(extra_kv)
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors) + len(raw_tensors), len(kv))
    for key, vtype, payload in kv:
        out += gguf_string(key) + struct.pack("<I", vtype) + payload
    blobs, offset = [], 0
    stored = [(name, shape, ggml, encode(vals, dtype)) for name, shape, vals in tensors] + list(raw_tensors)
    for name, shape, type_id, blob in stored:
        out += gguf_string(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in reversed(shape))
        out += struct.pack("<IQ", type_id, offset)
        blobs.append(blob + b"\0" * (-len(blob) % 32))
        offset += len(blobs[-1])
    out += b"\0" * (-len(out) % 32)
    return out + b"".join(blobs)


def write(path, data):
    full = os.path.join(HERE, "corpus", path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    assert len(data) < 64 * 1024, path
    with open(full, "wb") as f:
        f.write(data)


LAYER_TAPS = ["attn_norm", "q", "k", "v", "q_normed", "k_normed", "q_rope", "k_rope", "attn", "o_proj",
              "resid_mid", "mlp_norm", "gate", "up", "act", "down", "resid_out"]
HEAD_TAPS = ["final_norm", "logits"]


def results_file(checksummed, merged=False, invariance=False):
    """A minimal valid run (every object docs/results-format.md makes required), as
    fusecheck's writer stores it (checksummed) or as v1 files were stored (legacy); with
    `invariance`, the invariance certificate too (one cell of each status)."""
    import tempfile
    libver = ("v110", "v110") if checksummed else ("earliest", "v110")
    fd, tmp = tempfile.mkstemp(suffix=".h5")
    os.close(fd)

    def string(v):
        if not checksummed:
            return v
        b = v.encode()
        return np.array(b, dtype=h5py.string_dtype("utf-8", max(len(b), 1)))

    def dataset(g, name, data, dtype=None):
        data = np.asarray(data, dtype=dtype)
        extra = {"chunks": data.shape, "fletcher32": True} if checksummed and data.size else {}
        g.create_dataset(name, data=data, **extra)

    def strings(g, name, items):
        if checksummed:
            width = max(len(s.encode()) for s in items)
            dataset(g, name, np.array([s.encode() for s in items], dtype=h5py.string_dtype("utf-8", width)))
        else:
            g.create_dataset(name, data=items, dtype=h5py.string_dtype("utf-8"))

    def metrics(g, rel):
        for name, layer, head, dtype in (("present", 1, 1, np.int8), ("gate", 1, 1, np.int8),
                                         ("rel_l2", rel, 2 * rel, float), ("nan_count", 0, 0, float),
                                         ("inf_count", 0, 0, float), ("frac_outside", 0.01, 0.02, float)):
            dataset(g, name, np.full((1, len(LAYER_TAPS)), layer), dtype)
            dataset(g, "head/" + name, np.full(len(HEAD_TAPS), head), dtype)
        g.attrs["first_divergent_layer"] = np.int64(-1)
        g.attrs["first_divergent_tap"] = string("")
        g.attrs["gate_failures"] = np.int64(0)

    with h5py.File(tmp, "w", libver=libver) as f:
        run = f.create_group("runs/tiny") if merged else f
        if merged:
            f.attrs["format"] = string("fusecheck-merged")
            f.attrs["format_version"] = np.int64(1)
        for k, v in (("format", "fusecheck-run"), ("scenario_name", "tiny"), ("device", "cpu"),
                     ("device_name", "cpu"), ("model_profile", "qwen3-0.6b"), ("architecture", "qwen3"),
                     ("phase", "prefill"), ("reference", "ref32-cpu"),
                     ("modes", "isolated,propagated,invariance" if invariance else "isolated,propagated"),
                     ("status", "pass"), ("scenario_text", "name: tiny\n")):
            run.attrs[k] = string(v)
        for k, v in (("format_version", 1), ("n_layers", 1), ("batch", 1), ("n_tokens", 4)):
            run.attrs[k] = np.int64(v)
        run.attrs["ref64"] = np.int8(0)
        strings(run, "taps", LAYER_TAPS)
        strings(run, "head_taps", HEAD_TAPS)
        label = "emulated-cpu:fused-v1"
        metrics(run.create_group(f"paths/{label}/isolated"), 2e-3)
        metrics(run.create_group(f"paths/{label}/propagated"), 3e-3)
        e = run.create_group(f"end_to_end/{label}")
        e.attrs["kl_mean"], e.attrs["kl_p99"], e.attrs["top1_agreement"] = 1e-4, 3e-4, 1.0
        t = run.create_group(f"timing/{label}")
        dataset(t, "layer_ms", [0.5])
        strings(t, "op_names", ["layer"])
        for name in ("op_median_ms", "op_p10_ms", "op_p90_ms"):
            dataset(t, name, [[0.5]])
        for scorer in ("braidinfer", "fusecheck"):
            s = run.create_group(f"static/{scorer}")
            s.attrs["status"] = string("COMPATIBLE")
            c = run.create_group(f"crosscheck/{scorer}")
            c.attrs["path"], c.attrs["verdict"] = string(label), string("agree")
        if invariance:
            inv = run.create_group("invariance")
            inv.attrs["checks"] = string("batch,run_to_run,cuda_graph")
            p = inv.create_group(label)
            p.attrs["device"], p.attrs["fingerprint"] = string("cpu"), string("0123456789abcdef")
            for check, status, layer, tap in (("batch", "differs", 0, "q"), ("run_to_run", "invariant", -1, ""),
                                              ("cuda_graph", "n/a", -1, "")):
                g = p.create_group(check)
                g.attrs["status"], g.attrs["reason"] = string(status), string("")
                g.attrs["first_layer"], g.attrs["first_row"] = np.int64(layer), np.int64(layer)
                g.attrs["first_tap"], g.attrs["max_ulp_dtype"] = string(tap), string("BF16")
                g.attrs["max_ulp"] = 2.0 if status == "differs" else 0.0
                if status == "differs":  # the scaled distance (files before it lack these)
                    g.attrs["first_scaled_ulp"], g.attrs["max_scaled_ulp"] = 1.0, 3.0
                    g.attrs["sign_crossings"] = np.int64(1)
                    g.attrs["first_scaled_ulp_dtype"] = string("BF16")
    with open(tmp, "rb") as f:
        data = f.read()
    os.unlink(tmp)
    return data


def config(cls, model_type, **extra):
    c = {"architectures": [cls], "model_type": model_type, "hidden_size": 8, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "intermediate_size": 12,
         "vocab_size": 11, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
         "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "max_position_embeddings": 64}
    c.update(extra)
    return json.dumps(c, indent=1).encode()


def vocab_gguf(kv):
    """A GGUF image with metadata only: (key, type id, payload bytes) triples."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for key, kind, payload in kv:
        out += gguf_string(key) + struct.pack("<I", kind) + payload
    return out


def string_array(items):
    return struct.pack("<IQ", 8, len(items)) + b"".join(gguf_string(i) for i in items)


def tokenizer_seeds():
    meta = "\u2581"
    spm = [("tokenizer.ggml.model", 8, gguf_string("llama")),
           ("tokenizer.ggml.tokens", 9, string_array(["<unk>", "<s>", "</s>", "<0x41>", meta, "a", meta + "a", "b"])),
           ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 8) + struct.pack("<8f", 0, 0, 0, 0, -1, -2, -0.5, -3)),
           ("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, 8) + struct.pack("<8i", 2, 3, 3, 6, 1, 1, 1, 1)),
           ("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", 1))]
    write("gguf_vocab/spm.gguf", vocab_gguf(spm))
    bpe = [("tokenizer.ggml.model", 8, gguf_string("gpt2")), ("tokenizer.ggml.pre", 8, gguf_string("qwen2")),
           ("tokenizer.ggml.tokens", 9, string_array(["a", "b", "ab", "\u0120", "\u0120a", "<|end|>"])),
           ("tokenizer.ggml.merges", 9, string_array(["a b", "\u0120 a"])),
           ("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, 6) + struct.pack("<6i", 1, 1, 1, 1, 1, 3))]
    write("gguf_vocab/bpe.gguf", vocab_gguf(bpe))
    tok = {"added_tokens": [{"id": 5, "content": "<s>", "special": True}],
           "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": meta},
                                                              {"type": "Replace", "pattern": {"String": " "}, "content": meta}]},
           "pre_tokenizer": None,
           "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}],
                              "special_tokens": {"<s>": {"id": "<s>", "ids": [5]}}},
           "decoder": {"type": "Sequence", "decoders": [{"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
           "model": {"type": "BPE", "byte_fallback": True, "vocab": {"<0x41>": 0, meta: 1, "a": 2, meta + "a": 3, "b": 4},
                     "merges": [[meta, "a"]]}}
    write("tokenizer_json/spm_bpe.json", json.dumps(tok).encode() + b"\0a b A")
    tok = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3}, "merges": ["a b"], "ignore_merges": True},
           "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "Digits", "individual_digits": True},
               {"type": "Split", "pattern": {"Regex": "\\p{L}+|\\s+"}, "behavior": "Isolated", "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
           "normalizer": {"type": "NFC"}, "added_tokens": []}
    write("tokenizer_json/byte_level.json", json.dumps(tok).encode())


def main():
    small = [("w", [3, 5], values(15)), ("b", [5], values(5)), ("s", [], values(1)), ("e", [0, 4], [])]
    write("safetensors/small_f32_meta.safetensors", safetensors(small, "F32", {"format": "pt"}))
    write("safetensors/small_bf16.safetensors", safetensors(small, "BF16"))
    write("safetensors/small_f64.safetensors", safetensors(small, "F64"))
    write("safetensors/tiny_qwen3_f16.safetensors", safetensors(tiny_model("qwen3"), "F16"))
    write("gguf/tiny_llama_f32.gguf", gguf("llama", tiny_model("llama", gguf=True), "F32"))
    write("gguf/tiny_qwen3_bf16.gguf", gguf("qwen3", tiny_model("qwen3", gguf=True), "BF16"))
    write("gguf/tiny_qwen2_f16.gguf",
          gguf("qwen2", tiny_model("qwen2", gguf=True), "F16",
               [("qwen2.rope.scaling.type", 8, gguf_string("linear")),
                ("qwen2.rope.scaling.factor", 6, struct.pack("<f", 2.0)),
                ("test.i8", 1, struct.pack("<b", -3)), ("test.u64", 10, struct.pack("<Q", 7)),
                ("test.bool", 7, b"\1"), ("test.f64", 12, struct.pack("<d", 0.5)),
                ("test.i32s", 9, struct.pack("<IQ", 5, 3) + struct.pack("<3i", 1, -2, 3))]))
    untied = [t for t in tiny_model("llama", gguf=True) if t[0] != "output.weight"]
    write("gguf/tiny_llama_quant_types_tied.gguf",
          gguf("llama", untied, "F32",
               raw_tensors=[quant_tensor(f"test.{name.lower()}.weight", name, 2) for name in QUANTS]))
    write("results/run_checksummed.h5", results_file(True))
    write("results/merged_checksummed.h5", results_file(True, merged=True))
    write("results/run_legacy.h5", results_file(False))
    write("results/run_invariance.h5", results_file(True, invariance=True))
    write("hf_config/qwen3.json", config("Qwen3ForCausalLM", "qwen3"))
    write("hf_config/qwen2.json", config("Qwen2ForCausalLM", "qwen2", tie_word_embeddings=True))
    write("hf_config/llama3.json", config("LlamaForCausalLM", "llama", eos_token_id=[2, 3], rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}))
    write("hf_config/mistral_linear.json", config("MistralForCausalLM", "mistral", head_dim=None,
                                                  rope_scaling={"type": "linear", "factor": 2.0}))
    tokenizer_seeds()


if __name__ == "__main__":
    main()
