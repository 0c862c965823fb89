"""bench/side_by_side.py: the smoke run's scenarios in forked children, printed in order, failures named."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from bench.side_by_side import run_side_by_side


def _scenario(name: str) -> int:
    """A stand-in scenario: `slow` ends last, `broken` raises, `fails` exits 1."""
    if name == "slow":
        time.sleep(0.5)
    if name == "broken":
        raise RuntimeError("scenario broke")
    print(f"{name} ran in {os.getpid()}")
    return 1 if name == "fails" else 0


def test_output_in_order_failures_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failed = run_side_by_side(["slow", "fast", "broken", "fails"], _scenario, results=tmp_path, at_once=4)
    out = capsys.readouterr().out
    assert failed == ["broken", "fails"]
    # The slow one ended last but is printed first: the log reads as a sequential run's.
    assert out.index("slow ran") < out.index("fast ran") < out.index("RuntimeError: scenario broke")
    assert f"ran in {os.getpid()}" not in out  # each ran in its own process
    for name in ("slow", "fast", "broken", "fails"):
        assert f"{name}: " in out and "s CPU" in out
        assert (tmp_path / f"{name}.log").exists()


def test_at_once_bounds_the_children_running(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()

    def one(name: str) -> int:
        (stamps / f"{name}.start").write_text(str(time.monotonic()))
        time.sleep(0.3)
        (stamps / f"{name}.end").write_text(str(time.monotonic()))
        return 0

    names = ["a", "b", "c", "d"]
    assert run_side_by_side(names, one, results=tmp_path, at_once=2) == []
    spans = [(float((stamps / f"{n}.start").read_text()), float((stamps / f"{n}.end").read_text())) for n in names]
    most = max(sum(1 for s, e in spans if s <= at < e) for at, _ in spans)
    assert most == 2  # never more than two at once, and two did run together


class _Interrupted(Exception):
    pass


def test_interrupted_parent_stops_children_through_their_finally(tmp_path: Path) -> None:
    """The parent interrupted (a test's timeout, Ctrl-C): each running child gets SIGTERM at once and
    unwinds, so the finally blocks that stop a scenario's workers, mocks and Redis run."""

    def hangs(name: str) -> int:
        try:
            (tmp_path / f"{name}.running").touch()
            time.sleep(60)
            return 0
        finally:
            (tmp_path / f"{name}.cleaned").write_text(str(time.monotonic()))

    def interrupt(*_: object) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    started = time.monotonic()
    try:
        # Interrupt once both children run (forked children do not inherit the timer).
        signal.setitimer(signal.ITIMER_REAL, 2.0)
        with pytest.raises(_Interrupted):
            run_side_by_side(["one", "two"], hangs, results=tmp_path, at_once=2)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert (tmp_path / "one.running").exists() and (tmp_path / "two.running").exists()
    assert (tmp_path / "one.cleaned").exists() and (tmp_path / "two.cleaned").exists()
    assert time.monotonic() - started < 10  # stopped together, not after the children's 60 s sleep
