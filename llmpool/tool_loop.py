"""The worker's tool loop (issue 14): call the LLM, run the built-in tools it asks for, call again.

Plain logic, no Celery and no Redis: the task hands it `call` (one settled LLM call through the
gate with failover: llmpool.runner.run_chat) and `save` (the checkpoint of a completed round:
llmpool.jobs.JobStore.checkpoint_step). A round is one LLM answer with tool calls plus the runs of
those tools (in parallel, on a small bounded pool). After AGENT_TOOL_MAX_STEPS rounds the last
call is made with tool_choice "none"; an LLM that still calls a tool then fails the job
(tool_step_limit). A tool's failure, an unknown tool name or arguments that are not a JSON object
go back to the LLM as that call's tool message, never as the job's failure.

A run that takes a job over starts from the last checkpoint (`LoopState`): the messages the
rounds appended, their step records and their LLM calls' usage, so no finished tool run is
repeated and the answer's usage counts every round's call once (each call settled its own tokens
with the gate already; the answer's usage is what [STATS], the JSON answer and the metrics show).
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from llmpool.errors import JobExpired, ToolStepLimit
from llmpool.schemas import ChatJob, ChatResult, Message, Usage
from llmpool.tools import SUMMARY_MAX_CHARS, Tool, ToolResult

__all__ = ["LoopState", "run_tool_loop", "add_usage", "MAX_PARALLEL_TOOLS", "MAX_CALLS_PER_ROUND", "MAX_ANSWERED_CALLS",
           "ARGUMENTS_SHOWN"]

log = logging.getLogger(__name__)

MAX_PARALLEL_TOOLS = 4  # tool runs of one round at once; more wait for a free thread
ARGUMENTS_SHOWN = 200  # characters of a call's arguments kept in the step record (the history, the stream)
STUCK_GRACE = 2.0  # seconds past a tool's own bound before the loop stops waiting for it
# Tool calls of one answer that run; the rest get a too_many_calls result (a model asking for 100
# searches at once would spend the search API's credits and the round's whole time bound).
MAX_CALLS_PER_ROUND = 8
# Tool calls of one answer that are sent back at all (the rest get too_many_calls); any past this are
# dropped from the answer, so a model's burst of calls (a whole answer's list has no bound but its
# size in bytes) cannot grow the next request, the step records, the history and the stream with it.
MAX_ANSWERED_CALLS = 2 * MAX_CALLS_PER_ROUND


@dataclass(frozen=True)
class LoopState:
    """What completed rounds added: the messages after the job's own, one record per tool run, and
    the usage of the rounds' LLM calls (summed)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    rounds: int = 0
    usage: Usage = field(default_factory=Usage)

    def to_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "steps": self.steps, "rounds": self.rounds,
                "usage": self.usage.model_dump()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> LoopState:
        """A stored checkpoint; a missing or malformed one starts the loop from the beginning."""
        if not data:
            return cls()
        messages, steps, rounds = data.get("messages"), data.get("steps"), data.get("rounds")
        if not (isinstance(messages, list) and isinstance(steps, list) and isinstance(rounds, int) and rounds >= 0):
            log.warning("tool loop checkpoint is malformed: starting the loop again")
            return cls()
        try:
            for message in messages:
                Message.model_validate(message)
        except ValueError:
            log.warning("tool loop checkpoint holds a bad message: starting the loop again")
            return cls()
        return cls(messages=list(messages), steps=list(steps), rounds=rounds,
                   usage=_stored_usage(data.get("usage"), rounds))


Call = Callable[[ChatJob, int], ChatResult]  # (request, rounds completed) -> the LLM's answer
Save = Callable[[LoopState, list[dict[str, Any]]], None]  # (state after a round, that round's steps)


