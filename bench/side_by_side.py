"""Scenarios run side by side, each in its own `python -m bench <scenario>` process (the smoke run).

A quick scenario spends most of its wall time waiting (processes starting, a mock holding calls,
a rate-limit period passing), not computing, so a few at once finish in a fraction of the time one
after another takes. Only the smoke run does this: its figures are not compared, while a full
run's must not share the machine with another scenario. Each child writes its JSON, table and
plots as a lone run would; its output goes to <results>/<scenario>.log and is printed whole, in
SCENARIOS order, once it has ended, so the log reads as a sequential run's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["run_side_by_side"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class _Child:
    name: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    code: int | None = None  # its exit code, once it has ended
    cpu_s: float = 0.0  # CPU it and the processes it waited for (workers, mocks, Redis) used


    def start(self, quick: bool, results: Path) -> None:
        argv = [sys.executable, "-m", "bench", self.name, "--results", str(results), "--no-summary"]
        with self.log.open("wb") as out:
            # Its own session: stopping it (below) takes its whole group with it.
            self.proc = subprocess.Popen(argv + (["--quick"] if quick else []), cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def done(self) -> bool:
        if self.proc is None or self.code is not None:
            return self.code is not None
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)  # wait4: its rusage, not the sum of all
        if pid == 0:
            return False
        self.code = self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_s = usage.ru_utime + usage.ru_stime
        return True

    def stop(self) -> None:
        if self.proc is not None and self.code is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its scenario's finally blocks stop what it started
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def run_side_by_side(names: list[str], *, quick: bool, results: Path, at_once: int) -> list[str]:
    """Run `names`, at most `at_once` at a time; print each one's output in order; the ones that failed."""
    children = [_Child(name, results / f"{name}.log") for name in names]
    waiting, failed = list(children), []
    try:
        for child in children:  # printed in order: wait for each while the others run
            while not child.done():
                running = sum(1 for c in children if c.proc is not None and not c.done())
                while waiting and running < at_once:
                    waiting.pop(0).start(quick, results)
                    running += 1
                time.sleep(0.1)
            sys.stdout.write(child.log.read_text(errors="replace"))
            print(f"{child.name}: {child.cpu_s:.0f} s CPU (its processes), side by side with {at_once - 1} others",
                  flush=True)
            if child.code != 0:
                failed.append(child.name)
    finally:
        for child in children:
            child.stop()
    return failed
