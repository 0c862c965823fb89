"""A job taken past its deadline says what it had been waiting for."""

from __future__ import annotations

import pytest

from llmpool.jobs import Claim
from workers.chat_task import _late


@pytest.mark.parametrize(("run", "no_llm", "code", "words"), [
    (1, True, "expired", "before a worker took it"),
    (1, False, "expired", "before a worker took it"),
    (3, True, "no_llm_available", "No LLM available"),
    (3, False, "expired", "while it waited"),
])
def test_the_reason_follows_the_wait(run: int, no_llm: bool, code: str, words: str) -> None:
    error = _late(Claim("run", 1, "running", claim=run), no_llm=no_llm)
    assert error.code == code and words in error.message