def run_tool_loop(job: ChatJob, *, tools: Mapping[str, Tool], call: Call, save: Save, deadline: float,
                  max_steps: int, resume: LoopState | None = None,
                  clock: Callable[[], float] = time.time) -> ChatResult:
    """Answer `job` with the built-in `tools` offered; `deadline` is unix time.

    Raises what `call` raises (the job's failure), ToolStepLimit, or JobExpired when the deadline
    passes between rounds.
    """
    state = resume or LoopState()
    offered = [tool.schema() for tool in tools.values()]
    while True:
        last = state.rounds >= max_steps
        request = job.model_copy(update={
            "messages": [*job.messages, *(Message.model_validate(m) for m in state.messages)],
            "tools": offered, "tool_choice": "none" if last else "auto"})
        result = call(request, state.rounds)
        usage = add_usage(state.usage, result.usage)
        if not result.tool_calls:
            return result.model_copy(update={"steps": state.steps, "usage": usage})
        if last:
            raise ToolStepLimit(f"the LLM still called tools after {max_steps} rounds of tool calls "
                                f"(AGENT_TOOL_MAX_STEPS), on a call made with tool_choice none",
                                steps=len(state.steps))
        if clock() >= deadline:
            raise JobExpired("the job's deadline passed before the tools the LLM asked for could run")
        round_no = state.rounds + 1
        if len(result.tool_calls) > MAX_ANSWERED_CALLS:
            log.warning("the LLM asked for %d tool calls in one answer: the %d past the first %d are dropped",
                        len(result.tool_calls), len(result.tool_calls) - MAX_ANSWERED_CALLS, MAX_ANSWERED_CALLS)
        planned = _plan_answer(result.tool_calls[:MAX_ANSWERED_CALLS], round_no, tools)
        steps, replies = _run_round(planned, tools, round_no=round_no, deadline=deadline, clock=clock)
        # The calls as sent back: each with the id its tool message answers, whatever the LLM left out;
        # content "" rather than null, which some servers (llama-cpp-python) answer with a 500.
        assistant = {"role": "assistant", "content": result.content or "", "tool_calls": [p.call for p in planned]}
        state = LoopState(messages=[*state.messages, assistant, *replies], steps=[*state.steps, *steps],
                          rounds=round_no, usage=usage)
        save(state, steps)


def add_usage(total: Usage, more: Usage) -> Usage:
    """Two calls' usage together; estimated when either's is."""
    return Usage(prompt_tokens=total.prompt_tokens + more.prompt_tokens,
                 completion_tokens=total.completion_tokens + more.completion_tokens,
                 total_tokens=total.total_tokens + more.total_tokens,
                 estimated=total.estimated or more.estimated)


def _stored_usage(data: Any, rounds: int) -> Usage:
    """A checkpoint's usage; one without it (or a bad one) after some rounds is an undercount: estimated."""
    try:
        return Usage.model_validate(data)
    except ValueError:
        if rounds:
            log.warning("tool loop checkpoint has no usage: the answer's usage leaves out the earlier rounds")
        return Usage(estimated=rounds > 0)


@dataclass(frozen=True)
class _Planned:
    """One tool call of the LLM's answer, checked: what to run, or why it cannot run."""

    call_id: str
    name: str
    arguments: dict[str, Any] | None
    shown: str  # the arguments as the step record keeps them (truncated)
    error: str | None  # set when the call is refused before running (unknown tool, bad arguments)
    call: dict[str, Any]  # OpenAI's shape of the call, complete, for the assistant message sent back


def _plan_answer(raw_calls: list[Any], round_no: int, tools: Mapping[str, Tool]) -> list[_Planned]:
    """The answer's calls, each with an id of its own: one the LLM left out or gave twice (some local
    servers number every answer's calls from call_0) is made here, once, and used in both the
    assistant message and the tool message, so the server sees each reply matched to its call."""
    used: set[str] = set()
    planned = []
    for index, raw in enumerate(raw_calls):
        given = raw.get("id") if isinstance(raw, dict) else None
        call_id = given if isinstance(given, str) and given and given not in used else f"call_r{round_no}_{index}"
        while call_id in used:
            call_id += "_"
        used.add(call_id)
        planned.append(_plan(index, call_id, raw, tools))
    return planned


