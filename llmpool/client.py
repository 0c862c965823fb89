"""The public Client: submit chat jobs, wait for their answers, stream their tokens, read records.

The one core module that talks to Celery, and only as a producer: its Celery app has no worker
signals, no beat schedule and no result backend (the job record is the one stored outcome).

    from llmpool import Client
    with Client("redis://localhost:6379/0") as client:
        print(client.chat("Hello").content)
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import redis
from celery import Celery
from kombu import Queue
from kombu.exceptions import OperationalError

from llmpool.deadlines import prepare_job
from llmpool.errors import (
    JobAlreadyFinished,
    JobNotFound,
    RedisFull,
    RedisUnavailable,
    ResultTimeout,
    SubmitFailed,
    error_from_dict,
)
from llmpool.input_limits import InputLimits
from llmpool.jobs import FINAL_STATES, REDIS_FULL, JobStore
from llmpool.keys import Keys
from llmpool.redaction import job_repr
from llmpool.redis_conn import celery_transport_options, redis_client
from llmpool.redis_memory import SUBMIT_LIMIT
from llmpool.schemas import QUEUES, ChatJob, ChatResult, queue_for
from llmpool.settings import Settings, get_settings, load_settings

__all__ = ["Client", "JobEvent", "Submitted", "CHAT_TASK", "producer_config", "publish_chat", "owned_job_id"]

CHAT_TASK = "llmpool.chat"
# Past a job's own deadline the worker still needs a moment to record why it failed.
RESULT_GRACE = 10.0


def producer_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings every process that publishes needs; workers add their own on top."""
    return {
        "broker_url": settings.redis_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_default_queue": "chat.default",
        "task_routes": {"llmpool.control.*": {"queue": "control"}},
        "broker_connection_retry_on_startup": True,
        # With REDIS_URL=sentinel://...: which master the Sentinels are asked for (workers add theirs).
        "broker_transport_options": celery_transport_options(settings),
        "task_send_sent_event": True,
        "timezone": "UTC",
    }


def publish_chat(app: Celery, job_id: str, queue: str, payload: Mapping[str, Any]) -> None:
    """Put a chat job's message on its queue (task id = job id); raises what the broker raised."""
    app.send_task(CHAT_TASK, args=[dict(payload)], task_id=job_id, queue=queue,
                  argsrepr=repr((job_repr(payload),)), kwargsrepr="{}")


@dataclass(frozen=True)
class Submitted:
    """What `submit` did: the job's id, and False when the id (an idempotency key) was known."""

    job_id: str
    created: bool


@dataclass(frozen=True)
class JobEvent:
    """One event of a job's stream: `token` (text), `reset` (drop what came before) or `end`."""

    type: str
    text: str = ""
    state: str | None = None
    data: dict[str, Any] | None = None


def owned_job_id(job_id: str, owner: str | None) -> str:
    """The id an idempotency key gives a job: itself, or with an owner, a digest of both, so one
    subject's key can never name (and answer with) another subject's job."""
    if owner is None:
        return job_id
    return "o" + hashlib.blake2b(f"{owner}\0{job_id}".encode("utf-8", errors="surrogatepass"),
                                 digest_size=16).hexdigest()


