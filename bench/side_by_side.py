"""Scenarios run side by side, each in its own forked process (the smoke run).

A quick scenario spends most of its wall time waiting (processes starting, a mock holding calls,
a rate-limit period passing), not computing, so several at once finish in a fraction of the time
one after another takes. Only the smoke run does this: its figures are not compared, while a full
run's must not share the machine with another scenario. Every scenario module is imported once,
before the forks, so no child pays for the imports again (matplotlib, Celery: about a second of
CPU each). Each child runs its scenario as a lone `python -m bench <scenario>` would (its JSON,
table and plots); its output goes to <results>/<scenario>.log and is printed whole, in SCENARIOS
order, once it has ended, so the log reads as a sequential run's.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["run_side_by_side"]


@dataclass
class _Child:
    name: str
    log: Path
    pid: int = 0
    code: int | None = None  # its exit code, once it has ended
    cpu_s: float = 0.0  # CPU it and the processes it waited for (workers, mocks, Redis) used

    def start(self, run_one: Callable[[str], int]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()  # nothing buffered in the parent is written twice
        self.pid = os.fork()
        if self.pid:
            return
        code = 1
        try:
            os.setsid()  # its own group: stopping it (below) takes what it started with it
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # unwinds: finally blocks run
            fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            # Python's own streams too, whatever they were (a test's capture): both to the log.
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115  # lives until os._exit
            sys.stderr = sys.stdout
            code = run_one(self.name)
        except BaseException:  # SystemExit from SIGTERM included: the scenario's finally blocks have run
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def started(self) -> bool:
        return self.pid != 0

    def done(self) -> bool:
        if not self.pid or self.code is not None:
            return self.code is not None
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)  # wait4: its own rusage
        if pid == 0:
            return False
        self.code = os.waitstatus_to_exitcode(status)
        self.cpu_s = usage.ru_utime + usage.ru_stime
        return True

    def signal(self, sig: int) -> None:
        if self.pid and not self.done():
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass


def _stop(children: list[_Child], grace: float = 30.0) -> None:
    """SIGTERM to every child at once (SystemExit there: each scenario's finally blocks stop the
    workers, mocks and Redis servers it started), SIGKILL to any still running after `grace` s."""
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(c.started() and not c.done() for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    for child in children:
        child.signal(signal.SIGKILL)
        if child.started() and child.code is None:
            os.waitpid(child.pid, 0)


def run_side_by_side(names: list[str], run_one: Callable[[str], int], *, results: Path, at_once: int) -> list[str]:
    """`run_one(name)` (an exit code) for each of `names` in forked children, at most `at_once` at a
    time; each one's output printed in order; the names that failed."""
    children = [_Child(name, results / f"{name}.log") for name in names]
    failed = []
    try:
        for child in children:  # printed in order: wait for each while the others run
            while not child.done():
                running = sum(1 for c in children if c.started() and not c.done())
                for waiting in [c for c in children if not c.started()][:max(0, at_once - running)]:
                    waiting.start(run_one)
                time.sleep(0.1)
            sys.stdout.write(child.log.read_text(errors="replace"))
            print(f"{child.name}: {child.cpu_s:.0f} s CPU (its processes), side by side with up to "
                  f"{min(at_once, len(names)) - 1} others", flush=True)
            if child.code != 0:
                failed.append(child.name)
    finally:
        _stop(children)
    return failed
