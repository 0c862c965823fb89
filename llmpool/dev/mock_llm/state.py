"""What a mock container is (spec), how it behaves right now (knobs) and what it saw (stats)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BACKEND_FAULTS", "FAULTS", "FLAVORS", "HEALTH_FAULTS", "BadConfig", "Conflict", "ContainerSpec", "Knobs",
    "MockError", "Stats", "UnknownContainer", "deploy_id",
]

# Faults a container can play; `refuse` closes its listening socket, the rest shape answers
# (the last four, answers that never end or never fit, are described in endless.py).
FAULTS = (
    "none", "refuse", "error500", "error400", "ratelimit", "hang", "drop_mid_stream", "bad_json",
    "slow_health", "trickle", "endless_stream", "huge_body", "huge_line",
    "cut_stream", "cut_stream_eof", "validation_500",  # real servers' dialects: dialects.py
)
# The faults that also hit GET /health (the others only hit chat completions).
HEALTH_FAULTS = frozenset({"hang", "error500", "refuse", "slow_health"})
BACKEND_FAULTS = ("none", "error500", "bad_json", "hang")
# "ollama" adds Ollama's /api/tags and /api/version, drops /health (Ollama has none) and keeps
# the container out of the backend's listing (TT-Studio does not deploy Ollama).
FLAVORS = ("openai", "ollama", "llamacpp", "vllm", "lmstudio", "llama-cpp-python")  # the last four: flavors.py
RECORDS_KEPT = 1000
FLAGS = ("send_usage", "interrupt_requests")  # the knobs that are true or false


class MockError(Exception):
    """Root of the mock server's control errors."""


class UnknownContainer(MockError, LookupError):
    """No container has that name (HTTP 404)."""


class BadConfig(MockError, ValueError):
    """A knob, fault or container spec is invalid (HTTP 400)."""


class Conflict(MockError):
    """The name or the port is already taken (HTTP 409)."""


def deploy_id(name: str) -> str:
    """The 64-hex deploy id the backend lists a container under (sha256 of its name)."""
    return hashlib.sha256(name.encode()).hexdigest()


