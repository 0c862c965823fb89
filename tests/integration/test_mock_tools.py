"""The mock E2B's interpreter runs real code (the local runner), and the mocks run as their own process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx

from llmpool.dev.mock_tools import MockTools
from llmpool.dev.redis_server import free_port
from llmpool.tools.e2b import E2BRunCode


def test_the_mock_e2b_runs_the_code_it_is_sent() -> None:
    with MockTools() as mocks:
        tool = E2BRunCode(api_key=mocks.e2b.api_key, domain="e2b.app", api_url=mocks.e2b_url,
                          sandbox_url=mocks.e2b_url, template="code-interpreter-v1", timeout=20,
                          max_result_bytes=4096)
        result = tool.run({"code": "print(sum(range(10)))\n[1, 2][5]"}, deadline=time.time() + 30)
        assert result.error == "code_error"
        assert result.content.startswith("stdout:\n45\nerror: IndexError: list index out of range")
        assert mocks.e2b.live() == []


def test_the_mocks_run_as_their_own_process() -> None:
    tavily_port, e2b_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmpool.dev.mock_tools", "--tavily-port", str(tavily_port),
                             "--e2b-port", str(e2b_port), "--tavily-key", "k1"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"mock Tavily: http://127.0.0.1:{tavily_port}"
        answer = httpx.post(f"http://127.0.0.1:{tavily_port}/search", json={"query": "q", "max_results": 1},
                            headers={"Authorization": "Bearer k1"}, timeout=10)
        assert answer.status_code == 200 and len(answer.json()["results"]) == 1
        refused = httpx.post(f"http://127.0.0.1:{e2b_port}/sandboxes", json={"templateID": "t"},
                             headers={"X-API-KEY": "wrong"}, timeout=10)
        assert refused.status_code == 401
        proc.send_signal(signal.SIGTERM)  # SIGINT may be ignored: a background job's children inherit that
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
