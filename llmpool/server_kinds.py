"""What kind of server an endpoint is, and the quantization of the model it serves. Pure.

A kind is learned from what the server already answers (discovery's /v1/models, the backend
listing), never from extra requests of its own, except llama.cpp's /props for its slots
(llmpool.discovery.openai_servers). Each server's own word on `owned_by` in /v1/models:

    vLLM "vllm", llama.cpp's server "llamacpp", llama-cpp-python "me", LM Studio
    "organization_owner", Ollama's /v1 "library"; TGI answers /info with "router".

Quantization comes from Ollama's `details.quantization_level`, else from the model id or GGUF
file name (llama-cpp-python reports a path such as /models/llama-3-8b.Q4_K_M.gguf).
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

__all__ = [
    "Kind", "KINDS", "LOAD_KINDS", "kind_from_models", "is_tgi_info", "quantization_in",
    "normal_quantization", "quantization_rank", "base_model",
]

Kind = Literal["vllm", "llamacpp", "llama-cpp-python", "ollama", "lmstudio", "tgi", "tt-studio",
               "cloud", "unknown"]
KINDS: tuple[str, ...] = get_args(Kind)
# Kinds whose server reports its own load (vLLM's /metrics, llama.cpp's /slots). TT-Studio's
# containers run vLLM, so their /metrics is read too.
LOAD_KINDS = frozenset({"vllm", "llamacpp", "tt-studio"})

OWNED_BY: dict[str, Kind] = {
    "vllm": "vllm", "llamacpp": "llamacpp", "me": "llama-cpp-python",
    "organization_owner": "lmstudio", "library": "ollama",
}

# Best first. Precision falls from the float formats through 8, 6, 5, 4, 3 and 2 bits; within
# one width the K-quants and larger variants (_L > _M > _S) keep more than the legacy _0/_1.
QUANT_ORDER = (
    "F32", "F16", "BF16", "Q8_0", "Q8_K", "Q6_K", "Q5_K_L", "Q5_K_M", "Q5_K", "Q5_1", "Q5_K_S",
    "Q5_0", "Q4_K_L", "Q4_K_M", "Q4_K", "Q4_1", "Q4_K_S", "Q4_0", "IQ4_NL", "IQ4_XS", "Q3_K_L",
    "Q3_K_M", "Q3_K", "Q3_K_S", "IQ3_M", "IQ3_S", "IQ3_XS", "IQ3_XXS", "Q2_K", "Q2_K_S", "IQ2_M",
    "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S",
)
_RANK = {name: index for index, name in enumerate(QUANT_ORDER)}
# Longest names first, so Q4_K_M is not read as Q4_K; a name must stand alone between separators
# (so "Q4_K_Mx" is nothing rather than a wrong Q4_K).
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9_])(" + "|".join(sorted(map(re.escape, QUANT_ORDER), key=len, reverse=True))
    + r")(?!_?[A-Za-z0-9])", re.IGNORECASE)
_FILE_SUFFIX = re.compile(r"\.gguf$", re.IGNORECASE)


def kind_from_models(data: Any) -> Kind:
    """The kind a /v1/models answer reveals by its entries' `owned_by`, or "unknown"."""
    entries = data.get("data") if isinstance(data, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        owner = entry.get("owned_by") if isinstance(entry, dict) else None
        if isinstance(owner, str) and owner in OWNED_BY:
            return OWNED_BY[owner]
    return "unknown"


def is_tgi_info(data: Any) -> bool:
    """Whether an /info answer is TGI's (its router names itself there)."""
    router = data.get("router") if isinstance(data, dict) else None
    return isinstance(router, str) and "text-generation" in router


def normal_quantization(value: Any) -> str | None:
    """A quantization name as QUANT_ORDER spells it, or None when it is not one we rank."""
    if not isinstance(value, str):
        return None
    upper = value.strip().upper()
    return upper if upper in _RANK else None


def quantization_in(name: str) -> str | None:
    """The quantization a model id or GGUF file name carries (last one wins), or None."""
    found = _QUANT_RE.findall(name.rsplit("/", 1)[-1])
    return normal_quantization(found[-1]) if found else None


def quantization_rank(quantization: str | None, prefer: str) -> int:
    """Sort key: lower is tried first. `prefer` "quality" puts high precision first, "speed" low.

    An unknown quantization sorts after every known one either way: nothing says it is better.
    """
    index = _RANK.get(quantization or "")
    if index is None:
        return len(QUANT_ORDER)
    return index if prefer == "quality" else len(QUANT_ORDER) - 1 - index


def base_model(name: str) -> str:
    """The model a name refers to without its quantization: endpoints equal here are one model.

    "llama3.1:8b-instruct-q8_0" and "llama3.1:8b-instruct-q4_K_M" are both "llama3.1:8b-instruct";
    "/models/llama-3-8b.Q4_K_M.gguf" is "llama-3-8b".
    """
    short = _FILE_SUFFIX.sub("", name.rsplit("/", 1)[-1] if name.endswith((".gguf", ".GGUF")) else name)
    stripped = _QUANT_RE.sub("", short)
    return re.sub(r"[-_.:]+$", "", re.sub(r"[-_.]{2,}", "-", stripped)).lower()
