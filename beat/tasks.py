"""The control tasks beat schedules: discovery, health checks, the Redis memory watch, and the refresh
the API asks for.

They run from the `control` queue on the control worker (and on chat workers with a free slot).
Only refresh keeps a Celery result (POST /refresh waits for it); nobody reads the beat ticks'
results, so they store none. Each pass holds a Redis lock, so two beats started
by mistake, or a pass slower than its interval, never interleave: the second one just skips.
Every write of endpoint health happens under the health lock, whichever pass makes it.
Registered with `shared_task`: the Celery app lists this module in `include=`, so neither
package imports the other's app.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, shared_task

from llmpool.admission import Admitter
from llmpool.client import publish_chat
from llmpool.discovery import discover_all
from llmpool.health import Health, next_health
from llmpool.locks import pass_lock
from llmpool.polling import discovery_due
from llmpool.prober import probe_all
from llmpool.redis_memory import MemoryWarner, read_memory
from llmpool.registry import Registry, merge_discovery
from llmpool.resources import Resources, current
from llmpool.selection import Selection
from llmpool.server_kinds import LOAD_KINDS
from llmpool.server_load import LoadStore, load_ttl, progressed, read_loads
from llmpool.sweep import run_sweep
from llmpool.ttft import ttft_config

__all__ = ["discover", "health_check", "load", "redis_memory", "refresh", "sweep", "run_discovery", "run_health_pass",
           "run_load_pass", "run_sweep"]

log = logging.getLogger(__name__)
_memory_warner = MemoryWarner()  # per process: rate-limits the warning


def _summary(selection: Selection) -> dict[str, Any]:
    current = selection.current
    return {"current": current.id if current else None,
            "model": current.model_name if current else None, "pinned": selection.pinned,
            "candidates": [e.id for e in selection.order]}


def _probe(res: Resources, registry: Registry, ids: set[str] | None) -> dict[str, Health]:
    """Probe the registry's endpoints (all, or only `ids`) and return their new health."""
    settings = res.settings
    snap = registry.snapshot()
    endpoints = [e for e in snap.endpoints if ids is None or e.id in ids]
    now = time.time()
    results = probe_all(endpoints, http=res.probe_http, timeout=settings.agent_health_check_timeout,
                        max_workers=settings.agent_probe_connections)
    updated = {}
    for endpoint_id, result in results.items():
        before = snap.health.get(endpoint_id, Health())
        after = next_health(before, result, now=now, max_failures=settings.agent_max_failures,
                            recovery_successes=settings.agent_health_recovery_successes)
        if after.state != before.state:
            log.info("endpoint %s: %s -> %s (%s)", endpoint_id, before.state, after.state,
                     result.error or f"{result.latency:.3f}s")
        updated[endpoint_id] = after
    registry.write_health(updated)
    return updated


def _probe_new(res: Resources, registry: Registry, new: set[str]) -> None:
    """Probe endpoints discovery just added, under the health lock: a health pass running now
    would otherwise write the health it computed from an older snapshot over theirs."""
    timeout = res.settings.agent_health_check_timeout
    with pass_lock(res.redis, res.keys, "health", wait=timeout + 1) as mine:
        if mine:
            _probe(res, registry, new)
        else:  # the running health pass probes them, or the next one does
            log.info("health pass busy: %d new endpoints are probed by it", len(new))


def run_discovery(res: Resources, *, force: bool = False, wait: float = 0.0) -> dict[str, Any]:
    """One discovery pass: read every source, merge, probe what is new, reselect.

    `wait`: how long to wait for a pass another process is running (0: skip at once).
    """
    settings, registry = res.settings, res.registry
    with pass_lock(res.redis, res.keys, "discovery", wait=wait) as mine:
        if not mine:
            return {"skipped": "another discovery pass is running"}
        state = registry.discovery_state()
        selection = registry.selection()
        due, why = discovery_due(settings, now=time.time(), last_run=state.get("last_run"),
                                 has_llm=bool(selection and selection.current),
                                 empty_passes=int(state.get("empty_passes", 0)), force=force)
        if not due:
            return {"skipped": why}
        started = time.time()
        results = discover_all(settings, http=res.probe_http, redis=res.redis, keys=res.keys, force=force)
        snap = registry.snapshot()
        merged = merge_discovery(snap.records, results, now=started,
                                 grace=settings.agent_discovery_grace_period)
        registry.write_records(merged)
        new = set(merged) - set(snap.health)
        if new and settings.agent_health_check_enabled:
            _probe_new(res, registry, new)
        chosen = registry.recompute(settings, now=time.time())
        empty = 0 if chosen.current else int(state.get("empty_passes", 0)) + 1
        registry.record_discovery_pass(started=started, empty_passes=empty)
        failed = {r.source: r.error for r in results if not r.ok}
        for source, error in failed.items():
            log.warning("discovery source %s unavailable: %s", source, error)
        return {"reason": why, "endpoints": len(merged), "new": sorted(new), "failed_sources": failed,
                "duration": time.time() - started, **_summary(chosen)}


