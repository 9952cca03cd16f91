#!/usr/bin/env python3
"""Trains the small test tokenizers and writes their golden encodings (tests/tokenizer/data).

No real tokenizer.json can be downloaded here, so fusecheck's tokenizers are checked on
tokenizers trained by this script with Hugging Face `tokenizers` (the pinned wheel that
scripts/fetch-tokenizers unpacks into .whl/site) on text it generates from a logged seed:
four byte-level BPEs with the pre-tokenizers of Qwen2, Llama-3, SmolLM and GPT-2, and two
SentencePiece-style BPEs with byte fallback (as Llama-2 and Mistral ship: spaces to U+2581
by a normalizer or by the Metaspace pre-tokenizer). Each is written
as tokenizer.json and, for the byte-level ones, also as a vocabulary-only GGUF file (the
keys llama.cpp's converter writes). golden.json holds a few hundred test strings with
HF's ids and decoded text for every tokenizer, so the C++ test needs no Python.

  scripts/tokenizer_golden.py            # regenerate everything (deterministic)
  scripts/tokenizer_golden.py --check    # re-encode the committed strings with HF and
                                         # compare with golden.json (exit 1 on a difference,
                                         # 77 when the wheel is absent)
"""
import argparse
import json
import os
import random
import struct
import sys
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "tokenizer", "data")
SITE = os.path.join(ROOT, ".whl", "site")
SEED = 20261202

# The pre-tokenizer regexes, as the published tokenizer.json files of each family give them
# (and llama.cpp's `tokenizer.ggml.pre` values select).
GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
               r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

WORDS = ("the cat sat on a mat and then it ran far away while a small dog barked at the "
         "moon because nobody knew why stories begin with once upon a time there was").split()
FOREIGN = ["café", "naïve", "Straße", "über", "façade", "niño", "смотреть", "Москва", "λόγος",
           "αβγ", "東京", "日本語", "中文字符", "한국어", "שלום", "مرحبا", "हिन्दी", "ไทย"]
EMOJI = ["😀", "🚀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🙂", "🎉", "✨"]
CODE = ["def f(x):\n    return x**2\n", "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
        "if (x != y && z >= 0) {\n\treturn -1;\n}", "const auto it = m.find(\"key\");",
        "SELECT id, name FROM users WHERE age > 30;", "<div class=\"a\">&amp;</div>",
        "x = {'a': [1, 2, 3], \"b\": None}", "printf(\"%d\\n\", 42);", "#include <vector>"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "\r\n", "\u3000", "\u00a0", "    \n"]


def random_text(rng, n_pieces):
    parts = []
    for _ in range(n_pieces):
        kind = rng.random()
        if kind < 0.45:
            w = rng.choice(WORDS)
            parts.append(w.capitalize() if rng.random() < 0.2 else w.upper() if rng.random() < 0.05 else w)
        elif kind < 0.55:
            parts.append(rng.choice(FOREIGN))
        elif kind < 0.63:
            parts.append(str(rng.randrange(0, 10 ** rng.randrange(1, 9))))
        elif kind < 0.68:
            parts.append(rng.choice(EMOJI))
        elif kind < 0.74:
            parts.append(rng.choice(CODE))
        elif kind < 0.8:
            parts.append(rng.choice(["'s", "'t", "'re", "'LL", "'ve", "'D", "'m"]))
        elif kind < 0.88:
            parts.append(rng.choice(".,;:!?-()[]{}\"'/*+=<>@#$%^&~`|\\"))
        else:
            parts.append(rng.choice(SPACES))
        parts.append(" " if rng.random() < 0.7 else "")
    return "".join(parts)


def training_text(rng):
    return [random_text(rng, rng.randrange(5, 40)) for _ in range(6000)]


def test_strings(rng):
    fixed = ["", " ", "  ", "\n", "Hello world", " Hello world", "Hello  world", "Hello\n\nworld  ",
             "1234567890", "3.14159 and 2,718", "don't I'LL we've", "Once upon a time, there was a little girl.",
             "e\u0301 vs \u00e9", "A\u030a", "ﬁ ligature", "tab\there", "trailing   ", "   leading",
             "\u2581 already a meta space", "<0x41> is not a byte token here", "😀😀😀", "👨‍👩‍👧 family",
             "<|endoftext|>", "a<|im_start|>b", "<s> and </s> typed", "\x00\x01 control", "\ufeffbom"]
    out = list(fixed)
    while len(out) < 300:
        out.append(random_text(rng, rng.randrange(1, 25)))
    return out


def import_tokenizers():
    # FUSECHECK_PYDEPS: another folder of unpacked pinned wheels, when the project keeps one.
    for site in (SITE, os.environ.get("FUSECHECK_PYDEPS", "")):
        if site and os.path.isdir(site):
            sys.path.insert(0, site)
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return None
    return tokenizers


