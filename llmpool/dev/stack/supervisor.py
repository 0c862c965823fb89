"""Run a handful of child processes like honcho/foreman: prefixed output, ordered stop, no orphans.

Each child gets its own session (so a terminal Ctrl-C reaches only us, and we stop the children
in order) and, on Linux, PR_SET_PDEATHSIG (so they die even if we are SIGKILLed).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TextIO

__all__ = ["Child", "Supervisor", "StackAborted", "NAME_WIDTH", "json_line"]

NAME_WIDTH = 8
COLORS = ("36", "33", "32", "35", "34", "31", "96", "93")  # ANSI: cyan, yellow, green, ...
PR_SET_PDEATHSIG = 1
# The signal a child gets when we die: SIGTERM lets Redis flush its AOF and Celery hand back its
# unacked jobs, and a Celery prefork parent stops its own pool children on it.
DEATH_SIGNAL = signal.SIGTERM
RESTART_LIMIT = 5  # restarts of one part within RESTART_WINDOW before the stack gives up
RESTART_WINDOW = 60.0
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class StackAborted(Exception):
    """Starting stopped early: the user asked to stop (code 0) or something failed (code 1)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Child:
    """One supervised process: its command, environment, log file and, once started, process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def exit_code(self) -> int | None:
        return self.process.poll() if self.process is not None else None


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn that makes the kernel send DEATH_SIGNAL to the child when we die."""

    def preexec() -> None:
        # Runs in the forked child before exec: only async-signal-safe work here (_LIBC is
        # loaded before the fork, so this is a plain syscall).
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0)
        if os.getppid() != parent_pid:  # we died between fork and prctl: nobody will signal
            os.kill(os.getpid(), DEATH_SIGNAL)

    return preexec


