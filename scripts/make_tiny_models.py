"""Writes the tiny random-weights test models, deterministically (fixed seeds), with the gguf package.

usage: make_tiny_models.py llm VOCAB_GGUF OUT_GGUF [LAYERS WIDTH]
       make_tiny_models.py diffusion MANIFEST_TSV OUT_DIR
       make_tiny_models.py lora MANIFEST_TSV OUT_GGUF [RANK]
       make_tiny_models.py esrgan - OUT_GGUF

- llm: a 2-layer, 64-wide llama whose tokenizer (and vocabulary size) is copied from one of
  llama.cpp's vocab-only files; llama-server loads it and answers chat requests (with noise).
- diffusion: the Ovis-Image-shaped set stable-diffusion.cpp runs (diffusion model, Qwen3-shaped
  text encoder, TAESD), every tensor name and shape taken from the manifest; norm weights 1,
  biases 0, other weights N(0, 0.02). Writes diffusion.gguf, llm.gguf and taesd.gguf.
- lora: a LoRA for that diffusion model, as trainers write them for FLUX-like models: a rank-RANK
  pair (`lora_down` RANK x in, `lora_up` out x RANK) for each attention and MLP matrix of its
  blocks, named `diffusion_model.<tensor>.lora_{down,up}.weight`, both N(0, 0.1): its update is
  as large as the weights, so an image made with it differs from one made without. OUT ending
  in .safetensors writes the same tensors as safetensors (what most LoRAs are shared as).
- esrgan: a 2x upscaler of Real-ESRGAN's layout (RRDBNet: conv_first, one RRDB block of three
  dense blocks, conv_body, conv_up1, conv_hr, conv_last), at the 64 features and 32 growth
  channels stable-diffusion.cpp assumes; it infers the block count and the scale from the names.
"""

import json

import sys
from pathlib import Path

import numpy as np
import gguf

STD = 0.02


def random_weight(rng, shape, name):
    if "norm" in name and (name.endswith(".weight") or name.endswith(".scale")):
        return np.ones(shape, dtype=np.float32)
    if name.endswith(".bias"):
        return np.zeros(shape, dtype=np.float32)
    return rng.normal(0.0, STD, size=shape).astype(np.float32)


def copy_field(writer, field):
    main = field.types[0]
    if main == gguf.GGUFValueType.ARRAY:
        writer.add_key_value(field.name, field.contents(), main, sub_type=field.types[-1])
    else:
        writer.add_key_value(field.name, field.contents(), main)