@dataclass(kw_only=True)
class Knobs:
    """How a container behaves right now; every field can be changed at run time."""

    ttft: float = 0.05                  # seconds before the first token
    tokens_per_second: float = 50.0     # 0 = no delay between tokens
    reply: str | None = None            # overrides the default "Hello from ..." text
    # Call a tool when offered: {"tool": name, "arguments": {...}, "calls": 1, "always": false} (replies.tool_reply)
    tool_script: dict[str, Any] | None = None
    send_usage: bool = True             # false: no usage chunk, no `usage` (llama-cpp-python; dialects.py)
    interrupt_requests: bool = False    # true: a new request ends running streams with [DONE] (dialects.py)
    retry_after: int = 1                # Retry-After seconds of `ratelimit`
    loading: bool = False               # llamacpp: 503 Loading model; lmstudio, ollama: not loaded (flavors.py)
    slots: int = 1                      # llamacpp: parallel slots; more chat requests wait for one
    external_running: int = 0           # vllm: other clients' requests running, added to /metrics
    external_waiting: int = 0           # vllm: other clients' requests waiting (/metrics)
    drop_after_tokens: int = 2          # tokens `drop_mid_stream` sends before aborting
    health_delay: float = 3.0           # seconds `slow_health` waits before answering
    hang_cap: float = 3600.0            # longest a `hang` (or an endless answer) lasts when the client stays
    trickle_interval: float = 0.3       # seconds between the bytes of `trickle`
    huge_bytes: int = 16 * 1024 * 1024  # size of `huge_body` and `huge_line`
    fault: str = "none"
    fault_requests: int | None = None   # requests the fault still hits; None = until changed
    fault_seconds: float | None = None  # the fault reverts to none after this long

    def to_dict(self) -> dict[str, Any]:
        """The knobs as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def merged(self, updates: dict[str, Any]) -> Knobs:
        """A copy with `updates` applied, after checking every name, type and range."""
        known = {f.name for f in dataclasses.fields(Knobs)}
        unknown = sorted(set(updates) - known)
        if unknown:
            raise BadConfig(f"unknown knob(s) {unknown}; known: {sorted(known)}")
        values = self.to_dict() | {k: _checked(k, v) for k, v in updates.items()}
        if "fault" in updates:
            # A new fault starts with its own budget, never the previous fault's leftover.
            values["fault_requests"] = values["fault_requests"] if "fault_requests" in updates else None
            values["fault_seconds"] = values["fault_seconds"] if "fault_seconds" in updates else None
        if values["fault"] == "refuse" and values["fault_requests"] is not None:
            raise BadConfig("refuse sees no requests to count: use fault_seconds instead")
        return Knobs(**values)


_NUMBER_RULES: dict[str, tuple[type, bool]] = {
    # name -> (type, None allowed)
    "ttft": (float, False), "tokens_per_second": (float, False), "health_delay": (float, False),
    "hang_cap": (float, False), "retry_after": (int, False), "drop_after_tokens": (int, False),
    "trickle_interval": (float, False), "huge_bytes": (int, False),
    "fault_requests": (int, True), "fault_seconds": (float, True),
    "slots": (int, False), "external_running": (int, False), "external_waiting": (int, False),
}


def _checked(name: str, value: Any) -> Any:
    """`value` if it suits knob `name`, else BadConfig saying why."""
    if name == "loading":
        if not isinstance(value, bool):
            raise BadConfig(f"loading must be true or false, got {value!r}")
        return value
    if name == "fault":
        if value not in FAULTS:
            raise BadConfig(f"unknown fault {value!r}; known: {list(FAULTS)}")
        return value
    if name == "tool_script":
        return _tool_script(value)
    if name in ("reply", *FLAGS):
        return _plain(name, value)
    kind, nullable = _NUMBER_RULES[name]
    if value is None and nullable:
        return None
    ok_types = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types) or value < 0:
        raise BadConfig(f"{name} must be a non-negative {kind.__name__}, got {value!r}")
    if name in ("fault_requests", "fault_seconds") and value == 0:
        raise BadConfig(f"{name} must be positive (or null for 'until changed')")
    return kind(value)


def _plain(name: str, value: Any) -> Any:
    """The knobs that are no number: reply (text or null) and the FLAGS."""
    if name in FLAGS and not isinstance(value, bool):
        raise BadConfig(f"{name} must be true or false, got {value!r}")
    if name == "reply" and value is not None and not isinstance(value, str):
        raise BadConfig("reply must be a string or null")
    return value


def _tool_script(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    calls = value.get("calls", 1) if isinstance(value, dict) else None
    if (not isinstance(value, dict) or not isinstance(value.get("tool"), str) or not value["tool"]
            or not isinstance(value.get("arguments", {}), dict) or not isinstance(value.get("always", False), bool)
            or isinstance(calls, bool) or not isinstance(calls, int) or calls < 1
            or set(value) - {"tool", "arguments", "always", "calls"}):
        raise BadConfig('tool_script must be {"tool": name, "arguments": {...}, "calls": n >= 1, "always": bool} '
                        "or null")
    return {"tool": value["tool"], "arguments": value.get("arguments", {}), "calls": calls,
            "always": value.get("always", False)}


@dataclass(kw_only=True)
class ContainerSpec(Knobs):
    """A container's identity (name, model, port, token) plus its starting knobs."""

    name: str
    model_name: str = "Llama-3.1-8B-Instruct"
    hf_model_id: str | None = None      # None: "meta-llama/{model_name}"
    model_type: str = "chat"            # non-chat types let discovery tests skip them
    port: int = 0                       # 0: a free port
    token: str | None = None            # required bearer on /v1/*; None = open
    tool_calling_enabled: bool = False
    status: str = "running"             # as listed by the backend
    health: str = "healthy"             # as listed by the backend
    flavor: str = "openai"              # "ollama": Ollama's /api/ routes too (see FLAVORS)
    quantization: str = "Q4_K_M"        # Ollama's quantization_level, LM Studio's quantization
    parameter_size: str = "8.0B"        # Ollama's parameter_size

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str) or "/" in self.name:
            raise BadConfig(f"container name must be a non-empty string without '/': {self.name!r}")
        if self.flavor not in FLAVORS:
            raise BadConfig(f"unknown flavor {self.flavor!r}; known: {list(FLAVORS)}")
        if self.hf_model_id is None:
            self.hf_model_id = f"meta-llama/{self.model_name}"
        if not isinstance(self.port, int) or not 0 <= self.port < 65536:
            raise BadConfig(f"port must be 0..65535, got {self.port!r}")
        Knobs().merged(self.knobs().to_dict())  # validates the starting knobs

    def knobs(self) -> Knobs:
        """The starting knobs of this spec."""
        return Knobs(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Knobs)})

    def identity(self) -> dict[str, Any]:
        """The non-knob fields, JSON-ready (never the token itself)."""
        knob_names = {f.name for f in dataclasses.fields(Knobs)}
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in knob_names}
        out["token"] = "set" if self.token else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerSpec:
        """Build a spec from control-API JSON, with BadConfig on unknown or wrong fields."""
        if not isinstance(data, dict):
            raise BadConfig("a container spec must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadConfig(f"unknown container field(s) {unknown}; known: {sorted(known)}")
        if "name" not in data:
            raise BadConfig("a container spec needs a name")
        try:
            return cls(**data)
        except TypeError as exc:
            raise BadConfig(str(exc)) from exc


@dataclass
class Stats:
    """What one container has seen since start or the last reset."""

    requests: int = 0
    chat_requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    peak_in_flight: int = 0
    last_authorization: str | None = None
    last_body: Any = None
    records: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECORDS_KEPT))

    def enter_chat(self) -> None:
        """Count a chat completion that has started."""
        self.chat_requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave_chat(self) -> None:
        """Count a chat completion that has ended (answered, failed or abandoned)."""
        self.in_flight -= 1

    def record(self, *, method: str, path: str, status: int, model: str | None,
               started: float) -> None:
        """Add one finished request (status 499: the client left before any answer)."""
        self.requests += 1
        self.by_status[str(status)] += 1
        self.records.append({
            "time": started, "method": method, "path": path, "status": status, "model": model,
            "duration": round(time.time() - started, 6),
        })

    def reset(self) -> None:
        """Forget everything except the requests in flight right now."""
        self.requests = self.chat_requests = 0
        self.by_status.clear()
        self.records.clear()
        self.peak_in_flight = self.in_flight
        self.last_authorization = self.last_body = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        return {
            "requests": self.requests, "chat_requests": self.chat_requests,
            "by_status": dict(self.by_status), "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight, "last_authorization": self.last_authorization,
            # Copies, so a caller holding a snapshot never sees (or makes) later changes.
            "last_body": copy.deepcopy(self.last_body), "records": [dict(r) for r in self.records],
        }
