"""The dev stack's supervisor without children: waiting for readiness, stopping early, its prefix.

With real child processes: tests/integration/test_supervisor.py.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from llmpool.dev.stack.supervisor import StackAborted, Supervisor


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    sup = Supervisor(out=io.StringIO(), color=False)
    yield sup
    sup.stop_all(timeout=1.0)


def test_wait_for_times_out_naming_what_is_missing(supervisor: Supervisor):
    with pytest.raises(StackAborted, match="api not ready after 0s: no /status") as err:
        supervisor.wait_for("api", lambda: "no /status", timeout=0.3)
    assert err.value.code == 1


def test_wait_for_stops_early_with_code_0_when_asked(supervisor: Supervisor):
    supervisor.stop_requested.set()
    with pytest.raises(StackAborted) as err:
        supervisor.wait_for("api", lambda: "no /status", timeout=30)
    assert err.value.code == 0


def test_prefix_is_colored_only_when_asked():
    colored, plain = io.StringIO(), io.StringIO()
    Supervisor(out=colored, color=True).say("hi", name="api")
    Supervisor(out=plain, color=False).say("hi", name="api")
    assert colored.getvalue().startswith("\033[") and colored.getvalue().endswith("hi\n")
    assert plain.getvalue() == "api      | hi\n"
