"""The sweep: hands back to their queues the jobs no worker holds.

Running jobs whose lease lapsed (their worker died), parked jobs that are due, and jobs whose
message may never have reached the broker are published again from their stored payload, to
their own priority queue. One pass at a time fleet-wide (a Redis lock); every worker process
runs a sweeper thread, so recovery needs neither beat nor a consumer that still hears the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from llmpool.locks import pass_lock
from llmpool.resources import Resources

__all__ = ["run_sweep", "Sweeper", "Publish", "SWEEP_BATCH"]

log = logging.getLogger(__name__)
SWEEP_BATCH = 500  # jobs handed back per pass at most; the next pass takes the rest
MIN_NAP = 0.05
RETRY_SKIPPED = 0.25
Publish = Callable[[str, str, dict[str, Any]], None]  # (job id, queue, payload)


def run_sweep(res: Resources, publish: Publish) -> dict[str, Any]:
    """One pass; skipped when another process is sweeping."""
    settings = res.settings
    # Renewal is not needed: a pass takes milliseconds, and two overlapping passes are harmless
    # (job_recover.lua takes each job off its set atomically, so none is published twice).
    with pass_lock(res.redis, res.keys, "sweep", renew=False) as mine:
        if not mine:
            return {"skipped": "another sweep is running"}
        recovered = res.jobs.recover(limit=SWEEP_BATCH, republish_grace=settings.agent_republish_after)
        counts: dict[str, int] = {}
        handed_back: list[tuple[str, str]] = []
        for job in recovered:
            try:
                publish(job.job_id, job.queue, job.payload)
            except Exception as exc:  # stays unpublished: the next pass tries again
                log.warning("sweep could not publish job %s: %s", job.job_id, exc)
                continue
            res.jobs.published(job.job_id)
            counts[job.why] = counts.get(job.why, 0) + 1
            handed_back.append((job.why, job.queue))
            if job.why != "due":  # a run that died or a publish that was lost: the job's own line
                log.info("sweep: job %s handed back to %s (%s)", job.job_id, job.queue, job.why,
                         extra={"job_id": job.job_id})
        res.metrics.swept(handed_back)
        _log_pass(counts)
        return {"recovered": counts, **res.jobs.counts()}


def _log_pass(counts: dict[str, int]) -> None:
    """One line per pass that handed anything back: WARNING when runs died or publishes were lost."""
    if not counts:
        return
    level = logging.INFO if set(counts) == {"due"} else logging.WARNING
    log.log(level, "sweep: %d jobs handed back (%s)", sum(counts.values()),
            ", ".join(f"{why}: {n}" for why, n in sorted(counts.items())))


class Sweeper:
    """A daemon thread that sweeps when the next job is due (fleet-wide, read from Redis), at least
    every AGENT_SWEEP_INTERVAL; `nudge` wakes it early for a job this process just parked."""

    def __init__(self, resources: Callable[[], Resources], publish: Publish) -> None:
        self._resources = resources
        self._publish = publish
        self._wake_at = 0.0
        self._lock = threading.Lock()
        self._nudged = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="llmpool-sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def nudge(self, at: float) -> None:
        """Make sure a pass runs at unix time `at` (a job this process parked is due then)."""
        with self._lock:
            self._wake_at = min(self._wake_at, at)
        self._nudged.set()

    def stop(self) -> None:
        self._stopped = True
        self._nudged.set()

    def _run(self) -> None:
        while not self._stopped:
            interval = self._resources().settings.agent_sweep_interval
            with self._lock:
                wake_at = min(self._wake_at, time.time() + interval)
            if self._nudged.wait(max(0.0, wake_at - time.time())):
                self._nudged.clear()  # a nudge: work out the wake time again
                continue
            with self._lock:
                self._wake_at = float("inf")
            self._pass()

    def _pass(self) -> None:
        res = self._resources()
        try:
            outcome = run_sweep(res, self._publish)
            # Wake when the next parked job is due or lease lapses anywhere in the fleet.
            next_due = res.jobs.next_due()
            if "skipped" in outcome:  # another process is sweeping: look again shortly
                next_due = min(next_due, time.time() + RETRY_SKIPPED)
        except Exception as exc:  # Redis away: the next pass tries again
            log.warning("sweep failed: %s", exc)
            next_due = time.time() + RETRY_SKIPPED
        with self._lock:
            self._wake_at = min(self._wake_at, max(next_due, time.time() + MIN_NAP))
