"""The dev stack's supervisor, on small Python children: output, ordered stop, no orphans.

What it does without children is in tests/unit/test_supervisor.py.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from llmpool.dev.stack.supervisor import RESTART_LIMIT, StackAborted, Supervisor

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PDEATHSIG is Linux")

# A child that says hello, then on SIGTERM says goodbye and exits 0.
POLITE = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print("bye", flush=True), sys.exit(0)))
print("hello", flush=True)
while True:
    time.sleep(0.05)
"""
# A child that ignores SIGTERM.
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""
# A child that starts a grandchild in its group, then exits on SIGTERM without reaping it.
ABANDONS = """
import signal, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(f"grandchild {grandchild.pid}", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(60)
"""


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def wait_until(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def supervisor(out: io.StringIO) -> Iterator[Supervisor]:
    sup = Supervisor(out=out, color=False)
    yield sup
    sup.stop_all(timeout=1.0)


def test_output_is_prefixed_and_logged(supervisor: Supervisor, out: io.StringIO, tmp_path: Path):
    supervisor.start("alpha", py(POLITE), env=dict(os.environ), log_dir=tmp_path)
    assert wait_until(lambda: "hello" in out.getvalue())
    assert "alpha    | hello\n" in out.getvalue()
    supervisor.stop_all(timeout=2.0)
    assert (tmp_path / "alpha.log").read_text() == "hello\nbye\n"


def test_stop_all_stops_in_reverse_start_order(
    supervisor: Supervisor, out: io.StringIO, tmp_path: Path
):
    for name in ("first", "second", "third"):
        supervisor.start(name, py(POLITE), env=dict(os.environ), log_dir=tmp_path)
    assert wait_until(lambda: out.getvalue().count("hello") == 3)
    supervisor.stop_all(timeout=2.0)
    stops = [line.split()[-3] for line in out.getvalue().splitlines() if "| stopping " in line]
    assert stops == ["third", "second", "first"]
    assert all(child.exit_code == 0 for child in supervisor.children)


def test_a_child_ignoring_sigterm_is_killed(
    supervisor: Supervisor, out: io.StringIO, tmp_path: Path
):
    child = supervisor.start("stubborn", py(STUBBORN), env=dict(os.environ), log_dir=tmp_path)
    assert wait_until(lambda: "ready" in out.getvalue())
    started = time.monotonic()
    supervisor.stop_all(timeout=0.5)
    assert time.monotonic() - started < 3
    assert child.exit_code == -signal.SIGKILL


def test_a_grandchild_left_in_the_group_is_killed(
    supervisor: Supervisor, out: io.StringIO, tmp_path: Path
):
    supervisor.start("abandons", py(ABANDONS), env=dict(os.environ), log_dir=tmp_path)
    assert wait_until(lambda: "grandchild " in out.getvalue())
    pid = int(out.getvalue().split("grandchild ")[1].split()[0])
    grandchild = psutil.Process(pid)
    supervisor.stop_all(timeout=2.0)
    assert wait_until(lambda: not _alive(grandchild))


def test_watch_gives_up_on_a_child_that_keeps_exiting(
    supervisor: Supervisor, out: io.StringIO, tmp_path: Path
):
    supervisor.start("steady", py(POLITE), env=dict(os.environ), log_dir=tmp_path)
    supervisor.start("crashy", py("raise SystemExit(3)"), env=dict(os.environ), log_dir=tmp_path)
    assert supervisor.watch() == 1
    text = out.getvalue()
    assert text.count("crashy exited with code 3; restarting it") == RESTART_LIMIT
    assert f"crashy exited {RESTART_LIMIT + 1} times within 60s; giving up" in text


def test_watch_restarts_a_child_that_exits_on_its_own(
    supervisor: Supervisor, out: io.StringIO, tmp_path: Path
):
    marker = tmp_path / "ran-once"
    once = f"""
    import pathlib, time
    marker = pathlib.Path({str(marker)!r})
    if not marker.exists():
        marker.touch()
        raise SystemExit(4)
    print("second run", flush=True)
    time.sleep(60)
    """
    child = supervisor.start("flaky", py(once), env=dict(os.environ), log_dir=tmp_path)
    first_pid = child.process.pid  # type: ignore[union-attr]
    threading.Timer(3.0, supervisor.stop_requested.set).start()
    assert supervisor.watch() == 0
    assert "flaky exited with code 4; restarting it" in out.getvalue()
    assert "second run" in out.getvalue()
    assert child.process is not None and child.process.pid != first_pid and child.exit_code is None


def test_watch_returns_0_after_a_requested_stop(supervisor: Supervisor, tmp_path: Path):
    supervisor.start("steady", py(POLITE), env=dict(os.environ), log_dir=tmp_path)
    supervisor.stop_requested.set()
    assert supervisor.watch() == 0


def test_wait_for_stops_early_when_a_child_dies(supervisor: Supervisor, tmp_path: Path):
    supervisor.start("crashy", py("raise SystemExit(5)"), env=dict(os.environ), log_dir=tmp_path)
    with pytest.raises(StackAborted, match="crashy exited with code 5"):
        supervisor.wait_for("api", lambda: "no /status", timeout=30)


@linux_only
def test_children_die_when_the_supervisor_is_sigkilled(tmp_path: Path):
    script = f"""
    import os, sys
    from pathlib import Path
    from llmpool.dev.stack.supervisor import Supervisor
    sup = Supervisor()
    child = sup.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                      env=dict(os.environ), log_dir=Path({str(tmp_path)!r}))
    print(child.process.pid, flush=True)
    sup.watch()
    """
    parent = subprocess.Popen(py(script), stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        sleeper = psutil.Process(int(parent.stdout.readline()))
        parent.kill()
        parent.wait(5)
        assert wait_until(lambda: not _alive(sleeper), timeout=5)
    finally:
        parent.kill()
        parent.wait()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
