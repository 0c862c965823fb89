"""An upstream's error body becomes one short, clean line: the reason, never a traceback or a path."""

from __future__ import annotations

import json

import pytest

from llmpool.error_text import MAX_CHARS, short_error
from llmpool.llm_client import status_error

TRACE = ("Traceback (most recent call last):\n"
         '  File "/app/llama_cpp/server/app.py", line 480, in create_chat_completion\n'
         "    return await run_in_threadpool(llama.create_chat_completion, **kwargs)\n"
         '  File "/usr/lib/python3.11/site-packages/jinja2/environment.py", line 1301, in render\n'
         "    self.environment.handle_exception()\n"
         "jinja2.exceptions.UndefinedError: 'None' has no attribute 'strip'")


def _openai(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "internal_server_error"}}).encode()


def test_a_traceback_becomes_the_exception_it_ends_with() -> None:
    assert short_error(_openai(TRACE)) == "jinja2.exceptions.UndefinedError: 'None' has no attribute 'strip'"
    assert short_error(TRACE.encode()) == short_error(_openai(TRACE))  # a plain-text body too


@pytest.mark.parametrize(("body", "expected"), [
    (_openai("The model `/models/llama-3-8b.Q4_K_M.gguf` does not exist"), "The model `<path>` does not exist"),
    (b'{"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}', "field required"),
    (b'{"error": "Loading model"}', "Loading model"),
    (b'{"detail": "Not Found"}', "Not Found"),
    (b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>", "502 Bad Gateway"),
    (_openai("2 validation errors for Request\nmessages.0.role\n  Input should be 'user'"),
     "2 validation errors for Request"),
    (_openai("see https://errors.pydantic.dev/2.9/v/missing"), "see https://errors.pydantic.dev/2.9/v/missing"),
    (_openai("No route for /v1/chat/completions"), "No route for /v1/chat/completions"),
    (_openai(r"cannot open C:\srv\models\x.gguf"), "cannot open <path>"),
    (_openai("cannot read /home/llm/weights"), "cannot read <path>"),
    (b"", ""),
])
def test_the_first_meaningful_line_without_paths(body: bytes, expected: str) -> None:
    assert short_error(body) == expected


def test_a_long_message_is_capped() -> None:
    text = short_error(_openai("x" * 5000))
    assert len(text) == MAX_CHARS and text.endswith("…")


def test_a_400_keeps_the_servers_reason_and_a_500_loses_the_traceback() -> None:
    bad = status_error("e1", 400, _openai("'max_tokens' must be positive"), None)
    assert str(bad) == "e1 answered HTTP 400: 'max_tokens' must be positive"
    broken = str(status_error("e1", 500, _openai(TRACE), None))
    assert "Traceback" not in broken and "/app/" not in broken and broken.endswith("'strip'")
