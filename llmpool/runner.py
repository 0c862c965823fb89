"""Running one chat job: try the candidate endpoints in order until one answers.

Plain logic with no Celery in it: the task decodes, claims and settles; this decides. A retryable
failure moves to the next candidate at once (within the call budget and the deadline); a caller's
error ends the job; when every candidate failed, AllEndpointsFailed lists why each one did.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from llmpool.endpoints import Endpoint
from llmpool.errors import AllEndpointsFailed, JobExpired, NoLLMAvailable, RetryableError
from llmpool.jobs import EventPublisher
from llmpool.llm_client import CallOutcome, LLMClient
from llmpool.schemas import ChatJob, ChatResult, Timings, Usage

__all__ = ["run_chat", "RunReport", "wait_delay"]

log = logging.getLogger(__name__)

WAIT_FIRST = 0.5  # the first wait for an LLM; it doubles up to WAIT_MAX
WAIT_MAX = 5.0


def wait_delay(waits_so_far: int, jitter: float) -> float:
    """Seconds a job waits before looking for an LLM again: exponential, capped, jittered.

    `jitter` in [0, 1) spreads jobs that started waiting together, so they do not return at once.
    """
    base = min(WAIT_FIRST * 2 ** min(waits_so_far, 10), WAIT_MAX)
    return base * (0.75 + 0.5 * jitter)


@dataclass
class RunReport:
    """What the attempts of one job did, for the job record and the logs."""

    calls: int = 0
    failures: list[dict[str, object]] = field(default_factory=list)


def _result(outcome: CallOutcome, endpoint: Endpoint, calls: int) -> ChatResult:
    done = outcome.completion
    usage = Usage(**done.usage) if done.usage else Usage()
    tpot = None
    if outcome.ttft is not None and usage.completion_tokens > 1:
        tpot = (outcome.total - outcome.ttft) / (usage.completion_tokens - 1)
    return ChatResult(
        content=done.content, tool_calls=done.tool_calls, model=done.model or endpoint.model,
        endpoint=endpoint.id, finish_reason=done.finish_reason, usage=usage,
        timings=Timings(ttft=outcome.ttft, total=outcome.total, tpot=tpot), attempts=calls,
    )


def run_chat(
    job: ChatJob, *, candidates: list[Endpoint], client: LLMClient, publisher: EventPublisher,
    deadline: float, max_calls: int, now: float | None = None,
) -> tuple[ChatResult, RunReport]:
    """Answer `job` from the first candidate that succeeds; `deadline` is unix time."""
    report = RunReport()
    if not candidates:
        raise NoLLMAvailable("No LLM available: no endpoint is configured or selected")
    for endpoint in candidates[:max_calls]:
        budget = deadline - (now if now is not None else time.time())
        now = None  # only the first look may use the caller's clock
        if budget <= 0:
            raise JobExpired("the job's deadline passed before an endpoint answered",
                             failures=report.failures)
        report.calls += 1
        try:
            outcome = client.chat(endpoint, job, budget=budget, on_token=publisher.token)
        except RetryableError as exc:
            log.warning("endpoint %s failed for a job: %s", endpoint.id, exc.message)
            report.failures.append({"endpoint": endpoint.id, **exc.to_dict()})
            publisher.reset()
            continue
        return _result(outcome, endpoint, report.calls), report
    summary = "; ".join(f"{f['endpoint']}: {f['message']}" for f in report.failures)
    raise AllEndpointsFailed(f"All LLM endpoints failed: {summary}", failures=report.failures)
