"""Drive a mock from tests and benchmarks: the shared interface, and its HTTP client."""

from __future__ import annotations

import dataclasses
import time
from types import TracebackType
from typing import Any

import httpx

from llmpool.dev.mock_llm.state import BadConfig, Conflict, ContainerSpec, MockError, UnknownContainer

__all__ = ["MockControl", "MockDriver"]


class MockDriver:
    """What MockLLM (in-process) and MockControl (over HTTP) both offer."""

    @property
    def backend_url(self) -> str:
        """Base URL of the control server (TT-Studio backend + /_mock/)."""
        raise NotImplementedError

    def containers(self) -> list[dict[str, Any]]:
        """Every container: name, deploy_id, url, port, listening, spec, config, stats."""
        raise NotImplementedError

    def describe(self, name: str) -> dict[str, Any]:
        """One container's description (as in containers())."""
        raise NotImplementedError

    def add_container(self, spec: ContainerSpec) -> dict[str, Any]:
        """Start a new container, list it in the backend, and return its description."""
        raise NotImplementedError

    def remove_container(self, name: str) -> None:
        """Stop a container and de-list it."""
        raise NotImplementedError

    def configure(self, name: str, **knobs: Any) -> dict[str, Any]:
        """Change knobs (ttft, tokens_per_second, reply, fault, ...) and return them all."""
        raise NotImplementedError

    def config(self, name: str) -> dict[str, Any]:
        """A container's current knobs."""
        raise NotImplementedError

    def stats(self, name: str) -> dict[str, Any]:
        """requests, chat_requests, by_status, in_flight, peak_in_flight, last_authorization,
        last_body and records (the last 1000 requests)."""
        raise NotImplementedError

    def reset(self, name: str) -> None:
        """Clear a container's stats."""
        raise NotImplementedError

    def release(self, name: str) -> dict[str, Any]:
        """Answers waiting for a token (a long ttft) get it now: {"released": calls in flight}."""
        raise NotImplementedError

    def set_backend_fault(self, fault: str) -> None:
        """Make /models/deployed/ answer normally (none), error500, bad_json, or hang."""
        raise NotImplementedError

    def set_fault(self, name: str, fault: str, *, requests: int | None = None,
                  seconds: float | None = None) -> dict[str, Any]:
        """Play `fault` for the next `requests` requests, for `seconds`, or until changed."""
        return self.configure(name, fault=fault, fault_requests=requests, fault_seconds=seconds)

    def url(self, name: str) -> str:
        """Base URL of a container, e.g. http://127.0.0.1:7000."""
        return str(self.describe(name)["url"])

    def port(self, name: str) -> int:
        """The port a container listens on (kept while it refuses)."""
        return int(self.describe(name)["port"])

    def names(self) -> list[str]:
        """The containers' names, in the order they were added."""
        return [c["name"] for c in self.containers()]


_ERRORS: dict[int, type[MockError]] = {400: BadConfig, 404: UnknownContainer, 409: Conflict}


class MockControl(MockDriver):
    """MockDriver over HTTP, for a mock running in another process (`llmpool mock-llm`)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self._base, timeout=timeout)

    @property
    def backend_url(self) -> str:
        return self._base

    def wait_ready(self, timeout: float = 10.0) -> MockControl:
        """Block until the control server answers (a mock process just started), or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._http.get("/_mock/containers", timeout=1.0).raise_for_status()
                return self
            except httpx.HTTPError as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no mock answered at {self._base} in {timeout}s") from exc
                time.sleep(0.05)

    def containers(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/_mock/containers")["containers"])

    def describe(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/_mock/containers/{name}")

    def add_container(self, spec: ContainerSpec) -> dict[str, Any]:
        return self._request("POST", "/_mock/containers", dataclasses.asdict(spec))

    def remove_container(self, name: str) -> None:
        self._request("DELETE", f"/_mock/containers/{name}")

    def configure(self, name: str, **knobs: Any) -> dict[str, Any]:
        return self._request("POST", f"/_mock/containers/{name}/config", knobs)

    def config(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/_mock/containers/{name}/config")

    def stats(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/_mock/containers/{name}/stats")

    def reset(self, name: str) -> None:
        self._request("POST", f"/_mock/containers/{name}/reset")

    def release(self, name: str) -> dict[str, Any]:
        return self._request("POST", f"/_mock/containers/{name}/release")

    def set_backend_fault(self, fault: str) -> None:
        self._request("POST", "/_mock/backend", {"fault": fault})

    def close(self) -> None:
        """Close the HTTP client."""
        self._http.close()

    def __enter__(self) -> MockControl:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 ) -> dict[str, Any]:
        response = self._http.request(method, path, json=body)
        if response.status_code in _ERRORS:
            raise _ERRORS[response.status_code](response.json().get("error", response.text))
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer
