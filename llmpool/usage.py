"""Truthful token counts: the server's figures where they hold, estimates where it sent none.

llama-cpp-python's server ignores `stream_options.include_usage` (no usage chunk ever comes) and
some servers answer without `usage`, or with zeros. vLLM and llama.cpp send one content (or
tool-call) delta per generated token, so a stream's output chunks count its completion tokens; a
whole (non-stream) answer gets ~4 characters a token. The prompt gets the same estimate as the
reservation before the call. A server that reports fewer completion tokens than the output chunks
it streamed is corrected up to that count (a chunk carries at least one token) and logged. Any
figure of ours marks the usage `estimated`: [STATS], the answers' usage, the TPM settlement and
the metrics all read these figures.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from llmpool.schemas import ChatJob, Message

__all__ = ["CHARS_PER_TOKEN", "TruthfulUsage", "prompt_estimate", "text_estimate", "truthful_usage"]

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4  # English text in the Llama/GPT tokenizers; an estimate, never a promise
TOKENS_PER_MESSAGE = 4  # the chat template's role markers around each message


@dataclass(frozen=True)
class TruthfulUsage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: bool

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


def text_estimate(text: str) -> int:
    """Tokens in `text` at ~4 characters a token (rounded up: any text is at least one)."""
    return -(-len(text) // CHARS_PER_TOKEN)


def _message_chars(message: Message) -> int:
    content = message.content
    if isinstance(content, str):
        chars = len(content)
    elif isinstance(content, list):  # text parts by their text; an image or file by its JSON
        chars = sum(len(part["text"]) if isinstance(part.get("text"), str) else len(json.dumps(part))
                    for part in content)
    else:
        chars = 0
    return chars + sum(len(json.dumps(call)) for call in message.tool_calls or [])


def prompt_estimate(job: ChatJob) -> int:
    """The prompt's tokens, estimated from its messages' text."""
    chars = sum(_message_chars(m) for m in job.messages)
    return chars // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE * len(job.messages)


def _output_estimate(content: str, tool_calls: list[dict[str, Any]], chunks: int | None) -> int:
    if chunks is not None:  # streamed: one output delta per token
        return chunks
    calls = json.dumps(tool_calls) if tool_calls else ""
    return text_estimate(content) + text_estimate(calls)


def truthful_usage(reported: dict[str, int], job: ChatJob, *, content: str, tool_calls: list[dict[str, Any]],
                   chunks: int | None, endpoint: str = "?") -> TruthfulUsage:
    """The usage of one answer; `chunks` is the count of output deltas of a stream (None: not streamed)."""
    prompt, completion = reported.get("prompt_tokens", 0), reported.get("completion_tokens", 0)
    counted = _output_estimate(content, tool_calls, chunks) if content or tool_calls else 0
    estimated = False
    if completion < counted and (completion == 0 or chunks is not None):
        if completion > 0:  # a figure below what it streamed: not a rounding, a wrong count
            log.info("%s reported %d completion tokens but streamed %d output chunks; counting %d",
                     endpoint, completion, counted, counted)
        completion, estimated = counted, True
    if prompt <= 0:
        prompt, estimated = prompt_estimate(job), True
    total = reported.get("total_tokens", 0)
    if estimated or total < prompt + completion:
        total = prompt + completion
    return TruthfulUsage(prompt, completion, total, estimated)
