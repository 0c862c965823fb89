"""What every route needs, opened once in the app's lifespan and reached through the request."""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from celery import Celery
from fastapi import Request

from llmpool.admission import Admitter
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from llmpool.llm_client import LLMClient, make_http_client
from llmpool.registry import Registry
from llmpool.settings import Settings

__all__ = ["ApiState", "open_state", "get_state"]


@dataclass
class ApiState:
    settings: Settings
    keys: Keys
    redis: redis.Redis
    aredis: aioredis.Redis
    jobs: JobStore
    celery: Celery
    registry: Registry
    llm: LLMClient
    admitter: Admitter

    async def close(self) -> None:
        await self.aredis.aclose()
        self.redis.close()
        self.llm.http.close()


def open_state(settings: Settings, celery: Celery) -> ApiState:
    keys = Keys(settings.agent_redis_prefix)
    sync = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=10,
                                health_check_interval=30)
    # Reads block for up to BLOCK_MS; the socket timeout must outlast them.
    aredis = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=30,
                                     health_check_interval=30)
    jobs = JobStore(sync, keys, ttl=settings.agent_result_ttl, stream_ttl=settings.agent_stream_ttl)
    llm = LLMClient(make_http_client(settings, max_connections=20), settings)
    return ApiState(settings=settings, keys=keys, redis=sync, aredis=aredis, jobs=jobs, celery=celery,
                    registry=Registry(sync, keys), llm=llm, admitter=Admitter(sync, keys))


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.llmpool
    return state
