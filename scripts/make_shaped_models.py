"""Writes tiny random-weights models of the shapes whose memory llama.cpp lays out differently,
deterministically (fixed seeds), for the estimates and their tests:

- tiny-swa.gguf: a 6-layer 256-wide Gemma 3 with sliding-window attention over 128 tokens
  (its period of six makes layers 0-4 slide and layer 5 attend to all);
- tiny-moe.gguf: a 2-layer 64-wide llama whose FFN is 8 experts behind a router, 2 used a token;
- tiny-mmproj.gguf: a vision projector for the chat model, shaped as Gemma 3's (a SigLIP encoder
  of 2 layers, 64 wide, over a 64-pixel image of 16-pixel patches, pooled 2 × 2 into 4 tokens and
  projected into the chat model's embedding width; its image markers are plain text, where
  SmolVLM's idefics3 needs tokens the chat model's vocabulary lacks);
- tiny-draft.gguf: a 2-layer 64-wide llama with the chat model's tokenizer, a draft model for it;
- tiny-reranker.gguf: a 2-layer 64-wide BERT with a classification head and rank pooling (as
  bge-reranker is converted), over the WordPiece vocabulary of llama.cpp's ggml-vocab-bert-bge.gguf.

The first two take their tokenizer from one of llama.cpp's vocab-only files.

usage: make_shaped_models.py VOCAB_GGUF CHAT_GGUF OUT_DIR BERT_VOCAB_GGUF
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


def llama_block(i, n_embd, ffn):
    """Block i of a llama: its attention and norms, and `ffn`, its feed-forward tensors by name."""
    tensors = {
        f"blk.{i}.attn_norm.weight": (n_embd,),
        f"blk.{i}.attn_q.weight": (n_embd, n_embd),
        f"blk.{i}.attn_k.weight": (n_embd, n_embd),
        f"blk.{i}.attn_v.weight": (n_embd, n_embd),
        f"blk.{i}.attn_output.weight": (n_embd, n_embd),
        f"blk.{i}.ffn_norm.weight": (n_embd,),
    }
    tensors.update({f"blk.{i}.{name}.weight": shape for name, shape in ffn.items()})
    return tensors


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
        tensors.update(llama_block(i, n_embd, {
            "ffn_gate_inp": (n_expert, n_embd),
            "ffn_gate_exps": (n_expert, n_ff, n_embd),
            "ffn_up_exps": (n_expert, n_ff, n_embd),
            "ffn_down_exps": (n_expert, n_embd, n_ff),
        }))
    add_tensors(writer, tensors, np.random.default_rng(44), np.float32)


def field_value(reader, key):
    return reader.fields[key].contents()


def make_for_chat(chat_path, out_dir):
    chat = gguf.GGUFReader(chat_path)
    arch = field_value(chat, "general.architecture")
    text_embd = field_value(chat, f"{arch}.embedding_length")
    out_dir = Path(out_dir)

    # The projector: patches embedded by a 16x16 convolution, 2 pre-norm transformer layers with
    # biases, a final norm, then 2x2 neighbouring patches averaged, normed and projected.
    n_embd, n_layer, n_head, n_ff, image, patch, merge = 64, 2, 2, 128, 64, 16, 2
    writer = gguf.GGUFWriter(out_dir / "tiny-mmproj.gguf", "clip")
    writer.add_name("tiny-random-gemma3-mmproj")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_string("clip.projector_type", "gemma3")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.use_gelu", True)
    for key, value in {"embedding_length": n_embd, "feed_forward_length": n_ff, "block_count": n_layer,
                       "attention.head_count": n_head, "projection_dim": text_embd, "image_size": image,
                       "patch_size": patch, "projector.scale_factor": merge}.items():
        writer.add_uint32(f"clip.vision.{key}", value)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    tensors = {
        "v.patch_embd.weight": (n_embd, 3, patch, patch),
        "v.patch_embd.bias": (n_embd,),
        "v.position_embd.weight": ((image // patch) ** 2, n_embd),
        "v.post_ln.weight": (n_embd,),
        "v.post_ln.bias": (n_embd,),
        "mm.soft_emb_norm.weight": (n_embd,),
        "mm.input_projection.weight": (n_embd, text_embd),
    }
    for i in range(n_layer):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors.update({f"v.blk.{i}.{name}.weight": (n_embd, n_embd), f"v.blk.{i}.{name}.bias": (n_embd,)})
        tensors.update({
            f"v.blk.{i}.ln1.weight": (n_embd,), f"v.blk.{i}.ln1.bias": (n_embd,),
            f"v.blk.{i}.ln2.weight": (n_embd,), f"v.blk.{i}.ln2.bias": (n_embd,),
            f"v.blk.{i}.ffn_up.weight": (n_ff, n_embd), f"v.blk.{i}.ffn_up.bias": (n_ff,),
            f"v.blk.{i}.ffn_down.weight": (n_embd, n_ff), f"v.blk.{i}.ffn_down.bias": (n_embd,),
        })
    add_tensors(writer, tensors, np.random.default_rng(45), np.float32)

    # The draft: the chat model's tokenizer (llama.cpp requires the same vocabulary) on 2 layers.
    n_embd, n_layer, n_head, n_ff = 64, 2, 4, 128
    writer = llm_writer(chat, out_dir / "tiny-draft.gguf", "llama", "tiny-random-draft", n_embd, n_layer, n_head, n_ff,
                        gguf.LlamaFileType.ALL_F32)
    writer.add_rope_dimension_count(n_embd // n_head)
    n_vocab = len(chat.fields["tokenizer.ggml.tokens"].data)
    tensors = {"token_embd.weight": (n_vocab, n_embd), "output_norm.weight": (n_embd,)}
    for i in range(n_layer):
        tensors.update(llama_block(i, n_embd, {
            "ffn_gate": (n_ff, n_embd),
            "ffn_up": (n_ff, n_embd),
            "ffn_down": (n_embd, n_ff),
        }))
    add_tensors(writer, tensors, np.random.default_rng(46), np.float32)


def make_reranker(vocab_path, out_dir):
    reader = gguf.GGUFReader(vocab_path)
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    n_embd, n_layer, n_head, n_ff, n_ctx = 64, 2, 4, 128, 512
    writer = gguf.GGUFWriter(Path(out_dir) / "tiny-reranker.gguf", "bert")
    writer.add_name("tiny-random-reranker")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_layer_norm_eps(1e-12)
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.RANK)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_vocab_size(n_vocab)
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            copy_field(writer, field)
    if "tokenizer.ggml.token_type_count" not in reader.fields:
        writer.add_token_type_count(2)
    # Added to the token embeddings, not multiplied: ggml adds f32 only, as converters keep them.
    added = {"token_types.weight": (2, n_embd), "position_embd.weight": (n_ctx, n_embd)}
    tensors = {
        "token_embd.weight": (n_vocab, n_embd),
        "token_embd_norm.weight": (n_embd,),
        "token_embd_norm.bias": (n_embd,),
        # The classification head: a dense layer over the [CLS] token, then one score.
        "cls.weight": (n_embd, n_embd),
        "cls.bias": (n_embd,),
        "cls.output.weight": (1, n_embd),
        "cls.output.bias": (1,),
    }
    for i in range(n_layer):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensors.update({f"blk.{i}.{name}.weight": (n_embd, n_embd), f"blk.{i}.{name}.bias": (n_embd,)})
        tensors.update({
            f"blk.{i}.attn_output_norm.weight": (n_embd,), f"blk.{i}.attn_output_norm.bias": (n_embd,),
            f"blk.{i}.ffn_up.weight": (n_ff, n_embd), f"blk.{i}.ffn_up.bias": (n_ff,),
            f"blk.{i}.ffn_down.weight": (n_embd, n_ff), f"blk.{i}.ffn_down.bias": (n_embd,),
            f"blk.{i}.layer_output_norm.weight": (n_embd,), f"blk.{i}.layer_output_norm.bias": (n_embd,),
        })
    rng = np.random.default_rng(47)
    for name, shape in added.items():
        writer.add_tensor(name, random_weight(rng, shape, name))
    add_tensors(writer, tensors, rng, np.float16)


if __name__ == "__main__":
    vocab, chat, out, bert_vocab = sys.argv[1:5]
    make_shaped(vocab, out)
    make_for_chat(chat, out)
    make_reranker(bert_vocab, out)
