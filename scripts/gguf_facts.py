"""Prints, as JSON, the header facts the gguf package reads from each GGUF file given.

Used by the tests to compare the library's own GGUF reader with the reference implementation.
"""

import json
import sys

import gguf


def scalar(field):
    value = field.contents()
    return value


def facts(path):
    reader = gguf.GGUFReader(path)
    fields = reader.fields
    arch = scalar(fields["general.architecture"]) if "general.architecture" in fields else None

    def get(key):
        field = fields.get(f"{arch}.{key}")
        return scalar(field) if field is not None else None

    tokens = fields.get("tokenizer.ggml.tokens")
    return {
        "architecture": arch,
        "general_name": scalar(fields["general.name"]) if "general.name" in fields else None,
        "file_type": scalar(fields["general.file_type"]) if "general.file_type" in fields else None,
        "block_count": get("block_count"),
        "context_length": get("context_length"),
        "embedding_length": get("embedding_length"),
        "feed_forward_length": get("feed_forward_length"),
        "attention_head_count": get("attention.head_count"),
        "attention_head_count_kv": get("attention.head_count_kv"),
        "vocab_size": get("vocab_size") if get("vocab_size") is not None else (len(tokens.data) if tokens else None),
        "tensor_count": len(reader.tensors),
        "kv_count": len([k for k in fields if not k.startswith("GGUF.")]),
    }


print(json.dumps({path: facts(path) for path in sys.argv[1:]}))
