"""LiteLLM's Router on the hung-endpoint scenario, configured as its docs show a user doing it.

Two model groups, one deployment each (the 70B and the 8B, OpenAI-compatible servers), a fallback
from the 70B's group to the 8B's, and `timeout=30` for the whole call; every other Router setting
keeps its default (retries, cooldowns). Chats are `acompletion` calls on one asyncio loop, sent
open-loop on the plan's timeline, so a hung call holds nothing but its own coroutine.

LiteLLM is a bench-only dependency (`pip install -e .[bench]`); nothing in llmpool imports it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from bench.hung_timeline import Chat, Plan

__all__ = ["ROUTER_TIMEOUT", "failed_calls_counter", "run_litellm"]

ROUTER_TIMEOUT = 30.0
BIG_GROUP, SMALL_GROUP = "llama-3.1-70b", "llama-3.1-8b"


def _router(big_url: str, small_url: str, timeout: float = ROUTER_TIMEOUT) -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of its model price list
    import litellm
    from litellm import Router

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
    logging.getLogger("LiteLLM Router").setLevel(logging.CRITICAL)
    model_list = [
        {"model_name": BIG_GROUP, "litellm_params": {"model": "openai/meta-llama/Llama-3.1-70B-Instruct",
                                                     "api_base": f"{big_url}/v1", "api_key": "none"}},
        {"model_name": SMALL_GROUP, "litellm_params": {"model": "openai/meta-llama/Llama-3.1-8B-Instruct",
                                                       "api_base": f"{small_url}/v1", "api_key": "none"}},
    ]
    return Router(model_list=model_list, fallbacks=[{BIG_GROUP: [SMALL_GROUP]}], timeout=timeout)


async def _one(router: Any, index: int, sent: float) -> Chat:
    started = time.monotonic()
    try:
        response = await router.acompletion(model=BIG_GROUP, messages=[{"role": "user", "content": f"chat {index}"}])
    except Exception as exc:  # the Router's own error after its retries and fallbacks
        return Chat(sent=sent, latency=None, error=type(exc).__name__)
    answered_by = "8b" if "8b" in str(response.model).lower() else "70b"
    return Chat(sent=sent, latency=time.monotonic() - started, endpoint=answered_by)


async def _drive(router: Any, plan: Plan, hang: Callable[[], None]) -> tuple[list[Chat], float]:
    t0 = time.monotonic()
    tasks, hang_started = [], -1.0
    for index in range(plan.chats):
        at = plan.send_at(index)
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        if hang_started < 0 and at >= plan.hang_at:
            hang()
            hang_started = time.monotonic() - t0
        tasks.append(asyncio.create_task(_one(router, index, time.monotonic() - t0)))
    chats = await asyncio.gather(*tasks)
    return list(chats), hang_started


def run_litellm(plan: Plan, *, big_url: str, small_url: str, hang: Callable[[], None],
                timeout: float = ROUTER_TIMEOUT) -> tuple[list[Chat], float]:
    """Every chat of the plan through LiteLLM's Router; `hang` is called when the outage starts.

    Returns the chats and when the hang started (seconds after the first chat).
    """
    router = _router(big_url, small_url, timeout)
    return asyncio.run(_drive(router, plan, hang))


def failed_calls_counter() -> Any:
    """A LiteLLM callback counting the calls that failed (each deployment call, retries included);
    registered on litellm.callbacks until `remove()` is called. Its `.failed` is the count."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of its model price list
    import litellm
    from litellm.integrations.custom_logger import CustomLogger

    class FailedCalls(CustomLogger):  # type: ignore[misc]
        failed = 0

        async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                          end_time: Any) -> None:
            self.failed += 1

        def remove(self) -> None:
            litellm.callbacks = [c for c in litellm.callbacks if c is not self]

    counter = FailedCalls()
    litellm.callbacks = [*litellm.callbacks, counter]
    return counter
