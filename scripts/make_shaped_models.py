"""Writes tiny random-weights models of the shapes whose memory llama.cpp lays out differently,
deterministically (fixed seeds), for the estimates and their tests:

- tiny-swa.gguf: a 6-layer 256-wide Gemma 3 with sliding-window attention over 128 tokens
  (its period of six makes layers 0-4 slide and layer 5 attend to all);
- tiny-moe.gguf: a 2-layer 64-wide llama whose FFN is 8 experts behind a router, 2 used a token.

Both take their tokenizer from one of llama.cpp's vocab-only files.

usage: make_shaped_models.py VOCAB_GGUF OUT_DIR
"""

import sys
from pathlib import Path

import gguf
import numpy as np

from make_tiny_models import copy_field, random_weight, write


def llm_writer(reader, out_path, arch, name, n_embd, n_layer, n_head, n_ff, file_type):
    writer = gguf.GGUFWriter(out_path, arch)
    writer.add_name(name)
    writer.add_context_length(8192)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(reader.fields["tokenizer.ggml.tokens"].data))
    writer.add_file_type(file_type)
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            copy_field(writer, field)
    return writer


def add_tensors(writer, tensors, rng, dtype):
    for name, shape in tensors.items():
        data = random_weight(rng, shape, name)
        writer.add_tensor(name, data if data.ndim == 1 else data.astype(dtype))
    write(writer)


def make_shaped(vocab_path, out_dir):
    reader = gguf.GGUFReader(vocab_path)
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # Gemma 3: 64-wide heads with their own norms, norms after attention and the FFN, the output
    # tied to the token embeddings.
    n_embd, n_layer, n_head, n_ff = 256, 6, 4, 512
    head = n_embd // n_head
    writer = llm_writer(reader, out_dir / "tiny-swa.gguf", "gemma3", "tiny-random-gemma3", n_embd, n_layer, n_head, n_ff,
                        gguf.LlamaFileType.MOSTLY_F16)
    writer.add_key_length(head)
    writer.add_value_length(head)
    writer.add_sliding_window(128)
    tensors = {"token_embd.weight": (n_vocab, n_embd), "output_norm.weight": (n_embd,)}
    for i in range(n_layer):
        tensors.update({
            f"blk.{i}.attn_norm.weight": (n_embd,),
            f"blk.{i}.attn_q.weight": (n_embd, n_embd),
            f"blk.{i}.attn_k.weight": (n_embd, n_embd),
            f"blk.{i}.attn_v.weight": (n_embd, n_embd),
            f"blk.{i}.attn_q_norm.weight": (head,),
            f"blk.{i}.attn_k_norm.weight": (head,),
            f"blk.{i}.attn_output.weight": (n_embd, n_embd),
            f"blk.{i}.post_attention_norm.weight": (n_embd,),
            f"blk.{i}.ffn_norm.weight": (n_embd,),
            f"blk.{i}.ffn_gate.weight": (n_ff, n_embd),
            f"blk.{i}.ffn_up.weight": (n_ff, n_embd),
            f"blk.{i}.ffn_down.weight": (n_embd, n_ff),
            f"blk.{i}.post_ffw_norm.weight": (n_embd,),
        })
    add_tensors(writer, tensors, np.random.default_rng(43), np.float16)

    # A Mixtral-shaped llama: each layer's FFN is 8 experts behind a router, 2 used a token.
    n_embd, n_layer, n_head, n_ff, n_expert = 64, 2, 4, 128, 8
    writer = llm_writer(reader, out_dir / "tiny-moe.gguf", "llama", "tiny-random-moe", n_embd, n_layer, n_head, n_ff,
                        gguf.LlamaFileType.ALL_F32)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_expert_count(n_expert)
    writer.add_expert_used_count(2)
    tensors = {"token_embd.weight": (n_vocab, n_embd), "output_norm.weight": (n_embd,), "output.weight": (n_vocab, n_embd)}
    for i in range(n_layer):
        tensors.update({
            f"blk.{i}.attn_norm.weight": (n_embd,),
            f"blk.{i}.attn_q.weight": (n_embd, n_embd),
            f"blk.{i}.attn_k.weight": (n_embd, n_embd),
            f"blk.{i}.attn_v.weight": (n_embd, n_embd),
            f"blk.{i}.attn_output.weight": (n_embd, n_embd),
            f"blk.{i}.ffn_norm.weight": (n_embd,),
            f"blk.{i}.ffn_gate_inp.weight": (n_expert, n_embd),
            f"blk.{i}.ffn_gate_exps.weight": (n_expert, n_ff, n_embd),
            f"blk.{i}.ffn_up_exps.weight": (n_expert, n_ff, n_embd),
            f"blk.{i}.ffn_down_exps.weight": (n_expert, n_embd, n_ff),
        })
    add_tensors(writer, tensors, np.random.default_rng(44), np.float32)


if __name__ == "__main__":
    make_shaped(*sys.argv[1:3])
