"""The one owner of every Redis key llmpool writes; no key string appears anywhere else.

All keys live under one prefix (`AGENT_REDIS_PREFIX`, default `llmpool`) so that several pools can
share a Redis and `redis-cli --scan --pattern 'llmpool:*'` shows everything that is ours. Celery's
own keys (queues, results) are Celery's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["Keys", "owner_tag"]


def owner_tag(owner: str) -> str:
    """A short fixed-size digest of an owner (a token's `sub`, any text) that is safe in a key or job id."""
    return hashlib.blake2b(owner.encode("utf-8", errors="surrogatepass"), digest_size=12).hexdigest()


@dataclass(frozen=True)
class Keys:
    prefix: str = "llmpool"

    def job(self, job_id: str) -> str:
        """Hash: one chat job's state, attempts, endpoint, timings, result or error."""
        return f"{self.prefix}:job:{job_id}"

    def job_stream(self, job_id: str) -> str:
        """Stream: a job's tokens, reset markers and its final `end` event."""
        return f"{self.prefix}:stream:{job_id}"

    def job_history(self, job_id: str) -> str:
        """List: a job's attempt history as JSON entries (claims, calls, refusals, waits, recoveries)."""
        return f"{self.prefix}:history:{job_id}"

    def jobs_running(self) -> str:
        """Sorted set: job id -> claim lease expiry, for every running job (the sweep's orphan list)."""
        return f"{self.prefix}:jobs:running"

    def jobs_parked(self) -> str:
        """Sorted set: job id -> due time, for jobs waiting in Redis (no LLM, every endpoint refused)."""
        return f"{self.prefix}:jobs:parked"

    def jobs_unpublished(self) -> str:
        """Sorted set: job id -> when it was last put on a queue, until the broker has its message."""
        return f"{self.prefix}:jobs:unpublished"

    def memory_room(self) -> str:
        """String with a short TTL: a submit's INFO memory found Redis under half full (job_create.lua)."""
        return f"{self.prefix}:memory:room"

    def conversation(self, thread_id: str, owner: str | None = None) -> str:
        """List: the last messages of one thread, as JSON, oldest first.

        With an owner (the API's authenticated subject) the thread is theirs: the key holds a digest
        of the owner after `~`, a character no thread_id has, so no thread name reaches another's.
        """
        if owner is None:
            return f"{self.prefix}:conv:{thread_id}"
        return f"{self.prefix}:conv:~{owner_tag(owner)}:{thread_id}"

    def workers(self) -> str:
        """Sorted set: worker hostname -> time of its last heartbeat."""
        return f"{self.prefix}:workers"

    def worker_stats(self, hostname: str) -> str:
        """String with a TTL: a worker's last heartbeat as JSON (its processes, host and GPU figures)."""
        return f"{self.prefix}:worker:{hostname}"

    def endpoints(self) -> str:
        """Hash: endpoint id -> its record (endpoint, source, first/last seen, missing since)."""
        return f"{self.prefix}:registry:endpoints"

    def health(self) -> str:
        """Hash: endpoint id -> its health (state, counters, latency, last error)."""
        return f"{self.prefix}:registry:health"

    def pin(self) -> str:
        """String: the endpoint id pinned by POST /select_model."""
        return f"{self.prefix}:registry:pin"

    def selection(self) -> str:
        """String: the ordered candidates every worker uses, as JSON."""
        return f"{self.prefix}:registry:selection"

    def discovery_state(self) -> str:
        """Hash: when discovery last ran and how many passes found no LLM in a row."""
        return f"{self.prefix}:registry:discovery"

    def lock(self, name: str) -> str:
        """A redis-py lock keeping two passes of one kind (discovery, health) from interleaving."""
        return f"{self.prefix}:lock:{name}"

    def discovery_cache(self, source: str) -> str:
        """String: the last good raw answer of a discovery source, kept AGENT_DISCOVERY_CACHE_TTL."""
        return f"{self.prefix}:discovery:cache:{source}"

    def breaker(self, endpoint_id: str) -> str:
        """Hash: one endpoint's circuit breaker (state, failure counts, opened_at, open_wait, trips)."""
        return f"{self.prefix}:breaker:{endpoint_id}"

    def breaker_trial(self, endpoint_id: str) -> str:
        """String with a TTL: the job holding an endpoint's one half-open trial call."""
        return f"{self.prefix}:trial:{endpoint_id}"

    def leases(self, endpoint_id: str) -> str:
        """Sorted set: job id -> lease expiry, one member per call in flight on an endpoint."""
        return f"{self.prefix}:leases:{endpoint_id}"

    def rate(self, endpoint_id: str, kind: str) -> str:
        """String with a TTL: the GCRA theoretical arrival time of one limit (`rpm` or `tpm`)."""
        return f"{self.prefix}:rate:{kind}:{endpoint_id}"

    def pause(self, endpoint_id: str) -> str:
        """String with a TTL: an endpoint paused by a 429's Retry-After, for every worker."""
        return f"{self.prefix}:pause:{endpoint_id}"

    def server_load(self, endpoint_id: str) -> str:
        """String with a TTL: the load an endpoint's server last reported (vLLM /metrics, llama.cpp /slots), as JSON."""
        return f"{self.prefix}:load:{endpoint_id}"

    def awaiting(self, endpoint_id: str) -> str:
        """Sorted set: job id -> when its call started, for calls on an endpoint with no first token yet."""
        return f"{self.prefix}:awaiting:{endpoint_id}"

    def ttft(self, endpoint_id: str) -> str:
        """Hash with a TTL: an endpoint's recent TTFT histogram, its percentiles and its last progress."""
        return f"{self.prefix}:ttft:{endpoint_id}"

    def api_wake(self, hub_id: str) -> str:
        """Stream with a TTL, at most one entry: XADDed to end an API hub's blocking XREAD early."""
        return f"{self.prefix}:api:wake:{hub_id}"

    def metric(self, family: str) -> str:
        """Hash: one metric family's fleet-wide series (label values as JSON -> count or sum), added
        to by every worker and read by the API at scrape time."""
        return f"{self.prefix}:metrics:{family}"

    @staticmethod
    def celery_queue(queue: str) -> str:
        """Celery's list for a queue (kombu names it after the queue, outside our prefix)."""
        return queue

    def pattern(self) -> str:
        """Glob matching every key of this prefix."""
        return f"{self.prefix}:*"
