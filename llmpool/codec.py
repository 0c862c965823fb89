"""Decoding what redis-py returns (bytes, or str with decode_responses) into text."""

from __future__ import annotations

from typing import Any

__all__ = ["as_text"]


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
