"""run_code on the worker host (AGENT_LOCAL_CODE_EXECUTION=true): the tool over llmpool.tools.local_runner."""

from __future__ import annotations

import logging
import time
from typing import Any

from llmpool.tools import ToolResult
from llmpool.tools.code_output import render, summarize
from llmpool.tools.local_runner import LocalLimits, SandboxUnavailable, run_python
from llmpool.tools.results import failed, finished
from llmpool.tools.run_code import checked_run, schema

__all__ = ["LocalRunCode"]

log = logging.getLogger("llmpool.tools.run_code")


class LocalRunCode:
    """run_code in a limited local process; not a security boundary (see local_runner)."""

    name = "run_code"

    def __init__(self, *, limits: LocalLimits, timeout: float, max_result_bytes: int) -> None:
        self.timeout = timeout
        self.limits = limits
        self._max_bytes = max_result_bytes

    def schema(self) -> dict[str, Any]:
        return schema("in a fresh local Python process (standard library only, at most "
                      f"{self.limits.cpu_seconds}s of CPU and {self.limits.memory_bytes // 2**20} MB of memory; "
                      "files it writes are discarded after)")

    def run(self, arguments: dict[str, Any], *, deadline: float) -> ToolResult:
        started = time.monotonic()
        checked = checked_run(arguments, timeout=self.timeout, deadline=deadline, started=started,
                              max_bytes=self._max_bytes)
        if isinstance(checked, ToolResult):
            return checked
        code, left = checked
        try:
            output = run_python(code, limits=self.limits, timeout=left, max_output_bytes=self._max_bytes)
        except SandboxUnavailable as exc:
            log.error("run_code: local execution is misconfigured: %s", exc)
            return failed("sandbox_error", str(exc), started=started, max_bytes=self._max_bytes)
        except OSError as exc:
            log.error("run_code: cannot start the local process: %s", type(exc).__name__)
            return failed("sandbox_error", f"cannot start the local process ({type(exc).__name__})",
                          started=started, max_bytes=self._max_bytes)
        error = output.stopped or ("code_error" if output.error is not None else None)
        result = finished(render(output), started=started, max_bytes=self._max_bytes, summary=summarize(output),
                          error=error, dropped=output.dropped)
        log.info("run_code (local): %s in %.2fs (%d bytes)", error or "ok", result.duration, result.size)
        return result