class Client:
    """A producer of chat jobs on one llmpool; needs only the Redis URL."""

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None,
                 connection: redis.Redis | None = None, limits: InputLimits | None = None) -> None:
        """`connection`: a Redis client to share (the caller closes it); by default one of its own.
        `limits`: refuse jobs past them (InvalidJob) before storing anything (the API passes its own)."""
        if settings is None:
            settings = load_settings(redis_url=redis_url) if redis_url else get_settings()
        self.settings = settings
        self.limits = limits
        self.keys = Keys(settings.agent_redis_prefix)
        self._owns_redis = connection is None
        self.redis = connection or redis_client(
            settings, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30)
        self.jobs = JobStore(self.redis, self.keys, ttl=settings.agent_result_ttl,
                             stream_ttl=settings.agent_stream_ttl)
        self.celery = Celery("llmpool-client", set_as_current=False)
        self.celery.conf.update(producer_config(settings))

    def submit(self, job: ChatJob | Mapping[str, Any] | str, *, job_id: str | None = None,
               **fields: Any) -> Submitted:
        """Enqueue a job on its priority queue; `job_id` doubles as an idempotency key.

        `job` is a ChatJob, its JSON form, or the text of one user message; `fields` add
        ChatJob fields (priority, thread_id, ...). Raises InvalidJob before anything is stored, and
        RedisFull when Redis is at its maxmemory (nothing is stored then either).
        """
        prepared = prepare_job(_as_job_dict(job, fields) if not isinstance(job, ChatJob) else job,
                               self.settings)
        if self.limits is not None:
            self.limits.check(prepared)
        job_id = owned_job_id(job_id, prepared.owner) if job_id else uuid.uuid4().hex
        queue = queue_for(prepared.priority)
        payload = prepared.model_dump(mode="json", exclude_none=True)
        try:
            # Refused past SUBMIT_LIMIT of maxmemory, so that jobs already accepted can still finish.
            created = self.jobs.create(job_id, queue=queue, deadline=prepared.deadline or 0.0,
                                       summary=prepared.summary(), payload=payload, memory_limit=SUBMIT_LIMIT,
                                       owner=prepared.owner)
        except redis.exceptions.OutOfMemoryError:
            # Past maxmemory itself: job_create.lua's first write was refused, so it wrote nothing
            # (Redis fails a script whole when its first write is refused).
            raise RedisFull(REDIS_FULL, job_id=job_id) from None
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError) as exc:
            # Down, or failing over (no master yet, or a demoted one): the script ran whole or not at all.
            raise RedisUnavailable(f"Redis did not answer: {type(exc).__name__}", job_id=job_id) from exc
        if created:
            self._publish(job_id, queue, payload)
        return Submitted(job_id, created)

    def _publish(self, job_id: str, queue: str, payload: dict[str, Any]) -> None:
        """Publish, or undo the record: no half-submitted job is left behind."""
        try:
            publish_chat(self.celery, job_id, queue, payload)
        except Exception as exc:
            try:
                self.jobs.abandon(job_id)  # deletes: allowed past maxmemory too
            except redis.RedisError:  # the sweep publishes it once Redis answers again
                pass
            if _refused_for_memory(exc):
                raise RedisFull(REDIS_FULL, job_id=job_id) from exc
            if _broker_unreachable(exc):
                raise RedisUnavailable(f"the broker did not answer: {type(exc).__name__}",
                                       job_id=job_id) from exc
            raise SubmitFailed(f"the broker did not take the job: {type(exc).__name__}", job_id=job_id) from exc
        try:
            self.jobs.published(job_id)
        except redis.RedisError:  # the sweep publishes it again; the claim skips the duplicate
            pass

    def cancel(self, job_id: str) -> str:
        """Cancel a queued, waiting or running job; returns the state it had.

        A running call is abandoned within a second (its worker watches for it) and settled
        neutral. Raises JobNotFound for an unknown id and JobAlreadyFinished for a job that ended.
        """
        verdict, state = self.jobs.cancel(job_id)
        if verdict == "unknown":
            raise JobNotFound(f"No job with id {job_id}", job_id=job_id)
        if verdict == "final":
            raise JobAlreadyFinished(f"job {job_id} had ended already ({state})", job_id=job_id, state=state)
        return state

    def record(self, job_id: str) -> dict[str, Any] | None:
        """The job's record (state, attempts, endpoint, result or error), or None if unknown."""
        return self.jobs.get(job_id)

    def stream(self, job_id: str, *, timeout: float | None = None) -> Iterator[JobEvent]:
        """The job's events as they come, from the start, ending with its `end` event."""
        for event in self.jobs.events(job_id, until=self._until(job_id, timeout)):
            yield JobEvent(type=str(event.get("type")), text=str(event.get("text", "")),
                           state=event.get("state"), data=event.get("data"))

    def result(self, job_id: str, *, timeout: float | None = None) -> ChatResult:
        """Wait for the job's answer; raises its failure as the matching LLMPoolError.

        `timeout` in seconds; by default the job's own deadline (plus a little grace).
        Raises ResultTimeout if it has not finished by then, JobNotFound if the id is unknown.
        """
        record = self._known(job_id)
        if record.get("state") not in FINAL_STATES:
            try:
                end = [e for e in self.jobs.events(job_id, until=self._until(job_id, timeout, record))
                       if e.get("type") == "end"][-1]
            except TimeoutError:
                raise ResultTimeout(f"job {job_id} had not finished; it may still finish later",
                                    job_id=job_id) from None
            record = {"state": end.get("state"), "result": end.get("data"), "error": end.get("data")}
        if record.get("state") == "succeeded":
            return ChatResult.model_validate(record.get("result") or {})
        raise error_from_dict(record.get("error") or {"type": record.get("state") or "failed"})

    def chat(self, job: ChatJob | Mapping[str, Any] | str, *, timeout: float | None = None,
             **fields: Any) -> ChatResult:
        """Submit a job and wait for its answer."""
        return self.result(self.submit(job, **fields).job_id, timeout=timeout)

    def close(self) -> None:
        if self._owns_redis:
            self.redis.close()
        self.celery.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _known(self, job_id: str) -> dict[str, Any]:
        record = self.jobs.get(job_id)
        if record is None:
            raise JobNotFound(f"No job with id {job_id}", job_id=job_id)
        return record

    def _until(self, job_id: str, timeout: float | None, record: dict[str, Any] | None = None) -> float:
        if timeout is not None:
            return time.time() + timeout
        deadline = (record or self._known(job_id)).get("deadline") or 0.0
        return max(float(deadline), time.time()) + RESULT_GRACE


def _refused_for_memory(exc: BaseException) -> bool:
    """Whether the broker refused the message for memory (kombu may wrap Redis's OOM error)."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, redis.exceptions.OutOfMemoryError):
            return True
        current = current.__cause__ or current.__context__
    return False


def _broker_unreachable(exc: BaseException) -> bool:
    """Whether publishing failed for want of a connection (kombu wraps redis-py's errors)."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, redis.ConnectionError | redis.TimeoutError | redis.exceptions.ReadOnlyError
                      | ConnectionError | OperationalError):
            return True
        current = current.__cause__ or current.__context__
    return False


def _as_job_dict(job: Mapping[str, Any] | str, fields: Mapping[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {"messages": [{"role": "user", "content": job}]} if isinstance(job, str) else dict(job)
    return {**base, **fields}