def run_health_pass(res: Resources) -> dict[str, Any]:
    """Probe every endpoint at once, apply the transitions, reselect."""
    settings = res.settings
    if not settings.agent_health_check_enabled:
        return {"skipped": "AGENT_HEALTH_CHECK_ENABLED is false"}
    with pass_lock(res.redis, res.keys, "health") as mine:
        if not mine:
            return {"skipped": "another health pass is running"}
        started = time.monotonic()
        updated = _probe(res, res.registry, None)
        chosen = res.registry.recompute(settings, now=time.time())
        return {"duration": time.monotonic() - started, "probed": len(updated),
                "states": {k: h.state for k, h in updated.items()}, **_summary(chosen)}


def run_load_pass(res: Resources) -> dict[str, Any]:
    """Read the load of every selected endpoint whose server reports one, and store it (TTL'd).

    Only the selection's endpoints: jobs go nowhere else, and it is one GET. Each server is read
    once (llmpool.server_load.read_loads), within the interval, so passes do not pile up. A server
    whose token counter moved since the last pass is seen working (no hang suspicion for a while).
    """
    settings = res.settings
    interval = settings.agent_load_interval
    if interval <= 0:
        return {"skipped": "AGENT_LOAD_INTERVAL is 0"}
    started = time.monotonic()
    selection = res.registry.selection()
    endpoints = [e for e in (selection.order if selection else []) if e.kind in LOAD_KINDS]
    if not endpoints:  # nothing reports its load: one GET, no lock, no request
        return {"duration": time.monotonic() - started, "read": 0, "loads": {}, "progressed": []}
    # Short and harmless if two overlap: no keeper thread renews the lock.
    with pass_lock(res.redis, res.keys, "load", renew=False) as mine:
        if not mine:
            return {"skipped": "another load pass is running"}
        timeout = min(settings.agent_health_check_timeout, max(1.0, interval))
        loads = read_loads(res.probe_http, endpoints, timeout=timeout, max_workers=settings.agent_probe_connections)
        store = LoadStore(res.redis, res.keys)
        working = progressed(store.figures(list(loads)), loads)
        store.write(loads, ttl=load_ttl(interval))
        if working:
            admitter, ttft = Admitter(res.redis, res.keys), ttft_config(settings)
            for endpoint_id in working:
                admitter.note_progress(endpoint_id, ttft=ttft)
        return {"duration": time.monotonic() - started, "read": len(loads), "progressed": working,
                "loads": {k: v.to_json() for k, v in loads.items()}}


@shared_task(name="llmpool.control.sweep", bind=True, ignore_result=True)
def sweep(self: Task) -> dict[str, Any]:
    """One sweep now (every worker also sweeps on its own thread; the lock makes them take turns)."""
    return run_sweep(current(), lambda job_id, queue, payload: publish_chat(self.app, job_id, queue, payload))


@shared_task(name="llmpool.control.discover", ignore_result=True)
def discover(force: bool = False, wait: float = 0.0) -> dict[str, Any]:
    """Beat's discovery tick (it decides itself whether a pass is due); a starting worker waits
    for a pass in progress, or one a killed worker left, instead of skipping."""
    return run_discovery(current(), force=force, wait=wait)


@shared_task(name="llmpool.control.health_check", ignore_result=True)
def health_check() -> dict[str, Any]:
    """Beat's health tick."""
    return run_health_pass(current())


@shared_task(name="llmpool.control.load", ignore_result=True)
def load() -> dict[str, Any]:
    """Beat's load tick: the servers' own load figures, for routing within groups."""
    return run_load_pass(current())


@shared_task(name="llmpool.control.redis_memory", ignore_result=True)
def redis_memory() -> dict[str, Any]:
    """Beat's Redis memory tick: a WARNING (rate-limited) before Redis fills, or when it cannot be
    kept from filling (no maxmemory) or may evict jobs (a policy other than noeviction)."""
    res = current()
    memory = read_memory(res.redis, warn_at=res.settings.agent_redis_memory_warn)
    _memory_warner.check(memory)
    return memory.to_dict()


@shared_task(name="llmpool.control.refresh")
def refresh() -> dict[str, Any]:
    """Discovery and health now (POST /refresh): the old and new selection."""
    res = current()
    before = res.registry.selection()
    discovery = run_discovery(res, force=True)
    health = run_health_pass(res)
    after = res.registry.selection() or Selection()
    return {"old": _summary(before or Selection()), "new": _summary(after), "discovery": discovery,
            "health": health}
