"""A chat job's tool loop inside the worker: which endpoints it runs on, its LLM calls, its checkpoints.

The glue between the task (workers/chat_task.py) and the loop (llmpool.tool_loop):

- Endpoints: a job with `"tools": "builtin"` runs only on endpoints that can call tools
  (llmpool.tool_endpoints). None among the candidates while a known endpoint for the job's model
  can (it is down): the job waits like any job without an LLM (no_llm_available at its deadline);
  none known at all: it fails at once with no_tool_capable_llm. A job with `"tools": "auto"`
  (/poll_requests' default) runs as a plain chat then. With no built-in tool configured, both are plain chats.
- Calls: each round's LLM call is one run_chat (admitted and settled through the gate, failover
  included). AGENT_JOB_MAX_CALLS budgets failures: a round that ended with tool calls gives its
  call back, so a job gets AGENT_JOB_MAX_CALLS calls plus one per completed round.
- Checkpoints: after each round, one Lua script (JobStore.checkpoint_step, guarded by the claim)
  stores the loop's state, adds the steps to the history and to the stream as `step` events. A
  later run of the job (after a failover or a wait) resumes from it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from llmpool.endpoints import Endpoint
from llmpool.errors import AllEndpointsFailed, JobCancelled, LeaseLost, NoLLMAvailable, NoToolCapableLLM
from llmpool.jobs import Claim, EventPublisher
from llmpool.model_choice import candidates_for
from llmpool.resources import Resources
from llmpool.runner import RunReport, run_chat
from llmpool.schemas import ChatJob, ChatResult
from llmpool.tool_endpoints import tool_capable, tool_capable_only
from llmpool.tool_loop import LoopState, run_tool_loop
from llmpool.tools import Tool

__all__ = ["tool_loop_endpoints", "run_job_tool_loop"]

log = logging.getLogger(__name__)


def tool_loop_endpoints(res: Resources, job: ChatJob, candidates: list[Endpoint],
                        tools: dict[str, Tool]) -> list[Endpoint]:
    """The candidates a job's tool loop runs on; [] when the job runs as a plain chat."""
    if not isinstance(job.tools, str) or not tools:
        return []
    capable = tool_capable_only(candidates, res.settings)
    if capable or job.tools == "auto":
        return capable
    known = candidates_for(res.registry.snapshot().endpoints, job.model, aliases=res.settings.agent_model_aliases,
                           fallbacks=res.settings.agent_model_fallbacks)  # up or not
    if any(tool_capable(e, res.settings) for e in known):
        raise NoLLMAvailable("No endpoint that can call tools is up yet")
    raise NoToolCapableLLM("The job asks for the built-in tools and no endpoint can call tools (TT-Studio's "
                           "tool_calling_enabled, an OpenAI-compatible server, or AGENT_TOOL_ENDPOINTS)")


def run_job_tool_loop(res: Resources, job_id: str, job: ChatJob, claim: Claim, publisher: EventPublisher,
                      report: RunReport, *, deadline: float, candidates: list[Endpoint],
                      tools: dict[str, Tool]) -> ChatResult:
    """The job's answer through the tool loop, resumed from its last checkpoint when it has one."""
    resume = LoopState.from_dict(res.jobs.tool_checkpoint(job_id)) if claim.claim > 1 else LoopState()
    if resume.rounds:
        log.info("job %s resumes its tool loop after round %d (%d tool runs done)", job_id, resume.rounds,
                 len(resume.steps))

    def call(request: ChatJob, rounds: int) -> ChatResult:
        left = res.settings.agent_job_max_calls + rounds - claim.calls - report.calls
        if left <= 0:
            raise AllEndpointsFailed(f"the job used all its LLM calls ({claim.calls + report.calls} made, "
                                     f"{rounds} of them answered with tool calls)")
        result, _ = run_chat(request, job_id=job_id, candidates=candidates, client=res.llm, publisher=publisher,
                             deadline=deadline, gate=res.gate, max_calls=report.calls + left, report=report,
                             hedging=res.hedging)
        return result

    def save(state: LoopState, steps: list[dict[str, Any]]) -> None:
        publisher.flush()  # the round's streamed text goes before its steps
        now = time.time()
        saved = res.jobs.checkpoint_step(job_id, claim=claim.claim, checkpoint=state.to_dict(),
                                         history=[{"event": "tool", "at": now, **step} for step in steps],
                                         events=steps)
        if saved:
            return
        if publisher.cancelled:
            raise JobCancelled("the job was cancelled", calls=report.calls)
        publisher.lost = True
        raise LeaseLost("this run lost the job to another run between two tool rounds", calls=report.calls)

    return run_tool_loop(job, tools=tools, call=call, save=save, deadline=deadline,
                         max_steps=res.settings.agent_tool_max_steps, resume=resume)
