"""Run Python on the worker host in a separate, limited process (AGENT_LOCAL_CODE_EXECUTION=true only).

NOT a security boundary: the child shares the host's kernel, network and readable files. What it
does give: the child is `python -I -S` (standard library only, no PYTHON* variables) in a new session,
with an empty environment (no secrets: PATH, LANG, HOME and TMPDIR only) and a fresh temporary
directory as its cwd, removed after. Limits, set by the child's own driver before the code runs
(no preexec_fn, which is unsafe in a threaded worker): RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE,
RLIMIT_NPROC, RLIMIT_NOFILE, RLIMIT_CORE=0. A wall-clock timeout kills the whole process group,
and every descendant still attached to the child, so nothing is left behind.

RLIMIT_NPROC counts every process and thread of the child's *user*, so: when the worker runs as root
(where the limit would not apply at all) the child runs as AGENT_LOCAL_CODE_USER (default nobody);
either way its limit is that user's current task count plus AGENT_LOCAL_CODE_MAX_PROCESSES. A
child of the worker's own user could read the worker's /proc/<pid>/environ, so a non-root worker
makes itself non-dumpable (prctl) before its first run: its /proc files then belong to root.
Output is read as it comes and kept up to a cap per stream; the rest is counted and dropped.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import pwd
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import psutil

from llmpool.tools.code_output import CodeError, CodeOutput

__all__ = ["LocalLimits", "run_python", "SandboxUnavailable"]

GRACE_AFTER_EXIT = 0.2  # seconds to drain pipes a surviving grandchild holds open after the child exits
READ_CHUNK = 65536
PR_SET_DUMPABLE = 4  # <linux/prctl.h>
GROUP_GONE_WAIT = 2.0  # seconds, at most, for init to reap the killed group's orphans
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
# The driver's report holds up to three texts of `cap` characters each (result, error value, traceback),
# and json.dumps writes a character in at most 12 bytes (an escaped surrogate pair): read all of it, or
# a cut report is no JSON and the code's exception is lost (a run that raised would look clean).
REPORT_BYTES_PER_CAP = 3 * 12
REPORT_OVERHEAD = 4096

# The child's driver: set the limits, run the code as __main__ and report the last expression's value
# or the exception on its own pipe (argv: report fd, cap, then the limits). Standard library only.
DRIVER = r"""
import ast, json, os, resource, sys, traceback
fd, cap, cpu, mem, fsize, nproc, nofile = (int(a) for a in sys.argv[1:8])
for kind, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_NOFILE, nofile),
                    (resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_AS, mem)):
    resource.setrlimit(kind, (value, value))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
report_pipe = os.fdopen(fd, "w", encoding="utf-8")
report = {}
try:
    with open("main.py", encoding="utf-8") as source:
        tree = ast.parse(source.read(), "<code>")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(tree, "<code>", "exec"), scope)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), "<code>", "eval"), scope)
        if value is not None:
            report["result"] = repr(value)[:cap]
except BaseException as exc:
    if not (isinstance(exc, SystemExit) and exc.code in (None, 0)):
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next)  # not this driver
        report["error"] = {"name": type(exc).__name__, "value": str(exc)[:cap], "traceback": "".join(lines)[-cap:]}
finally:
    sys.stdout.flush()
    sys.stderr.flush()
    report_pipe.write(json.dumps(report))
    report_pipe.close()
"""


class SandboxUnavailable(Exception):
    """The child cannot be started as configured (its user does not exist, say)."""


@dataclass(frozen=True)
class LocalLimits:
    """The child's limits; `user` is who it runs as when the worker is root."""

    cpu_seconds: int = 10
    memory_bytes: int = 512 * 1024 * 1024
    file_bytes: int = 16 * 1024 * 1024
    max_processes: int = 8
    max_open_files: int = 64
    user: str = "nobody"
    python: str = "python3"  # looked up on the child's PATH; the sandbox user must be able to run it


