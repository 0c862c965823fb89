"""What every route needs, opened once in the app's lifespan and reached through the request."""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from celery import Celery
from fastapi import Request

from llmpool.admission import Admitter
from llmpool.client import Client, producer_config
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from llmpool.llm_client import LLMClient, make_http_client
from llmpool.redis_conn import async_redis_client, celery_transport_options, redis_client
from llmpool.registry import Registry
from llmpool.settings import Settings

__all__ = ["ApiState", "open_state", "get_state", "control_app"]


@dataclass
class ApiState:
    settings: Settings
    keys: Keys
    redis: redis.Redis
    aredis: aioredis.Redis
    jobs: JobStore
    client: Client
    celery: Celery
    registry: Registry
    llm: LLMClient
    admitter: Admitter

    async def close(self) -> None:
        await self.aredis.aclose()
        self.redis.close()
        self.client.close()
        self.celery.close()
        self.llm.http.close()


def control_app(settings: Settings) -> Celery:
    """A producer-only Celery app for control tasks and broadcasts, with results (POST /refresh
    waits for one); it imports no worker code."""
    app = Celery("llmpool-api", set_as_current=False)
    app.conf.update({**producer_config(settings), "result_backend": settings.redis_url,
                     "result_backend_transport_options": celery_transport_options(settings)})
    return app


def open_state(settings: Settings) -> ApiState:
    keys = Keys(settings.agent_redis_prefix)
    sync = redis_client(settings, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30)
    # Reads block for up to BLOCK_MS; the socket timeout must outlast them.
    aredis = async_redis_client(settings, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30)
    jobs = JobStore(sync, keys, ttl=settings.agent_result_ttl, stream_ttl=settings.agent_stream_ttl)
    llm = LLMClient(make_http_client(settings, max_connections=20), settings)
    return ApiState(settings=settings, keys=keys, redis=sync, aredis=aredis, jobs=jobs,
                    client=Client(settings=settings, connection=sync), celery=control_app(settings),
                    registry=Registry(sync, keys), llm=llm, admitter=Admitter(sync, keys))


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.llmpool
    return state