def _plan(index: int, call_id: str, raw: Any, tools: Mapping[str, Tool]) -> _Planned:
    function = raw.get("function") if isinstance(raw, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    text = function.get("arguments") if isinstance(function, dict) else None
    name = name if isinstance(name, str) else ""
    text = text if isinstance(text, str) else json.dumps(text)
    shown = _shorten(text, ARGUMENTS_SHOWN)
    call = {"id": call_id, "type": "function", "function": {"name": name or "unnamed", "arguments": text}}
    if name not in tools:
        return _Planned(call_id, _shorten(name, 64), None, shown, "unknown_tool", call)
    if index >= MAX_CALLS_PER_ROUND:
        return _Planned(call_id, name, None, shown, "too_many_calls", call)
    try:
        arguments = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        return _Planned(call_id, name, None, shown, "bad_arguments", call)
    return _Planned(call_id, name, arguments, shown, None, call)


def _refusal(planned: _Planned, tools: Mapping[str, Tool]) -> ToolResult:
    if planned.error == "unknown_tool":
        offered = ", ".join(sorted(tools)) or "none"
        text = f"there is no tool named {planned.name!r}; the tools are: {offered}"
    elif planned.error == "too_many_calls":
        text = f"not run: at most {MAX_CALLS_PER_ROUND} tool calls of one answer run; ask again if still needed"
    else:
        text = "the arguments must be a JSON object matching the tool's parameters"
    return ToolResult(content=text, error=planned.error, duration=0.0, size=len(text),
                      summary=text[:SUMMARY_MAX_CHARS])


def _run_one(tool: Tool, arguments: dict[str, Any], deadline: float) -> ToolResult:
    started = time.monotonic()
    try:
        return tool.run(arguments, deadline=deadline)
    except Exception as exc:  # noqa: BLE001 - a tool must not raise; one that does fails its call, not the job
        # Where it raised, not its message: a tool's exception may quote the arguments it was given.
        log.error("tool %s raised %s (a tool must return its failure), at:\n%s", tool.name, type(exc).__name__,
                  "".join(traceback.format_tb(exc.__traceback__)).rstrip())
        text = f"the tool failed: {type(exc).__name__}"
        return ToolResult(content=text, error="tool_crashed", duration=time.monotonic() - started, size=len(text),
                          summary=text)


def _run_round(planned: list[_Planned], tools: Mapping[str, Tool], *, round_no: int, deadline: float,
               clock: Callable[[], float]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run one answer's tool calls (several at once): their step records and tool messages, in call order."""
    results: dict[int, ToolResult] = {i: _refusal(p, tools) for i, p in enumerate(planned) if p.error}
    runnable = [i for i, p in enumerate(planned) if p.error is None]
    if runnable:
        results.update(_run_parallel(planned, runnable, tools, deadline=deadline, clock=clock))
    steps, replies = [], []
    for i, call in enumerate(planned):
        result = results[i]
        steps.append({"round": round_no, "call_id": call.call_id, "tool": call.name, "arguments": call.shown,
                      "summary": _shorten(result.summary, SUMMARY_MAX_CHARS), "error": result.error,
                      "duration": round(result.duration, 3), "size": result.size})
        content = result.content if result.error is None else f"[tool error: {result.error}] {result.content}"
        replies.append({"role": "tool", "tool_call_id": call.call_id, "name": call.name, "content": content})
        log.info("tool %s (round %d) took %.2fs: %d bytes%s", call.name, round_no, result.duration, result.size,
                 f", error {result.error}" if result.error else "")
    return steps, replies


def _run_parallel(planned: list[_Planned], runnable: list[int], tools: Mapping[str, Tool], *, deadline: float,
                  clock: Callable[[], float]) -> dict[int, ToolResult]:
    """Each runnable call on the pool; one that outlives its bound by STUCK_GRACE is reported as a timeout."""
    pool = ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_TOOLS, len(runnable)), thread_name_prefix="tool")
    futures: dict[int, Future[ToolResult]] = {}
    for i in runnable:
        tool = tools[planned[i].name]
        context = contextvars.copy_context()  # the job's log fields follow the tool into its thread
        futures[i] = pool.submit(context.run, _run_one, tool, planned[i].arguments or {}, deadline)
    # Calls past MAX_PARALLEL_TOOLS start when one before them ends: each wave may take the longest
    # tool's bound (a tool bounds itself from when it starts), all of them the job's deadline at most.
    longest = max(tools[planned[i].name].timeout for i in runnable)
    waves = -(-len(runnable) // MAX_PARALLEL_TOOLS)
    bound = max(0.0, min(waves * longest, deadline - clock())) + STUCK_GRACE
    wait(futures.values(), timeout=bound)
    pool.shutdown(wait=False, cancel_futures=True)  # a stuck tool's thread is left to end on its own
    results: dict[int, ToolResult] = {}
    for i, future in futures.items():
        if future.done() and not future.cancelled():
            results[i] = future.result()
        else:
            text = f"the tool did not answer within {bound - STUCK_GRACE:.1f}s"
            results[i] = ToolResult(content=text, error="timeout", duration=bound, size=len(text), summary=text)
    return results


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
