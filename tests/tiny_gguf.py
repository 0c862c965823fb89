"""A tiny llama-architecture GGUF model for the real-server test: seeded random weights, ~250 KB.

    path = write_tiny_gguf(tmp_path / "tiny.gguf")   # the same bytes on every run

What llama.cpp needs to load and run it: the llama hyper-parameters, a GPT-2-style byte-level BPE
vocabulary (every byte a token, a few merges, BOS/EOS as control tokens) and a Jinja chat template,
which llama-cpp-python's server uses for /v1/chat/completions.

The weights are random, so the text is gibberish, but two properties are built in because the test
needs them: the model never emits EOS (every answer runs to max_tokens, so an empty answer can only
come from the server or llmpool, never from the model) and emits only printable ASCII (every token
is visible text, streamed as a chunk of its own; a lone byte of a multi-byte UTF-8 character would
decode to nothing). Dimension 0 of every token embedding is a constant that dominates the residual
stream, so after the final RMS norm that dimension is large and positive; the output rows of the
banned tokens weigh it with a large negative number.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

__all__ = ["BOS_ID", "EOS_ID", "CHAT_TEMPLATE", "MODEL_NAME", "TOKENS", "write_tiny_gguf"]

MODEL_NAME = "llmpool-tiny-llama"
SEED = 13

N_EMBD = 64
N_LAYERS = 2
N_HEADS = 4
N_FF = 128
CONTEXT = 2048  # llama-cpp-python's server default n_ctx: no warning that it exceeds training

BOS, EOS = "<s>", "</s>"
MERGES = ["Ġ t", "h e", "i n", "e r", "a n", "o n", "Ġt he"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

BANNED_WEIGHT = -10.0  # on the dominant dimension: a logit tens below every allowed token's


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table: byte b is the token text _byte_symbols()[b]."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


BYTE_SYMBOLS = _byte_symbols()
TOKENS = [BOS, EOS, *BYTE_SYMBOLS, *(m.replace(" ", "") for m in MERGES)]
BOS_ID, EOS_ID = 0, 1


def _allowed(token_id: int) -> bool:
    """Whether the model may emit this token: printable ASCII bytes but "<", and the merges.

    Not "<": llama-cpp-python holds back text that may be the start of the stop string "</s>" and
    sends it later in one chunk with the next tokens; without it every token is a chunk of its own.
    """
    if token_id in (BOS_ID, EOS_ID):
        return False
    if token_id < 2 + 256:
        byte = token_id - 2
        return 0x20 <= byte <= 0x7E and byte != ord("<")
    return True


def _weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Tensor name -> array, numpy shape (rows = output features, columns = input features)."""
    n_vocab = len(TOKENS)

    def matrix(rows: int, cols: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float16)

    embd = rng.standard_normal((n_vocab, N_EMBD)) * 0.1
    embd[:, 0] = 1.0  # the dominant dimension (module docstring)
    output = rng.standard_normal((n_vocab, N_EMBD)) * 0.3
    output[:, 0] = [0.0 if _allowed(t) else BANNED_WEIGHT for t in range(n_vocab)]
    tensors: dict[str, np.ndarray] = {
        "token_embd.weight": embd.astype(np.float16),
        "output_norm.weight": np.ones(N_EMBD, dtype=np.float32),
        "output.weight": output.astype(np.float16),
    }
    for i in range(N_LAYERS):
        blk = f"blk.{i}"
        tensors.update({
            f"{blk}.attn_norm.weight": np.ones(N_EMBD, dtype=np.float32),
            f"{blk}.attn_q.weight": matrix(N_EMBD, N_EMBD, 0.02),
            f"{blk}.attn_k.weight": matrix(N_EMBD, N_EMBD, 0.02),
            f"{blk}.attn_v.weight": matrix(N_EMBD, N_EMBD, 0.02),
            f"{blk}.attn_output.weight": matrix(N_EMBD, N_EMBD, 0.02),
            f"{blk}.ffn_norm.weight": np.ones(N_EMBD, dtype=np.float32),
            f"{blk}.ffn_gate.weight": matrix(N_FF, N_EMBD, 0.02),
            f"{blk}.ffn_up.weight": matrix(N_FF, N_EMBD, 0.02),
            f"{blk}.ffn_down.weight": matrix(N_EMBD, N_FF, 0.02),
        })
    return tensors


def write_tiny_gguf(path: Path) -> Path:
    """Write the model to `path` (seeded: the same bytes every time) and return `path`."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(MODEL_NAME)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEADS)
    writer.add_head_count_kv(N_HEADS)
    writer.add_rope_dimension_count(N_EMBD // N_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(TOKENS)
    control, normal = gguf.TokenType.CONTROL, gguf.TokenType.NORMAL
    writer.add_token_types([control if t in (BOS_ID, EOS_ID) else normal for t in range(len(TOKENS))])
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)

    for name, array in _weights(np.random.default_rng(SEED)).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