class Supervisor:
    """Starts children, forwards their output, watches them and stops them in reverse order."""

    def __init__(self, *, out: TextIO | None = None, color: bool | None = None, json_lines: bool = False) -> None:
        self.out = out or sys.stdout
        self.json_lines = json_lines  # AGENT_LOG_FORMAT=json: every line we print is one JSON object
        self.color = self.out.isatty() if color is None and not json_lines else bool(color)
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self._write_lock = threading.Lock()
        self._restarts: dict[str, list[float]] = {}  # child name -> monotonic times of its restarts

    # --- output ---

    def say(self, text: str, *, name: str = "llmpool") -> None:
        """Print lines with a fixed-width name prefix, colored when the output is a terminal; as JSON
        lines with `json_lines` (a part's own JSON lines pass as they are: they name their service)."""
        if self.json_lines:
            self.write("".join(json_line(line, name=name) + "\n" for line in text.splitlines() or [""]))
            return
        prefix = f"{name:<{NAME_WIDTH}} | "
        if self.color:
            color = "1" if name == "llmpool" else COLORS[self._color_index(name)]
            prefix = f"\033[{color}m{prefix}\033[0m"
        self.write("".join(f"{prefix}{line}\n" for line in text.splitlines() or [""]))

    def write(self, text: str) -> None:
        with self._write_lock:
            try:
                self.out.write(text)
                self.out.flush()
            except (OSError, ValueError):  # our stdout is gone (closed pipe): keep draining
                pass

    def _color_index(self, name: str) -> int:
        names = [child.name for child in self.children]
        return (names.index(name) if name in names else len(names)) % len(COLORS)

    def _forward(self, child: Child) -> None:
        """Copy the child's output to our stdout and its log file, line by line, until EOF."""
        assert child.process is not None and child.process.stdout is not None
        with open(child.log_path, "a", encoding="utf-8", buffering=1) as log:
            for raw in iter(child.process.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                log.write(line + "\n")
                self.say(line, name=child.name)

    # --- starting and watching ---

    def start(self, name: str, argv: list[str], *, env: dict[str, str], log_dir: Path) -> Child:
        """Start one child in its own session; must run on the main thread (see below)."""
        log_dir.mkdir(parents=True, exist_ok=True)
        child = Child(name=name, argv=argv, env=env, log_path=log_dir / f"{name}.log")
        self._spawn(child)
        self.children.append(child)
        return child

    def _spawn(self, child: Child) -> None:
        # PDEATHSIG fires when the *thread* that forked the child exits, so children are
        # started from the main thread, which lives as long as we do.
        assert threading.current_thread() is threading.main_thread()
        child.process = subprocess.Popen(
            child.argv, env=child.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )
        child.reader = threading.Thread(
            target=self._forward, args=(child,), name=f"forward-{child.name}", daemon=True
        )
        child.reader.start()

    def restart_exited(self) -> bool:
        """Start again every part that exited on its own (a worker that stopped itself, Redis from
        its AOF); False when one exits too often (RESTART_LIMIT in RESTART_WINDOW seconds)."""
        for child in self.children:
            code = child.exit_code
            if code is None:
                continue
            now = time.monotonic()
            recent = [t for t in self._restarts.get(child.name, []) if now - t < RESTART_WINDOW]
            if len(recent) >= RESTART_LIMIT:
                self.say(f"{child.name} exited {len(recent) + 1} times within {RESTART_WINDOW:.0f}s; giving up")
                return False
            self._restarts[child.name] = [*recent, now]
            self.say(f"{child.name} exited with code {code}; restarting it")
            if child.reader is not None:
                child.reader.join(timeout=2.0)
            if child.process is not None:
                _signal_group(child.process.pid, signal.SIGKILL)  # whatever it left in its group
            self._spawn(child)
        return True

    def first_exited(self) -> Child | None:
        return next((c for c in self.children if c.exit_code is not None), None)

    def check_running(self) -> None:
        """Raise StackAborted when a stop was requested or a child has exited."""
        if self.stop_requested.is_set():
            raise StackAborted("stop requested", code=0)
        dead = self.first_exited()
        if dead is not None:
            raise StackAborted(f"{dead.name} exited with code {dead.exit_code}")

    def wait_for(self, what: str, probe: Callable[[], str | None], *, timeout: float) -> None:
        """Poll `probe` (None = ready, else what is missing) until ready, stop, death or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_running()
            missing = probe()
            if missing is None:
                return
            if time.monotonic() > deadline:
                raise StackAborted(f"{what} not ready after {timeout:.0f}s: {missing}")
            self.stop_requested.wait(0.25)

    def watch(self) -> int:
        """Block until a stop is requested (0), restarting parts that exit, unless one keeps
        exiting (1)."""
        try:
            while not self.stop_requested.wait(0.25):
                if not self.restart_exited():
                    raise StackAborted("a part keeps exiting")
        except StackAborted as exc:
            self.say(f"{exc}; stopping everything")
            return exc.code
        self.say("stop requested; stopping everything")
        return 0

    def install_signal_handlers(self) -> None:
        """SIGINT, SIGTERM and SIGHUP ask for an orderly stop instead of killing us mid-way."""

        def request_stop(signum: int, frame: FrameType | None) -> None:
            self.stop_requested.set()

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, request_stop)

    # --- stopping ---

    def stop_all(self, *, timeout: float = 10.0) -> None:
        """Stop children in reverse start order: SIGTERM the group, then SIGKILL after `timeout`."""
        for child in reversed(self.children):
            self.stop(child, timeout=timeout)

    def stop(self, child: Child, *, timeout: float = 10.0) -> None:
        proc = child.process
        if proc is None:
            return
        if proc.poll() is None:
            self.say(f"stopping {child.name} (pid {proc.pid})")
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} still running after {timeout:.0f}s: SIGKILL")
        # Whatever is left in the child's group (the child, if it ignored SIGTERM, or a grandchild
        # it left behind) would be an orphan: the group shares the child's pid, so kill it whole.
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        if child.reader is not None:
            child.reader.join(timeout=2.0)


def json_line(line: str, *, name: str) -> str:
    """`line` if it is a JSON object already, else a JSON object carrying it as `message`."""
    if line.startswith("{"):
        try:
            if isinstance(json.loads(line), dict):
                return line
        except ValueError:
            pass
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
    return json.dumps({"ts": stamp, "level": "INFO", "service": name, "message": line})


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already empty
