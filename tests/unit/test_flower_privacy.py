"""What Flower and the logs see of a chat job: summaries, never message text or answers.

The worker side runs Celery's own code: a real task message goes through kombu's in-memory broker
into the chat task's strategy, which builds the workers.request.ChatRequest a worker would and
sends the events Flower reads. A worker and Flower themselves: tests/integration/test_compose.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from kombu.utils.imports import symbol_by_name

import workers.chat_task  # noqa: F401 - registers llmpool.chat (shared_task) on every app
from llmpool.client import CHAT_TASK, producer_config, publish_chat
from llmpool.deadlines import prepare_job
from llmpool.redaction import job_repr
from llmpool.settings import Settings
from workers.request import HIDDEN_RESULT, ChatRequest
from workers.signals import HIDDEN, _HideChatResults

SECRET = "purple-elephant-4242"
ANSWER = f"You said: {SECRET}"
JOB = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": SECRET}],
       "priority": "high", "thread_id": "t-1"}
SUMMARY = "('<chat job: 2 messages, priority=high, thread=t-1>',)"


class Events:
    """The worker's event dispatcher as Flower would hear it: every event sent, in order."""

    enabled = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, type: str, **fields: Any) -> None:  # noqa: A002 - Celery's name
        self.sent.append((type, fields))


@pytest.fixture
def app() -> Celery:
    """llmpool's producer settings on kombu's in-memory broker (no process, no Redis)."""
    app = Celery("flower-privacy", set_as_current=False)
    app.conf.update(producer_config(Settings(_env_file=None)), broker_url="memory://")  # type: ignore[call-arg]
    return app


PUBLISHERS: dict[str, Callable[[Celery, str], None]] = {
    "llmpool's client": lambda app, job_id: publish_chat(app, job_id, "chat.high", JOB),
    # Another service publishing by name sets no argsrepr: the worker must not trust the message for it.
    "a plain send_task": lambda app, job_id: app.send_task(CHAT_TASK, args=[JOB], task_id=job_id, queue="chat.high"),
}


def receive(app: Celery, publish: Callable[[Celery, str], None], events: Events) -> ChatRequest:
    """Publish one chat job and hand its message to the worker's strategy; the request it builds."""
    task = app.tasks[CHAT_TASK]
    handled: list[ChatRequest] = []
    consumer = SimpleNamespace(  # the parts of a worker's consumer the strategy reads
        hostname="worker@test", connection_errors=(), event_dispatcher=events, disable_rate_limits=True,
        task_buckets={}, on_task_request=handled.append, timer=SimpleNamespace(call_at=None), apply_eta_task=None,
        _limit_task=None, _limit_post_eta=None, pool=SimpleNamespace(apply_async=None),
        controller=SimpleNamespace(state=SimpleNamespace(revoked=set())))
    handle = task.start_strategy(app, consumer)
    with app.connection_for_write() as connection:
        publish(app, "job-1")
        message = connection.SimpleQueue(app.amqp.queues["chat.high"]).get(timeout=5)
        handle(message, None, message.ack, message.reject, [])
    [request] = handled
    return request


@pytest.mark.parametrize("publish", PUBLISHERS.values(), ids=PUBLISHERS.keys())
def test_flower_sees_summaries_of_a_chat_request_never_its_text(app: Celery, publish: Callable[[Celery, str], None]):
    assert symbol_by_name(app.tasks[CHAT_TASK].Request) is ChatRequest  # what a worker builds for llmpool.chat
    events = Events()
    request = receive(app, publish, events)
    assert isinstance(request, ChatRequest) and request.args == [JOB]  # the task itself gets the whole job
    assert (request.argsrepr, request.kwargsrepr) == (SUMMARY, "{}")
    # `celery inspect active` / `reserved` (Flower's worker page), in both of Celery's modes.
    for safe in (False, True):
        shown = request.info(safe=safe)
        assert (shown["args"], shown["kwargs"]) == (SUMMARY, "{}") and SECRET not in repr(shown)
    request.on_success((False, {"content": ANSWER}, 0.25))
    assert [(kind, fields.get("args"), fields.get("result")) for kind, fields in events.sent] == [
        ("task-received", SUMMARY, None), ("task-succeeded", None, HIDDEN_RESULT.replace("{id}", "job-1"))]
    assert SECRET not in repr(events.sent)


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
