"""The hung-endpoint scenario's load plan and figures, shared by the llmpool and LiteLLM drivers.

Pure: a driver records one Chat per request (when it was sent, how long until its answer, who
answered); `summarize` turns them into the figures bench/hung.py prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Chat", "Plan", "percentile", "summarize"]


@dataclass(frozen=True)
class Plan:
    """Open-loop load: `rate` chats a second for `duration` s; the selected endpoint hangs for
    `hang_for` s from `hang_at` s."""

    rate: float = 8.0
    duration: float = 60.0
    hang_at: float = 20.0
    hang_for: float = 20.0

    @property
    def chats(self) -> int:
        return int(self.rate * self.duration)

    def send_at(self, index: int) -> float:
        """Seconds after the start at which chat `index` is sent."""
        return index / self.rate


@dataclass(frozen=True)
class Chat:
    sent: float  # seconds after the load started
    latency: float | None  # seconds to the whole answer; None when the chat failed
    endpoint: str = ""  # "70b" or "8b": who answered ("" when it failed)
    error: str = ""


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summarize(chats: list[Chat], plan: Plan, *, hang_started: float, hung_calls: int) -> dict[str, object]:
    """The figures of one run: completion, latency during the outage, the first healthy answer."""
    during = [c for c in chats if hang_started <= c.sent < hang_started + plan.hang_for]
    latencies = [c.latency for c in during if c.latency is not None]
    healthy_done = [c.sent + c.latency - hang_started for c in chats
                    if c.endpoint == "8b" and c.latency is not None and c.sent + c.latency >= hang_started]
    errors: dict[str, int] = {}
    for chat in chats:
        if chat.latency is None:
            errors[chat.error or "unknown"] = errors.get(chat.error or "unknown", 0) + 1
    return {
        "chats": len(chats),
        "completed": sum(1 for c in chats if c.latency is not None),
        "failed": dict(sorted(errors.items())),
        "outage_chats": len(during),
        "outage_p50_s": _rounded(percentile(latencies, 0.50)),
        "outage_p95_s": _rounded(percentile(latencies, 0.95)),
        "outage_max_s": _rounded(max(latencies, default=None)),
        "first_8b_answer_after_hang_s": _rounded(min(healthy_done, default=None)),
        "calls_to_hung_endpoint": hung_calls,
        "answered_by": {who: sum(1 for c in chats if c.endpoint == who) for who in ("70b", "8b")},
    }
