"""One heartbeat per worker process renews the claim leases of every job the process runs.

A running job's claim is short (AGENT_JOB_LEASE, ~30 s), so a job whose worker died is found by
the sweep within that time; a live job's claim never lapses however long it runs, because this
thread renews all of them in one round trip every third of a lease. A job the renewal reports as
lost (its lease lapsed, e.g. while Redis was away, and the sweep handed it to another worker) is
marked so its run writes nothing more. The same thread renews the endpoint concurrency leases of
the process's calls in flight, so a killed worker's slots come back within a lease too.

The thread also looks every CANCEL_POLL for held jobs that were cancelled (`DELETE /jobs/{id}`,
`Client.cancel`: their state is `cancelled`, one pipelined HGET per held job, and only while it
holds jobs) and stops their runs: the publisher writes nothing more and their calls in flight are
cut (llmpool.http_deadline.CallCancel), so a cancelled call is abandoned within a second and
settled neutral like a hedge's loser.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from llmpool.admission import Admitter
from llmpool.jobs import EventPublisher, JobStore

__all__ = ["LeaseKeeper"]

log = logging.getLogger(__name__)

CANCEL_POLL = 0.5  # seconds between looks for cancelled jobs: a cancel takes effect within about this
# Held jobs looked at per look, in turn: a gevent worker holding 10,000 would otherwise send 20,000
# HGETs a second (13% of its CPU at 1,500 held); past this many a cancel takes held / CANCEL_BATCH looks.
CANCEL_BATCH = 1000


class LeaseKeeper:
    """The jobs this process holds (id -> claim and publisher), renewed by one daemon thread."""

    def __init__(self, store: JobStore, *, lease: float, admitter: Admitter | None = None,
                 wait: Callable[[float], bool] | None = None) -> None:
        self.store = store
        self.admitter = admitter
        self.lease = lease
        self.every = lease / 3
        self.cancel_poll = min(CANCEL_POLL, self.every)
        self._held: dict[str, EventPublisher] = {}
        self._cancel_turn = 0  # where in the held jobs the next look for cancels starts
        self._calls: set[tuple[str, str]] = set()  # (endpoint id, job id) of calls in flight
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self._thread: threading.Thread | None = None

    def hold(self, job_id: str, publisher: EventPublisher) -> None:
        with self._lock:
            self._held[job_id] = publisher
            self._start()

    def hold_call(self, endpoint_id: str, job_id: str) -> None:
        """An admitted call: its concurrency lease is renewed until `drop_call`."""
        with self._lock:
            self._calls.add((endpoint_id, job_id))
            self._start()

    def drop_call(self, endpoint_id: str, job_id: str) -> None:
        with self._lock:
            self._calls.discard((endpoint_id, job_id))

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llmpool-leases", daemon=True)
            self._thread.start()

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def held(self) -> dict[str, int]:
        with self._lock:
            return {job_id: p.claim or 0 for job_id, p in self._held.items()}

    def hand_back_all(self, reason: str) -> list[str]:
        """Give every held job back to the fleet now (parked, due at once); their runs stop writing."""
        with self._lock:
            held = list(self._held.items())
        handed = []
        for job_id, publisher in held:
            entry = {"event": "handed_back", "reason": reason}
            if self.store.park(job_id, claim=publisher.claim or 0, delay=0, calls=0, history=[entry]):
                publisher.lost = True
                handed.append(job_id)
        return handed

    def renew_once(self) -> set[str]:
        """Renew every held lease now; marks and returns the jobs this process lost."""
        lost = self.store.renew(self.held(), lease=self.lease)
        with self._lock:
            calls = list(self._calls)
        if self.admitter is not None:
            self.admitter.refresh_leases(calls, self.lease)
        with self._lock:
            for job_id in lost:
                publisher = self._held.get(job_id)
                if publisher is not None and not publisher.lost:
                    log.warning("job %s: lease lost (another worker has it now); this run stops writing", job_id)
                    publisher.lost = True
        return lost

    def stop_cancelled(self) -> set[str]:
        """Stop the runs of held jobs that were cancelled; returns their ids."""
        with self._lock:
            held = dict(self._held)
        turn = list(held)
        if len(turn) > CANCEL_BATCH:
            start = self._cancel_turn % len(turn)
            turn = (turn[start:] + turn[:start])[:CANCEL_BATCH]
            self._cancel_turn = start + CANCEL_BATCH
        cancelled = self.store.cancelled([j for j in turn if not held[j].cancelled])
        for job_id in cancelled:
            log.info("job %s was cancelled: its run stops and its calls are abandoned", job_id)
            held[job_id].stop()
        return cancelled

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        next_renewal = time.monotonic() + self.every
        while not self._wait(self.cancel_poll):
            try:
                self.stop_cancelled()
            except Exception as exc:  # Redis away: the renewal below says so, once a third of a lease
                log.debug("could not look for cancelled jobs: %s", exc)
            if time.monotonic() < next_renewal:
                continue
            next_renewal = time.monotonic() + self.every
            try:
                self.renew_once()
            except Exception as exc:  # Redis away: keep trying; the sweep decides what lapsed
                log.warning("could not renew job leases: %s", exc)