def make_llm(vocab_path, out_path, layers=2, width=64):
    reader = gguf.GGUFReader(vocab_path)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    n_vocab = len(tokens.data)
    n_embd, n_ff, n_layer, n_head = width, 2 * width, layers, max(4, width // 64)

    writer = gguf.GGUFWriter(out_path, "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(2048)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if width <= 64 else gguf.LlamaFileType.MOSTLY_F16)
    for name, field in reader.fields.items():
        if name.startswith("tokenizer."):
            copy_field(writer, field)

    rng = np.random.default_rng(42)
    tensors = {"token_embd.weight": (n_vocab, n_embd), "output_norm.weight": (n_embd,), "output.weight": (n_vocab, n_embd)}
    for i in range(n_layer):
        tensors.update({
            f"blk.{i}.attn_norm.weight": (n_embd,),
            f"blk.{i}.attn_q.weight": (n_embd, n_embd),
            f"blk.{i}.attn_k.weight": (n_embd, n_embd),
            f"blk.{i}.attn_v.weight": (n_embd, n_embd),
            f"blk.{i}.attn_output.weight": (n_embd, n_embd),
            f"blk.{i}.ffn_norm.weight": (n_embd,),
            f"blk.{i}.ffn_gate.weight": (n_ff, n_embd),
            f"blk.{i}.ffn_up.weight": (n_ff, n_embd),
            f"blk.{i}.ffn_down.weight": (n_embd, n_ff),
        })
    # Wide models (benchmarks) are stored as f16 to halve their size.
    dtype = np.float32 if width <= 64 else np.float16
    for name, shape in tensors.items():
        data = random_weight(rng, shape, name)
        writer.add_tensor(name, data if data.ndim == 1 else data.astype(dtype))
    write(writer)


def read_manifest(manifest_path):
    """The manifest's tensors by file role, in order: (name, shape, dtype)."""
    files = {}
    for line in Path(manifest_path).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        role, name, shape, dtype = line.split("\t")
        files.setdefault(role, []).append((name, tuple(int(d) for d in shape.split("x")), dtype))
    return files


def make_diffusion(manifest_path, out_dir):
    files = read_manifest(manifest_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for seed, (role, tensors) in enumerate(sorted(files.items())):
        rng = np.random.default_rng(1000 + seed)
        writer = gguf.GGUFWriter(out_dir / f"{role}.gguf", f"tiny-{role}")
        for name, shape, dtype in tensors:
            data = random_weight(rng, shape, name)
            if dtype == "F16":
                writer.add_tensor(name, data.astype(np.float16))
            elif dtype == "F32":
                writer.add_tensor(name, data)
            else:
                qtype = gguf.GGMLQuantizationType[dtype]
                writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        write(writer)


LORA_TARGETS = ("_attn.qkv.", "_attn.proj.", "_mlp.", ".linear1.", ".linear2.")


def make_lora(manifest_path, out_path, rank=4):
    rng = np.random.default_rng(2000)
    tensors = {}
    for name, dims, _ in read_manifest(manifest_path)["diffusion"]:
        if len(dims) != 2 or not any(t in name for t in LORA_TARGETS):
            continue
        base = "diffusion_model." + name.removesuffix(".weight")
        out_features, in_features = dims
        down = rng.normal(0.0, 0.1, size=(rank, in_features)).astype(np.float32)
        up = rng.normal(0.0, 0.1, size=(out_features, rank)).astype(np.float32)
        tensors[f"{base}.lora_down.weight"] = down
        tensors[f"{base}.lora_up.weight"] = up
    if str(out_path).endswith(".safetensors"):
        write_safetensors(tensors, out_path)
        return
    writer = gguf.GGUFWriter(out_path, "tiny-lora")
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    write(writer)


def make_esrgan(_, out_path):
    rng = np.random.default_rng(3000)
    writer = gguf.GGUFWriter(out_path, "tiny-esrgan")
    features, growth = 64, 32

    def conv(name, out_channels, in_channels):
        weight = rng.normal(0.0, STD, size=(out_channels, in_channels, 3, 3))
        writer.add_tensor(f"{name}.weight", weight.astype(np.float16))
        writer.add_tensor(f"{name}.bias", np.zeros(out_channels, dtype=np.float32))

    conv("conv_first", features, 3)
    for dense in (1, 2, 3):
        for k in range(1, 6):
            conv(f"body.0.rdb{dense}.conv{k}", features if k == 5 else growth, features + (k - 1) * growth)
    for name in ("conv_body", "conv_up1", "conv_hr"):
        conv(name, features, features)
    conv("conv_last", 3, features)
    write(writer)


def write_safetensors(tensors, out_path):
    """The safetensors layout: 8 bytes of header length, the JSON header, the tensors' bytes."""
    header, offset = {}, 0
    for name, data in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(data.shape), "data_offsets": [offset, offset + data.nbytes]}
        offset += data.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(out_path, "wb") as out:
        out.write(len(text).to_bytes(8, "little"))
        out.write(text)
        for data in tensors.values():
            out.write(data.astype("<f4").tobytes())


def write(writer):
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    kind, source, out = sys.argv[1:4]
    extra = [int(a) for a in sys.argv[4:]]
    makers = {"llm": make_llm, "diffusion": make_diffusion, "lora": make_lora, "esrgan": make_esrgan}
    makers[kind](source, out, *extra)
