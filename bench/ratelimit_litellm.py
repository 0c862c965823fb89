"""LiteLLM's Router under the rate-limit scenario's load, set up as its multi-instance docs show.

Four Router instances (one per "worker"), the deployment's `rpm` in its litellm_params,
`enable_pre_call_checks=True`, `num_retries=0`, and one Redis shared by the four so that they count
together (docs.litellm.ai/docs/load_test_rpm). Requests are offered at `offered_per_minute` for
`seconds`, spread round-robin over the routers; a request the Router refuses (its rpm reached) is
not retried. LiteLLM counts per minute, so this part needs a minute at least.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

__all__ = ["offer_load"]


def _routers(url: str, rpm: int, count: int, redis_host: str, redis_port: int) -> list[Any]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of its model price list
    import litellm
    from litellm import Router

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
    logging.getLogger("LiteLLM Router").setLevel(logging.CRITICAL)
    model_list = [{"model_name": "llama", "litellm_params": {
        "model": "openai/meta-llama/Llama-3.1-70B-Instruct", "api_base": f"{url}/v1", "api_key": "none", "rpm": rpm}}]
    return [Router(model_list=model_list, num_retries=0, enable_pre_call_checks=True,
                   redis_host=redis_host, redis_port=redis_port) for _ in range(count)]


async def _offer(routers: list[Any], per_minute: float, seconds: float) -> dict[str, int]:
    outcomes: dict[str, int] = {}

    async def one(router: Any) -> None:
        try:
            await router.acompletion(model="llama", messages=[{"role": "user", "content": "x"}])
            kind = "answered"
        except Exception as exc:  # the Router's refusal (rate limit, no deployment) or a call error
            kind = type(exc).__name__
        outcomes[kind] = outcomes.get(kind, 0) + 1

    tasks = []
    loop = asyncio.get_running_loop()
    start, count = loop.time(), int(per_minute * seconds / 60)
    for n in range(count):
        await asyncio.sleep(max(0.0, start + n * 60 / per_minute - loop.time()))
        tasks.append(asyncio.create_task(one(routers[n % len(routers)])))
    await asyncio.gather(*tasks)
    return outcomes


def offer_load(url: str, *, rpm: int, routers: int, offered_per_minute: float, seconds: float,
               redis_host: str, redis_port: int) -> dict[str, int]:
    """Offer the load through `routers` Routers sharing one Redis; the outcome of each request."""
    return asyncio.run(_offer(_routers(url, rpm, routers, redis_host, redis_port), offered_per_minute, seconds))
