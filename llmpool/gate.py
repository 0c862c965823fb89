"""The fleet-wide gate in front of every LLM call: breaker, concurrency lease and rate limits in Redis.

Admission and settlement are one Lua call each (llmpool.admission). A call's concurrency lease is
short (AGENT_JOB_LEASE) and renewed by the process's LeaseKeeper while the call runs, so a killed
worker's slot comes back within a lease, not after the longest call it could have made.
"""

from __future__ import annotations

import logging
import time

from llmpool.admission import Admission, Admitter, breaker_config, limits_for
from llmpool.endpoints import Endpoint
from llmpool.leases import LeaseKeeper
from llmpool.runner import Outcome, Ticket
from llmpool.settings import Settings

__all__ = ["RedisGate"]

log = logging.getLogger(__name__)


class RedisGate:
    """Admits through Redis, remembering open breakers so their endpoints cost no round trip.

    An open endpoint thereby leaves every job's candidates at once; when its open wait is over it
    is offered again at its rank and the first job to reach it takes the fleet-wide trial.
    """

    def __init__(self, admitter: Admitter, settings: Settings, *, leases: LeaseKeeper | None = None) -> None:
        self.admitter = admitter
        self.settings = settings
        self.leases = leases
        self.breaker = breaker_config(settings)
        self._open_until: dict[str, float] = {}  # endpoint id -> monotonic time its wait ends

    def admit(self, endpoint: Endpoint, job_id: str, *, tokens: int, budget: float) -> Admission:
        remaining = self._open_until.get(endpoint.id, 0.0) - time.monotonic()
        if remaining > 0:
            return Admission(allowed=False, trial=False, reason="open", retry_after=remaining)
        lease = min(budget, self.settings.agent_request_timeout) + self.settings.agent_lease_margin
        if self.leases is not None:  # renewed while the call runs
            lease = min(lease, self.leases.lease)
        ticket = self.admitter.admit(endpoint.id, job_id, tokens=tokens, limits=limits_for(endpoint, self.settings),
                                     breaker=self.breaker, lease=lease)
        if ticket.allowed and self.leases is not None:
            self.leases.hold_call(endpoint.id, job_id)
        if ticket.reason == "open":
            self._open_until[endpoint.id] = time.monotonic() + ticket.retry_after
        return ticket

    def settle(self, endpoint: Endpoint, job_id: str, ticket: Ticket, *, outcome: Outcome, reserved: int,
               used: int | None, duration: float) -> None:
        if self.leases is not None:
            self.leases.drop_call(endpoint.id, job_id)
        state = self.admitter.settle(endpoint.id, job_id, outcome=outcome, trial=ticket.trial,
                                     reserved_tokens=reserved, used_tokens=used, duration=duration,
                                     limits=limits_for(endpoint, self.settings), breaker=self.breaker)
        if state == "open" and outcome == "failure":
            log.warning("breaker of %s is open: traffic moves to the next endpoint", endpoint.id)
            # The base wait never outlasts the real one (which may have doubled); after it, Redis decides.
            self._open_until[endpoint.id] = time.monotonic() + self.breaker.open_wait

    def pause(self, endpoint: Endpoint, seconds: float) -> None:
        log.info("endpoint %s answered 429: paused %.1fs for every worker", endpoint.id, seconds)
        self.admitter.pause(endpoint.id, seconds)