def byte_level(tk, name, regex, digits, lines):
    from tokenizers import Tokenizer, Regex, models, normalizers, pre_tokenizers, decoders, processors, trainers
    bos = "<|begin_of_text|>" if name == "llama3" else None
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + ([bos] if bos else [])
    tok = Tokenizer(models.BPE(ignore_merges=(name == "llama3")))
    if name == "qwen2":
        tok.normalizer = normalizers.NFC()
    pre = []
    if digits:
        pre.append(pre_tokenizers.Digits(individual_digits=True))
    if regex is None:
        pre.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    else:
        pre.append(pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False))
        pre.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    tok.pre_tokenizer = pre[0] if len(pre) == 1 else pre_tokenizers.Sequence(pre)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    if bos:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, bos_id)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def spm_bpe(tk, lines, metaspace):
    """Llama-2 layout: <unk> <s> </s>, the 256 byte tokens, then the learned pieces. Spaces
    become U+2581 through a Prepend/Replace normalizer (Llama-2) or, with `metaspace`, the
    Metaspace pre-tokenizer (newer Mistral files)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, decoders, processors, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    else:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120,
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    spec = json.loads(tok.to_str())
    learned = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in learned:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    spec["model"]["vocab"] = vocab
    for added in spec["added_tokens"]:
        added["id"] = vocab[added["content"]]
    # Both keep Llama-2's decoder (HF's Metaspace decoder would print byte tokens as "<0xNN>").
    spec["decoder"] = json.loads(decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)]).__getstate__())
    spec["post_processor"] = json.loads(processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)]).__getstate__())
    return Tokenizer.from_str(json.dumps(spec))


# --- a vocabulary-only GGUF v3 writer (llama.cpp docs/gguf.md) ---
def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def gguf_kv(key, kind, value):
    out = gguf_string(key)
    if kind == "str":
        return out + struct.pack("<I", 8) + gguf_string(value)
    if kind == "u32":
        return out + struct.pack("<II", 4, value)
    if kind == "bool":
        return out + struct.pack("<IB", 7, 1 if value else 0)
    if kind == "str[]":
        return out + struct.pack("<IIQ", 9, 8, len(value)) + b"".join(gguf_string(v) for v in value)
    if kind == "i32[]":
        return out + struct.pack("<IIQ", 9, 5, len(value)) + b"".join(struct.pack("<i", v) for v in value)
    raise ValueError(kind)


def write_gguf(path, tok, pre, bos):
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    tokens = [None] * len(vocab)
    for piece, i in vocab.items():
        tokens[i] = piece
    special = {a["content"] for a in spec["added_tokens"] if a["special"]}
    types = [3 if t in special else 1 for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    kvs = [gguf_kv("general.architecture", "str", "llama"),
           gguf_kv("tokenizer.ggml.model", "str", "gpt2"),
           gguf_kv("tokenizer.ggml.pre", "str", pre),
           gguf_kv("tokenizer.ggml.tokens", "str[]", tokens),
           gguf_kv("tokenizer.ggml.token_type", "i32[]", types),
           gguf_kv("tokenizer.ggml.merges", "str[]", merges),
           gguf_kv("tokenizer.ggml.eos_token_id", "u32", vocab["<|endoftext|>"]),
           gguf_kv("tokenizer.ggml.add_bos_token", "bool", bos is not None)]
    if bos is not None:
        kvs.append(gguf_kv("tokenizer.ggml.bos_token_id", "u32", vocab[bos]))
    with open(path, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))


BYTE_LEVEL = {  # name: (regex or None for ByteLevel's own, individual digits, gguf pre, bos)
    "qwen2": (QWEN2_REGEX, False, "qwen2", None),
    "llama3": (LLAMA3_REGEX, False, "llama-bpe", "<|begin_of_text|>"),
    "smollm": (None, True, "smollm", None),
    "gpt2": (None, False, "gpt2", None),
}


def encode_all(tok, strings):
    out = []
    for s in strings:
        ids = tok.encode(s).ids
        out.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=True)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare HF's encodings with golden.json")
    args = ap.parse_args()
    tk = import_tokenizers()
    if tk is None:
        print("tokenizer_golden: HF tokenizers is not installed (scripts/fetch-tokenizers); skipped")
        return 77
    from tokenizers import Tokenizer
    if args.check:
        with open(os.path.join(DATA, "golden.json"), encoding="utf-8") as f:
            golden = json.load(f)
        bad = 0
        for name, expected in golden["encodings"].items():
            tok = Tokenizer.from_file(os.path.join(DATA, f"{name}.tokenizer.json"))
            got = encode_all(tok, golden["strings"])
            same = sum(g == e for g, e in zip(got, expected))
            print(f"{name}: HF tokenizers {tk.__version__} agrees with golden.json on {same}/{len(expected)} strings")
            bad += len(expected) - same
        return 1 if bad else 0

    print(f"tokenizer_golden: seed {SEED}, tokenizers {tk.__version__}")
    rng = random.Random(SEED)
    lines = training_text(rng)
    strings = test_strings(random.Random(SEED + 1))
    os.makedirs(DATA, exist_ok=True)
    golden = {"seed": SEED, "tokenizers_version": tk.__version__, "strings": strings, "encodings": {},
              "nfc_stable": [unicodedata.normalize("NFC", s) == s for s in strings]}
    for name, (regex, digits, pre, bos) in BYTE_LEVEL.items():
        tok = byte_level(tk, name, regex, digits, lines)
        tok.save(os.path.join(DATA, f"{name}.tokenizer.json"))
        write_gguf(os.path.join(DATA, f"{name}.vocab.gguf"), tok, pre, bos)
        golden["encodings"][name] = encode_all(tok, strings)
    for name, metaspace in (("spm-bpe", False), ("spm-metaspace", True)):
        tok = spm_bpe(tk, lines, metaspace)
        tok.save(os.path.join(DATA, f"{name}.tokenizer.json"))
        golden["encodings"][name] = encode_all(tok, strings)
    with open(os.path.join(DATA, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=True, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"tokenizer_golden: wrote {len(strings)} strings x {len(golden['encodings'])} tokenizers to {DATA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
