"""What Flower and the logs see of a chat job: summaries, never message text or answers."""

from __future__ import annotations

import logging
import time

import pytest

from llmpool.deadlines import prepare_job
from llmpool.redaction import job_repr
from llmpool.settings import Settings
from workers.signals import HIDDEN, _HideChatResults


def test_job_repr_names_counts_not_text() -> None:
    job = {"messages": [{"role": "user", "content": "secret plans"}], "priority": "high",
           "thread_id": "t-1"}
    text = job_repr(job)
    assert text == "<chat job: 1 messages, priority=high, thread=t-1>"
    assert "secret" not in job_repr("secret plans") and "secret" not in job_repr([job])


def test_success_log_line_hides_the_answer() -> None:
    record = logging.LogRecord("celery.app.trace", logging.INFO, "f", 1,
                               "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
                               None, None)
    record.args = {"name": "llmpool.chat", "id": "x", "runtime": 0.1,
                   "return_value": "{'content': 'the answer'}"}
    assert _HideChatResults().filter(record)
    assert "the answer" not in record.getMessage() and HIDDEN in record.getMessage()


def test_prepared_job_gets_a_deadline() -> None:
    job = prepare_job({"messages": [{"role": "user", "content": "x"}]}, Settings(agent_job_deadline=42))
    assert job.deadline is not None and job.summary() == "<chat job: 1 messages, priority=default>"


@pytest.mark.parametrize(("priority", "seconds"), [("high", 11), ("default", 22), ("low", 33)])
def test_default_deadline_per_queue(priority: str, seconds: float) -> None:
    settings = Settings(agent_job_deadline_high=11, agent_job_deadline=22, agent_job_deadline_low=33)
    before = time.time()
    job = prepare_job({"messages": [{"role": "user", "content": "x"}], "priority": priority}, settings)
    assert job.deadline is not None and before + seconds <= job.deadline <= time.time() + seconds
    own = prepare_job({"messages": [{"role": "user", "content": "x"}], "priority": priority, "deadline": 5.0},
                      settings)
    assert own.deadline == 5.0
