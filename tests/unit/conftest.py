"""tests/unit starts no process: a test that does belongs in tests/integration.

Every way Python starts one (subprocess, multiprocessing, os.fork, os.posix_spawn, os.system) is
refused here while a unit test runs, so a unit test that tries fails at once with this reason.
"""

from __future__ import annotations

import _posixsubprocess  # type: ignore[import-not-found]  # what subprocess and multiprocessing call
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.unit.raw_server import Behaviour, RawServer

REASON = "tests/unit starts no process; a test that needs one belongs in tests/integration"


def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError(REASON)


@pytest.fixture(autouse=True)
def no_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_posixsubprocess, "fork_exec", _refuse)
    if hasattr(subprocess, "_fork_exec"):  # Python >= 3.11 keeps its own reference
        monkeypatch.setattr(subprocess, "_fork_exec", _refuse)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, _refuse)
    yield


@pytest.fixture
def serve() -> Iterator[Callable[[Behaviour], RawServer]]:
    """Start raw servers (threads, not processes); every one is closed after the test."""
    servers: list[RawServer] = []

    def start(behaviour: Behaviour) -> RawServer:
        servers.append(RawServer(behaviour))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
