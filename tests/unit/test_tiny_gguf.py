"""The tiny GGUF model of the real-server test (tests/tiny_gguf.py), read back with the gguf package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np

from tests.tiny_gguf import BOS_ID, CHAT_TEMPLATE, EOS_ID, MODEL_NAME, TOKENS, write_tiny_gguf


def _field(reader: gguf.GGUFReader, name: str) -> Any:
    return reader.fields[name].contents()


def test_the_same_bytes_on_every_run_and_a_few_hundred_kb(tmp_path: Path) -> None:
    first = write_tiny_gguf(tmp_path / "a.gguf").read_bytes()
    second = write_tiny_gguf(tmp_path / "b.gguf").read_bytes()
    assert first == second
    assert 50_000 < len(first) < 1_000_000


def test_it_is_a_llama_with_a_byte_level_vocabulary_and_a_chat_template(tmp_path: Path) -> None:
    reader = gguf.GGUFReader(str(write_tiny_gguf(tmp_path / "m.gguf")))
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "general.name") == MODEL_NAME
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert tokens == TOKENS and len(set(tokens)) == len(tokens)
    assert (_field(reader, "tokenizer.ggml.bos_token_id"), _field(reader, "tokenizer.ggml.eos_token_id")) == (
        BOS_ID, EOS_ID)
    for merge in _field(reader, "tokenizer.ggml.merges"):
        assert merge.replace(" ", "") in TOKENS  # a merge's result is a token, as llama.cpp requires
    assert _field(reader, "tokenizer.chat_template") == CHAT_TEMPLATE
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "blk.1.ffn_down.weight"} <= names


def test_eos_and_non_ascii_tokens_cannot_win_the_sampling(tmp_path: Path) -> None:
    """The output rows of banned tokens carry the large negative weight on the dominant dimension."""
    reader = gguf.GGUFReader(str(write_tiny_gguf(tmp_path / "m.gguf")))
    output = next(t for t in reader.tensors if t.name == "output.weight")
    weights = np.asarray(output.data, dtype=np.float32).reshape(len(TOKENS), -1)
    banned = {EOS_ID, BOS_ID, 2 + ord("<"), 2 + 0x0A, 2 + 0xC3}
    assert all(weights[t, 0] < -5 for t in banned)
    assert weights[2 + ord("a"), 0] == 0 and weights[len(TOKENS) - 1, 0] == 0
