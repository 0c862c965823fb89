"""run_code on the worker host (AGENT_LOCAL_CODE_EXECUTION=true): real child processes under real limits.

A runaway loop, a memory hog, a fork bomb, a file filler and an output flood are each stopped within
their limits, and no process and no file is left behind; the child sees no secret of ours.
"""

from __future__ import annotations

import json
import os
import pwd
import time
from typing import Any

import psutil
import pytest

from llmpool.tools.local_code import LocalRunCode
from llmpool.tools.local_runner import LocalLimits

SLACK = 3.0  # seconds past the timeout: the kill, init reaping orphans, a loaded 2-core CI machine
LIMITS = LocalLimits(cpu_seconds=5, memory_bytes=256 * 2**20, file_bytes=2**20, max_processes=8, max_open_files=64)


def run(code: str, *, timeout: float = 10.0, cap: int = 16384, limits: LocalLimits = LIMITS) -> Any:
    tool = LocalRunCode(limits=limits, timeout=timeout, max_result_bytes=cap)
    return tool.run({"code": code}, deadline=time.time() + 60)


def assert_gone(pids: list[int]) -> None:
    """None of `pids` is a live process (a zombie still to be reaped by init is not running code)."""
    assert pids, "the test learned no pid to check"
    for pid in pids:
        try:
            status = psutil.Process(pid).status()
        except psutil.NoSuchProcess:
            continue
        assert status == psutil.STATUS_ZOMBIE, f"process {pid} survived ({status})"


_before: set[psutil.Process] = set()


@pytest.fixture(autouse=True)
def _children_before() -> None:
    """This process's children as the test starts: a full session's fixtures (its Redis) hold some."""
    _before.clear()
    _before.update(psutil.Process().children(recursive=True))


def no_children_left() -> None:
    """No process this test started is left: none beyond those it found."""
    assert [child for child in psutil.Process().children(recursive=True) if child not in _before] == []


def test_output_result_and_a_clean_exit() -> None:
    result = run("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n6 * 7")
    assert result.error is None
    assert result.content == "stdout:\nhello\nstderr:\noops\nresult:\n42"
    assert result.summary == "ok: stdout 6 bytes, stderr 5 bytes, result 42"
    no_children_left()


def test_an_exception_goes_back_to_the_llm() -> None:
    result = run("def f():\n    return 1 / 0\nf()")
    assert result.error == "code_error"
    assert "error: ZeroDivisionError: division by zero" in result.content
    assert 'File "<code>", line 2, in f' in result.content


@pytest.mark.parametrize("message", ["'x' * 100_000", "'\\U0001F600' * 20_000"])
def test_an_exception_with_a_huge_message_still_goes_back_as_an_error(message: str) -> None:
    # Its value and traceback fill their caps; the report holding both must still be read whole.
    result = run(f"raise ValueError({message})", cap=4096)
    assert result.error == "code_error"
    assert result.content.startswith("error: ValueError: ") and result.summary.startswith("ValueError: ")
    no_children_left()


def test_the_child_sees_an_empty_environment_and_a_fresh_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TAVILY_API_KEY", "E2B_API_KEY", "JWT_SECRET", "AGENT_API_JWT_SECRET"):
        monkeypatch.setenv(name, f"SECRET-{name}")
    result = run("import os, json\nprint(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), "
                 "'uid': os.getuid(), 'files': os.listdir('.')}))")
    seen = json.loads(result.content.split("\n", 1)[1])
    assert sorted(seen["env"]) == ["HOME", "LANG", "PATH", "TMPDIR"]
    assert "SECRET" not in result.content
    assert seen["files"] == ["main.py"]
    assert not os.path.exists(seen["cwd"])  # removed after the run
    # Process limits do not bind root: a root worker's child runs as the sandbox user.
    assert seen["uid"] == (pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.getuid())


def test_the_child_cannot_read_the_workers_environment_through_proc() -> None:
    # Root: the child is another user. Not root: the worker made itself non-dumpable (root owns its /proc files).
    result = run("import os\nopen(f'/proc/{os.getppid()}/environ', 'rb').read()")
    assert result.error == "code_error"
    assert "error: PermissionError: [Errno 13] Permission denied" in result.content


def test_a_runaway_loop_is_killed_within_its_limits() -> None:
    started = time.monotonic()
    result = run("import os\nprint(os.getpid(), flush=True)\nwhile True:\n    pass", timeout=2.0)
    took = time.monotonic() - started
    assert result.error in ("timeout", "cpu_limit")
    assert took < 2.0 + SLACK
    assert_gone([int(result.content.split("\n")[1])])
    no_children_left()


def test_cpu_time_is_limited_apart_from_the_wall_clock() -> None:
    limits = LocalLimits(cpu_seconds=1, memory_bytes=LIMITS.memory_bytes, file_bytes=LIMITS.file_bytes)
    result = run("while True:\n    pass", timeout=20.0, limits=limits)
    assert result.error == "cpu_limit"
    assert result.duration < 20.0


@pytest.mark.parametrize("hog", ["x = bytearray(10 ** 10)",
                                 "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 6))"])
def test_a_memory_hog_is_stopped_by_its_memory_limit(hog: str) -> None:
    result = run(hog, timeout=20.0)
    assert result.error == "memory_limit"
    assert "MemoryError" in result.content
    assert result.duration < 20.0


def test_a_file_filler_is_stopped_by_its_file_size_limit() -> None:
    result = run("with open('big', 'wb') as f:\n    f.write(bytes(10 ** 8))")
    assert result.error == "file_size_limit"
    assert "File too large" in result.content


FORKS = """
import os, time
children = []
for _ in range(40):
    try:
        pid = os.fork()
    except OSError as exc:
        print("refused", type(exc).__name__, flush=True)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
print("children", *children, flush=True)
"""

BOMB = """
import os
print(os.getpid(), flush=True)
while True:
    pid = os.fork()
    if pid:
        print(pid, flush=True)
"""


def test_forks_are_bounded_and_a_fork_bomb_dies_leaving_nothing() -> None:
    # First a bounded loop proves the process limit holds here, so the bomb below cannot spread.
    result = run(FORKS, timeout=5.0)
    lines = result.content.split("\n")
    assert "refused BlockingIOError" in lines
    children = [int(pid) for pid in lines[lines.index("refused BlockingIOError") + 1].split()[1:]]
    if os.geteuid() == 0:  # the sandbox user's count is ours alone; a non-root user's other processes come and go
        assert 0 < len(children) <= LIMITS.max_processes
    assert_gone(children)  # sleeping children of a finished run are killed with it

    started = time.monotonic()
    result = run(BOMB, timeout=3.0)
    assert time.monotonic() - started < 3.0 + SLACK
    pids = [int(line) for line in result.content.split("\n") if line.isdigit()]
    assert len(pids) > 1
    assert_gone(pids)
    no_children_left()


def test_an_output_flood_is_capped_while_read() -> None:
    result = run("while True:\n    print('x' * 1000)", timeout=1.5, cap=2048)
    assert result.error in ("timeout", "cpu_limit")
    assert len(result.content.encode()) <= 2048
    assert result.size > 100_000  # read (and counted) all along, kept only up to the cap
    assert result.content.endswith(f"[... truncated: {result.size} bytes in all]")
