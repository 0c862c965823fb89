"""The guard of tests/unit/conftest.py: every way of starting a process fails a unit test."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

STARTS: dict[str, Callable[[], object]] = {
    "subprocess": lambda: subprocess.run([sys.executable, "-c", "pass"], check=False),
    "multiprocessing (spawn)": lambda: multiprocessing.get_context("spawn").Process(target=print).start(),
    "multiprocessing (fork)": lambda: multiprocessing.get_context("fork").Process(target=print).start(),
    "os.fork": lambda: os.fork(),
    "os.system": lambda: os.system("true"),
    "os.posix_spawn": lambda: os.posix_spawn(sys.executable, [sys.executable, "-c", "pass"], os.environ),
}


@pytest.mark.parametrize("start", STARTS.values(), ids=STARTS.keys())
def test_starting_a_process_fails_the_unit_test(start: Callable[[], object]) -> None:
    with pytest.raises(AssertionError, match="tests/unit starts no process"):
        start()
