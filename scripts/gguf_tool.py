"""The independent side of fusecheck's GGUF dequantization checks, on the `gguf` Python
package (llama.cpp's gguf-py, pinned and fetched by scripts/fetch-test-deps into .deps-py/).

Subcommands:
  dequant TYPE BLOCKS OUT [TYPE BLOCKS OUT ...]
                              raw blocks of ggml type TYPE -> little-endian float32 values
                              (gguf.quants.dequantize; F64 through numpy's astype)
  dequant-model MODEL OUTDIR  every tensor of a GGUF file (gguf.GGUFReader + dequantize) as
                              OUTDIR/<index>.f32, named in OUTDIR/index.json
  golden OUT [--seed N]       writes the golden vectors tests/checkpoint/data/gguf_golden.json:
                              seeded random blocks of every type fusecheck reads and their
                              values as this package computes them
  quantize SRC OUT TYPE       a copy of the GGUF model SRC with every 2-D tensor whose rows
                              hold whole blocks quantized to TYPE (Q8_0, Q4_0, ...), the others
                              kept as stored, as llama.cpp's quantizer does

Run with the package on PYTHONPATH (.deps-py/site). Every random input comes from --seed,
which is printed and stored in what is written.
"""

import argparse
import json
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize, quantize

# The types fusecheck reads, with the byte offsets of each block's fp16 scales: random
# blocks get finite scales there (a quantizer never writes NaN or Inf scales), random bits
# everywhere else.
SCALE_OFFSETS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}
PLAIN = ["F32", "F16", "BF16", "F64"]


def dequantize_bytes(type_name: str, raw: bytes) -> np.ndarray:
    data = np.frombuffer(raw, dtype=np.uint8)
    if type_name == "F64":
        return data.view(np.float64).astype(np.float32)
    return np.ascontiguousarray(dequantize(data, QT[type_name]), dtype=np.float32).reshape(-1)


def random_blocks(type_name: str, n_blocks: int, rng: np.random.Generator) -> bytes:
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[QT[type_name]]
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for offset in SCALE_OFFSETS.get(type_name, []):
        bits = rng.integers(0, 1 << 16, size=n_blocks, dtype=np.uint32)
        # Exponent 31 is Inf/NaN: move those into the finite range, keep sign and mantissa.
        bits = np.where((bits & 0x7C00) == 0x7C00, bits & 0xBFFF, bits).astype(np.uint16)
        blocks[:, offset:offset + 2] = bits.view(np.uint8).reshape(n_blocks, 2)
    return blocks.tobytes()


def cmd_dequant(args: argparse.Namespace) -> int:
    if len(args.triples) % 3 != 0:
        raise SystemExit("dequant takes TYPE BLOCKS OUT triples")
    for i in range(0, len(args.triples), 3):
        type_name, blocks, out = args.triples[i:i + 3]
        if type_name not in SCALE_OFFSETS and type_name not in PLAIN:
            raise SystemExit(f"dequant: unknown type {type_name}")
        with open(blocks, "rb") as f:
            raw = f.read()
        dequantize_bytes(type_name, raw).astype("<f4").tofile(out)
    return 0


def cmd_dequant_model(args: argparse.Namespace) -> int:
    reader = gguf.GGUFReader(args.model)
    index = []
    for i, t in enumerate(reader.tensors):
        name = QT(t.tensor_type).name
        values = dequantize_bytes(name, np.asarray(t.data).tobytes())
        values.astype("<f4").tofile(f"{args.outdir}/{i}.f32")
        index.append({"name": t.name, "type": name, "file": f"{i}.f32"})
    with open(f"{args.outdir}/index.json", "w") as f:
        json.dump(index, f, indent=1)
    return 0


def cmd_golden(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    print(f"gguf_tool golden: seed {args.seed}", file=sys.stderr)
    cases = []
    for type_name in list(SCALE_OFFSETS) + PLAIN:
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[QT[type_name]]
        # A few blocks of every type: 256 values or more, under 1 KiB of blocks.
        n_blocks = max(2, 256 // block_elems) if block_elems > 1 else 64
        raw = random_blocks(type_name, n_blocks, rng)
        values = dequantize_bytes(type_name, raw)
        cases.append({"type": type_name, "blocks": n_blocks, "block_bytes": block_bytes,
                      "data_hex": raw.hex(), "values_hex": values.astype("<f4").tobytes().hex()})
    golden = {"generator": "scripts/gguf_tool.py golden", "gguf_version": args.gguf_version,
              "seed": args.seed, "cases": cases}
    with open(args.out, "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    reader = gguf.GGUFReader(args.src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(args.out, arch)
    qtype = QT[args.type]
    block_elems, _ = gguf.GGML_QUANT_SIZES[qtype]
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), main, sub)
    writer.add_key_value("general.file_type", int(getattr(gguf.LlamaFileType, "MOSTLY_" + args.type)),
                         gguf.GGUFValueType.UINT32)
    for t in reader.tensors:
        # GGUF lists dims fastest first; numpy wants them slowest first.
        shape = [int(d) for d in reversed(t.shape)]
        stored = QT(t.tensor_type)
        if stored != QT.F32:
            raise SystemExit(f"{args.src}: tensor {t.name} is {stored.name}; quantize reads F32 models")
        values = np.asarray(t.data, dtype=np.float32).reshape(shape)
        if len(shape) == 2 and shape[-1] % block_elems == 0:
            writer.add_tensor(t.name, quantize(values, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(t.name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dequant")
    d.add_argument("triples", nargs="+")
    g = sub.add_parser("dequant-model")
    g.add_argument("model")
    g.add_argument("outdir")
    o = sub.add_parser("golden")
    o.add_argument("out")
    o.add_argument("--seed", type=int, default=20261202)
    o.add_argument("--gguf-version", default=getattr(gguf, "__version__", "unknown"))
    q = sub.add_parser("quantize")
    q.add_argument("src")
    q.add_argument("out")
    q.add_argument("type", choices=["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
    args = p.parse_args()
    return {"dequant": cmd_dequant, "dequant-model": cmd_dequant_model, "golden": cmd_golden,
            "quantize": cmd_quantize}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
