"""Discovery: where endpoints come from, one small module per source, all read at once.

Sources: `static` (what settings name: cloud, the named container, the local host LLM),
`backend` (TT-Studio's deployed chat containers, shared through a Redis cache),
`openai:<base>` (each AGENT_OPENAI_SERVERS entry's /v1/models) and `ollama:<base>` (each
AGENT_OLLAMA_SERVERS entry's /api/tags). Each returns a SourceResult; one that could not be read
says ok=False, and the registry keeps that source's last endpoints.

    results = discover_all(settings, http=probe_http, redis=redis, keys=keys)

`http` is the control plane's own client (llmpool.resources: `probe_http`), never the chat pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial

import httpx
from redis import Redis

from llmpool.discovery.backend import BACKEND_SOURCE, backend_timeout, discover_backend, parse_deployed
from llmpool.discovery.ollama import parse_tags, read_ollama_server
from llmpool.discovery.openai_servers import learn_kind, parse_models, read_openai_server, server_timeout
from llmpool.discovery.source import SourceResult
from llmpool.discovery.static import STATIC_SOURCE, discover_static
from llmpool.keys import Keys
from llmpool.settings import Settings

__all__ = [
    "SourceResult", "discover_all", "discover_backend", "discover_static", "parse_deployed",
    "parse_models", "parse_tags", "read_ollama_server", "read_openai_server",
]

log = logging.getLogger("llmpool.discovery")

# Each read runs under a wall-clock deadline of its timeout (llmpool.http_deadline), which DNS
# resolution escapes; past twice its timeout plus this, a source is reported as failed and its
# thread is left to finish on its own.
GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class _Job:
    source: str
    timeout: float
    read: Callable[[], SourceResult]


def discover_all(settings: Settings, *, http: httpx.Client, redis: Redis, keys: Keys,
                 force: bool = False) -> list[SourceResult]:
    """Every enabled source, read concurrently (a thread per source), each bounded by its timeout.

    `force` skips the backend's cache (POST /refresh). Results come in a fixed order: static,
    backend, the OpenAI servers, the Ollama servers, as configured.
    """
    jobs = _jobs(settings, http=http, redis=redis, keys=keys, force=force)
    pool = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="discovery")
    try:
        futures = [pool.submit(job.read) for job in jobs]
        started = time.monotonic()
        return [_outcome(job, future, started) for job, future in zip(jobs, futures, strict=True)]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _jobs(settings: Settings, *, http: httpx.Client, redis: Redis, keys: Keys,
          force: bool) -> list[_Job]:
    """The enabled sources, each with its timeout and the call that reads it."""
    timeout = server_timeout(settings)
    jobs = [_Job(STATIC_SOURCE, timeout * 2, partial(_static_with_kinds, settings, http=http, timeout=timeout))]
    if settings.agent_auto_discovery:
        read = partial(discover_backend, settings, http=http, redis=redis, keys=keys, force=force)
        jobs.append(_Job(BACKEND_SOURCE, backend_timeout(settings), read))
    for base in settings.agent_openai_servers:
        read = partial(read_openai_server, base, http=http, timeout=timeout)
        jobs.append(_Job(f"openai:{base}", timeout, read))
    for base in settings.agent_ollama_servers:
        read = partial(read_ollama_server, base, http=http, timeout=timeout)
        jobs.append(_Job(f"ollama:{base}", timeout, read))
    return jobs


def _static_with_kinds(settings: Settings, *, http: httpx.Client, timeout: float) -> SourceResult:
    """The endpoints the settings name, each asked what server it is (at once: a down local LLM
    costs the pass no more than one timeout). The registry keeps what an earlier pass learned
    when this one could not read it (llmpool.registry)."""
    result = discover_static(settings)
    if not result.endpoints:
        return result
    with ThreadPoolExecutor(max_workers=len(result.endpoints), thread_name_prefix="discovery-kind") as pool:
        learned = list(pool.map(lambda e: learn_kind(e, http=http, timeout=timeout), result.endpoints))
    return SourceResult(result.source, result.ok, learned, result.error)


def _outcome(job: _Job, future: Future[SourceResult], started: float) -> SourceResult:
    """The job's result, or ok=False if it overran its bound or broke."""
    bound = job.timeout * 2 + GRACE_SECONDS
    try:
        return future.result(timeout=max(0.0, started + bound - time.monotonic()))
    except FutureTimeout:
        log.warning("discovery: %s gave no result within %.1fs", job.source, bound)
        return SourceResult(job.source, False, [], f"no result within {bound:g}s")
    except Exception as exc:  # noqa: BLE001 - a bug in one source must not hide the others
        log.exception("discovery: %s failed unexpectedly", job.source)
        return SourceResult(job.source, False, [], f"internal error ({type(exc).__name__})")
