"""A half-open breaker's trial made by a probe, not by a user's call.

The job that wins an endpoint's one fleet-wide trial (admit.lua) does not send its own request to
an endpoint that was failing. Its worker sends a tiny chat completion instead (a fixed short
prompt, max_tokens 1, the endpoint's model, through the same LLMClient so the auth token and the
dialect are the ones real calls use) in a thread of its own, and settles the trial with the probe's
outcome: closed on an answer, opened again for twice as long on a failure (settle.lua). The job
goes on to its next candidate at once, as on a refusal. So a dead endpoint's trials cost no job a
call: a failed probe is logged and counted in the breaker's `failed_trials`, and nothing else.

The probe waits for its answer as long as the trial's first-token timeout (which doubles with each
failed trial, llmpool.ttft), or AGENT_FIRST_TOKEN_TIMEOUT while the endpoint is cold.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from llmpool.breaker import failure_outcome
from llmpool.endpoints import Endpoint
from llmpool.errors import CallerError, EndpointStarting, LLMPoolError, RetryableError
from llmpool.llm_client import LLMClient
from llmpool.schemas import ChatJob, Message

__all__ = ["TrialProbes", "ProbeOutcome", "PROBE_JOB", "probe_outcome"]

log = logging.getLogger(__name__)

ProbeOutcome = Literal["success", "failure", "down", "neutral"]
# What the probe asks: short, so any server answers it at once; one token is all it needs.
PROBE_JOB = ChatJob(messages=[Message(role="user", content="ping")], max_tokens=1, temperature=0)
# settle(endpoint, outcome, seconds): the probe's trial settles through the gate that took it.
Settle = Callable[[Endpoint, ProbeOutcome, float], None]


def probe_outcome(error: BaseException | None) -> ProbeOutcome:
    """The breaker outcome of a probe that ended with `error` (None: it answered).

    A caller's error (a 400 to our probe, say) is an answer: the server is there and replying, so
    the breaker closes; were it still broken for real calls, their failures open it again. A
    server loading its model is neither: the trial is freed undecided and the next admit retries.
    """
    if error is None or isinstance(error, CallerError):
        return "success"
    if isinstance(error, EndpointStarting):
        return "neutral"
    if isinstance(error, RetryableError):
        return failure_outcome(error)
    return "neutral"  # ours (no free connection, a bug): the endpoint is not to blame


class TrialProbes:
    """Sends trial probes, each in a thread of its own (one per endpoint fleet-wide at a time)."""

    def __init__(self, client: LLMClient, *, ceiling: float) -> None:
        self.client = client
        self.ceiling = ceiling  # AGENT_FIRST_TOKEN_TIMEOUT: the wait while the endpoint is cold

    def timeout(self, first_token_timeout: float | None) -> float:
        """How long a probe waits for its answer: the trial's first-token timeout, else the ceiling."""
        return min(first_token_timeout or self.ceiling, self.ceiling)

    def start(self, endpoint: Endpoint, timeout: float, settle: Settle,
              on_first_token: Callable[[float], None] | None = None) -> threading.Thread:
        """Probe `endpoint` in the background; `settle` is told the outcome once it is known."""
        thread = threading.Thread(target=self.run, args=(endpoint, timeout, settle, on_first_token),
                                  name=f"trial-probe-{endpoint.id}", daemon=True)
        thread.start()
        return thread

    def run(self, endpoint: Endpoint, timeout: float, settle: Settle,
            on_first_token: Callable[[float], None] | None = None) -> ProbeOutcome:
        """Probe `endpoint` now (within `timeout` seconds) and settle its trial; the outcome."""
        started = time.monotonic()
        error: BaseException | None = None
        try:
            self.client.chat(endpoint, PROBE_JOB, budget=timeout, on_first_token=on_first_token)
        except LLMPoolError as exc:
            error = exc
        except Exception as exc:  # never let a probe thread die silently: the trial must settle
            log.exception("trial probe of %s crashed", endpoint.id)
            error = exc
        outcome = probe_outcome(error)
        seconds = time.monotonic() - started
        if outcome == "success":
            log.info("trial probe of %s answered in %.2fs", endpoint.id, seconds)
        else:
            log.warning("trial probe of %s failed after %.2fs (%s): %s", endpoint.id, seconds, outcome,
                        getattr(error, "message", error))
        try:
            settle(endpoint, outcome, seconds)
        except Exception as exc:  # Redis away: the trial's lease runs out and another trial is taken
            log.warning("could not settle the trial probe of %s: %s", endpoint.id, exc)
        return outcome
