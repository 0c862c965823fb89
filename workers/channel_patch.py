"""The one way llmpool wraps a method of kombu's Redis Channel: once per process, however often the
app is made (each install runs at create_app), and the wrap named on the method it made."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis

__all__ = ["patch_channel", "patches"]

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]


def patches(method: Any) -> tuple[str, ...]:
    """The names of the wraps around `method`, innermost first."""
    return tuple(getattr(method, "_llmpool_patches", ()))


def patch_channel(attr: str, wrap: Wrap) -> None:
    """kombu_redis.Channel.<attr> replaced by wrap(<attr>), unless `wrap` already made it."""
    channel = kombu_redis.Channel
    current = getattr(channel, attr)
    if wrap.__name__ in patches(current):
        return
    wrapped = wrap(current)
    wrapped._llmpool_patches = (*patches(current), wrap.__name__)  # type: ignore[attr-defined]
    setattr(channel, attr, wrapped)
