"""run_code in E2B reads a bounded part of what E2B's API and the sandbox answer: a server that sends
an error page (or a sandbox description) without end fails the run at once, by name, not as a
timeout (which is how an unbounded read of such a body ends)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable

import pytest

from llmpool.tools.e2b import E2BRunCode
from tests.unit.raw_server import RawServer

Serve = Callable[[Callable[[socket.socket, threading.Event], None]], RawServer]
TIMEOUT = 3.0  # the run's own bound: an unbounded read lasts until it, then fails as "timeout"


def endless(status: str) -> Callable[[socket.socket, threading.Event], None]:
    """An answer with `status` whose body never ends (no length, sent until the client goes)."""
    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n".encode())
        while not stop.is_set():
            conn.sendall(b"<p>" + b"x" * 65536 + b"</p>\n")
    return behaviour


def sandbox_created(conn: socket.socket, stop: threading.Event) -> None:
    """The API's answer to every request: the sandbox was created (a kill reads it as a 201 and logs it)."""
    body = json.dumps({"sandboxID": "sbx1", "envdAccessToken": "tok"}).encode()
    conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(body), body))


def tool(api: RawServer, sandbox: RawServer) -> E2BRunCode:
    return E2BRunCode(api_key="e2b_key", domain="e2b.app", api_url=api.url, sandbox_url=sandbox.url,
                      template="code-interpreter-v1", timeout=TIMEOUT, max_result_bytes=4096)


def test_an_endless_error_page_from_the_api_fails_the_run_at_once(serve: Serve) -> None:
    api = serve(endless("500 Internal Server Error"))
    result = tool(api, api).run({"code": "print(1)"}, deadline=time.time() + 60)
    assert result.error == "http_error" and "HTTP 500: <p>xxx" in result.content


def test_an_endless_sandbox_description_is_a_bad_response(serve: Serve) -> None:
    api = serve(endless("201 Created"))
    result = tool(api, api).run({"code": "print(1)"}, deadline=time.time() + 60)
    assert result.error == "bad_response" and "larger than" in result.content


def test_an_endless_error_page_from_the_sandbox_fails_the_run_at_once(serve: Serve) -> None:
    result = tool(serve(sandbox_created), serve(endless("502 Bad Gateway"))).run(
        {"code": "print(1)"}, deadline=time.time() + 60)
    assert result.error == "sandbox_error" and "HTTP 502: <p>xxx" in result.content


def executed(conn: socket.socket, stop: threading.Event) -> None:
    lines = b"".join(json.dumps(e).encode() + b"\n" for e in ({"type": "stdout", "text": "1\n"},
                                                              {"type": "end_of_execution"}))
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(lines), lines))


def test_a_kill_answered_with_an_endless_body_is_judged_by_its_status(serve: Serve,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    answers = iter([sandbox_created, endless("202 Accepted")])  # the creation, then the kill
    lock = threading.Lock()

    def api_answer(conn: socket.socket, stop: threading.Event) -> None:
        with lock:
            behaviour = next(answers)
        behaviour(conn, stop)

    with caplog.at_level(logging.WARNING, logger="llmpool.tools.run_code"):
        result = tool(serve(api_answer), serve(executed)).run({"code": "print(1)"}, deadline=time.time() + 60)
    assert result.error is None and "stdout:\n1" in result.content
    assert "killing sandbox sbx1 answered HTTP 202" in caplog.text  # its status read, its body never