def run_python(code: str, *, limits: LocalLimits, timeout: float, max_output_bytes: int) -> CodeOutput:
    """Run `code`, return within `timeout` (plus the kill), leave no process and no file behind."""
    user = _child_user(limits.user)
    uid, gid = user if user is not None else (None, None)
    workdir = tempfile.mkdtemp(prefix="llmpool-code-")
    try:
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as source:
            source.write(code)
        if user is not None:
            os.chown(workdir, *user)
            os.chown(os.path.join(workdir, "main.py"), *user)
        return _run(workdir, limits, uid, gid, timeout, max_output_bytes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _child_user(name: str) -> tuple[int, int] | None:
    """(uid, gid) to run the child as: the sandbox user when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SandboxUnavailable(f"AGENT_LOCAL_CODE_USER {name!r} does not exist on this host") from None
    if entry.pw_uid == 0:
        raise SandboxUnavailable("AGENT_LOCAL_CODE_USER must not be root: process limits do not bind root")
    return entry.pw_uid, entry.pw_gid


def _tasks_of(uid: int) -> int:
    """Processes and threads the user has now: what RLIMIT_NPROC counts against the child."""
    count = 0
    for proc in psutil.process_iter(["uids", "num_threads"]):
        uids, threads = proc.info.get("uids"), proc.info.get("num_threads")
        if uids is not None and uids.real == uid:
            count += threads or 1
    return count


def _hide_our_proc_files() -> None:
    """Make this process non-dumpable: its /proc files (environ: every secret it was started with)
    then belong to root, so a child running as our own user cannot read them."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise SandboxUnavailable(f"prctl(PR_SET_DUMPABLE) failed: errno {ctypes.get_errno()}")


def _run(workdir: str, limits: LocalLimits, uid: int | None, gid: int | None, timeout: float,
         cap: int) -> CodeOutput:
    if uid is None:
        _hide_our_proc_files()
    nproc = _tasks_of(uid if uid is not None else os.getuid()) + limits.max_processes
    env = {"PATH": CHILD_PATH, "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
    python = shutil.which(limits.python, path=CHILD_PATH) or sys.executable
    report_read, report_write = os.pipe()
    argv = [python, "-I", "-S", "-u", "-c", DRIVER, str(report_write), str(cap),
            str(limits.cpu_seconds), str(limits.memory_bytes), str(limits.file_bytes), str(nproc),
            str(limits.max_open_files)]
    started = time.monotonic()
    try:
        child = subprocess.Popen(  # noqa: S603 - our own interpreter and driver, the code is a file
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir, env=env,
            pass_fds=(report_write,), start_new_session=True, user=uid, group=gid,
            extra_groups=[] if uid is not None else None)
    except BaseException:
        os.close(report_read)
        raise
    finally:
        os.close(report_write)
    assert child.stdout is not None and child.stderr is not None
    stdout, stderr, report = bytearray(), bytearray(), bytearray()
    streams = {child.stdout.fileno(): stdout, child.stderr.fileno(): stderr, report_read: report}
    output = CodeOutput()
    timed_out = False
    try:
        caps = {child.stdout.fileno(): cap, child.stderr.fileno(): cap,
                report_read: REPORT_BYTES_PER_CAP * cap + REPORT_OVERHEAD}
        timed_out = _read_until_done(child, streams, started + timeout, caps, output)
    finally:
        _kill_all(child)
        os.close(report_read)
        child.stdout.close()
        child.stderr.close()
    output.stdout = stdout.decode("utf-8", errors="replace")
    output.stderr = stderr.decode("utf-8", errors="replace")
    _read_report(bytes(report), output)
    output.stopped = _why_stopped(child.returncode, timed_out, output)
    return output


def _read_until_done(child: subprocess.Popen[bytes], streams: dict[int, bytearray], deadline: float,
                     caps: dict[int, int], output: CodeOutput) -> bool:
    """Read every stream, keeping up to its cap, until they close or the deadline: True if it passed."""
    selector = selectors.DefaultSelector()
    for fd in streams:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    exited_at: float | None = None
    try:
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                return True
            if exited_at is None and child.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > GRACE_AFTER_EXIT:
                return False  # a grandchild holds a pipe open; it is killed with the group
            for key, _ in selector.select(min(0.05, deadline - now)):
                fd = key.fd  # type: ignore[assignment]
                try:
                    chunk = os.read(fd, READ_CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(fd)
                    continue
                kept = streams[fd]
                room = max(0, caps[fd] - len(kept))
                kept += chunk[:room]
                output.dropped += len(chunk) - min(room, len(chunk))
        remaining = deadline - time.monotonic()
        try:
            child.wait(max(0.0, remaining))
        except subprocess.TimeoutExpired:
            return True
        return False
    finally:
        selector.close()


def _kill_all(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group and every descendant still known, then reap the child."""
    try:
        descendants = psutil.Process(child.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    try:
        os.killpg(child.pid, signal.SIGKILL)  # start_new_session: the group's id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass
    for proc in descendants:  # those that left the group with setsid/setpgid
        try:
            proc.kill()
        except psutil.Error:
            pass
    try:
        child.wait(5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(5)
    psutil.wait_procs(descendants, timeout=2)
    # Orphaned grandchildren belong to init now; wait (bounded) until it has reaped the whole group.
    until = time.monotonic() + GROUP_GONE_WAIT
    while time.monotonic() < until:
        try:
            os.killpg(child.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.01)


def _read_report(raw: bytes, output: CodeOutput) -> None:
    try:
        report = json.loads(raw.decode("utf-8", errors="replace")) if raw else {}
    except ValueError:
        report = {}  # cut short by a kill: stdout and stderr say what there is to say
    if not isinstance(report, dict):
        return
    if isinstance(report.get("result"), str):
        output.results.append(report["result"])
    error = report.get("error")
    if isinstance(error, dict):
        output.error = CodeError(name=str(error.get("name", "Error")), value=str(error.get("value", "")),
                                 traceback=str(error.get("traceback", "")))


def _why_stopped(returncode: int | None, timed_out: bool, output: CodeOutput) -> str | None:
    if timed_out:
        return "timeout"
    if output.error is not None and output.error.name == "MemoryError":
        return "memory_limit"
    if output.error is not None and output.error.value.startswith(f"[Errno {errno.EFBIG}]"):
        return "file_size_limit"  # Python ignores SIGXFSZ: the write fails with EFBIG instead
    if returncode is not None and returncode < 0:
        signals = {signal.SIGXCPU: "cpu_limit", signal.SIGXFSZ: "file_size_limit", signal.SIGKILL: "cpu_limit"}
        return signals.get(signal.Signals(-returncode), f"killed by {signal.Signals(-returncode).name}")
    return None
