"""The fleet-wide gate in front of every LLM call: breaker, concurrency lease and rate limits in Redis.

Admission and settlement are one Lua call each (llmpool.admission). A call's concurrency lease is
short (AGENT_JOB_LEASE) and renewed by the process's LeaseKeeper while the call runs, so a killed
worker's slot comes back within a lease, not after the longest call it could have made. A call's
first token is one more (`first_token`): it ends the call's wait (suspicion reads the waits) and
adds its TTFT to the endpoint's histogram (llmpool.ttft).

With `probes`, a half-open trial won by a job is handed to a probe (llmpool.trial_probe): the job
is told "probing" and moves on, the probe's outcome settles the trial.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis

from llmpool.admission import POLL_CAP, PROBE_SUFFIX, Admission, Admitter, Reason, breaker_config, limits_for
from llmpool.endpoints import Endpoint
from llmpool.jobs import AdmitWith
from llmpool.leases import LeaseKeeper
from llmpool.runner import Outcome, Ticket
from llmpool.scripts import ScriptCall
from llmpool.settings import Settings
from llmpool.trial_probe import ProbeOutcome, TrialProbes
from llmpool.ttft import ttft_config

__all__ = ["RedisGate"]

log = logging.getLogger(__name__)

PROBING_RETRY = 0.25  # s: a job whose trial went to a probe, with nowhere else to go, looks again this soon


class RedisGate:
    """Admits through Redis, remembering open breakers so their endpoints cost no round trip.

    An open endpoint thereby leaves every job's candidates at once; when its open wait is over it
    is offered again at its rank and the first job to reach it takes the fleet-wide trial.
    """

    def __init__(self, admitter: Admitter, settings: Settings, *, leases: LeaseKeeper | None = None,
                 fleet_slots: Callable[[], int] | None = None, probes: TrialProbes | None = None) -> None:
        self.admitter = admitter
        self.settings = settings
        self.leases = leases
        self.breaker = breaker_config(settings)
        self.ttft = ttft_config(settings)
        self.fleet_slots = fleet_slots or (lambda: 0)  # the base of the concurrency share (llmpool.share)
        self._open_until: dict[str, float] = {}  # endpoint id -> monotonic time its wait ends
        self._open_why: dict[str, Reason] = {}  # endpoint id -> "open" or "suspect", for the refusals it caches
        self.probes = probes  # None: a trial is the winning job's own call

    def admit(self, endpoint: Endpoint, job_id: str, *, tokens: int, budget: float,
              fallback: bool = False) -> Admission:
        remaining = self._open_until.get(endpoint.id, 0.0) - time.monotonic()
        if remaining > 0:
            return Admission(allowed=False, trial=False, reason=self._open_why.get(endpoint.id, "open"),
                             retry_after=remaining)
        lease = min(budget, self.settings.agent_request_timeout) + self.settings.agent_lease_margin
        if self.leases is not None:  # renewed while the call runs
            lease = min(lease, self.leases.lease)
        limits = limits_for(endpoint, self.settings, fleet_slots=self.fleet_slots())
        ticket = self.admitter.admit(endpoint.id, job_id, tokens=tokens, limits=limits, breaker=self.breaker,
                                     lease=lease, ttft=self.ttft, fallback=fallback,
                                     probe_trials=self.probes is not None)
        return self.took(endpoint, job_id, ticket)

    def first_admission(self, endpoint: Endpoint, job_id: str, *, tokens: int, deadline: float | None,
                        default_span: float, fallback: bool = False) -> AdmitWith | None:
        """The admission of a job's first call, to take with its claim (llmpool/lua/job_start.lua, which
        computes the lease as `admit` does, from the job's deadline: its own, else the record's, else
        created + `default_span`); None when this process knows the endpoint is open (no round trip)."""
        if self._open_until.get(endpoint.id, 0.0) > time.monotonic():
            return None
        limits = limits_for(endpoint, self.settings, fleet_slots=self.fleet_slots())
        keys, args = self.admitter.admit_call(endpoint.id, job_id, tokens=tokens, limits=limits,
                                              breaker=self.breaker, lease=0, ttft=self.ttft, fallback=fallback,
                                              probe_trials=self.probes is not None)
        cap = "" if self.leases is None else self.leases.lease
        timing = ["" if deadline is None else repr(deadline), default_span, self.settings.agent_request_timeout,
                  self.settings.agent_lease_margin, cap]
        return AdmitWith(keys, [*timing, *args])

    def admitted(self, endpoint: Endpoint, job_id: str, reply: list[Any]) -> Admission:
        """What the claim's admission answered (`first_admission`), taken as `admit` takes its own."""
        return self.took(endpoint, job_id, self.admitter.admission(reply, ttft=self.ttft))

    def took(self, endpoint: Endpoint, job_id: str, ticket: Admission) -> Admission:
        """An admission's answer: an admitted call's lease is renewed, an open breaker remembered."""
        if ticket.trial and ticket.allowed and self.probes is not None:
            return self._probe(endpoint, job_id, ticket)
        if ticket.allowed and self.leases is not None:
            self.leases.hold_call(endpoint.id, job_id)
        if ticket.trial:  # one caller fleet-wide gets the trial: this line is the half-open transition
            log.info("breaker of %s half-open: job %s makes the trial call", endpoint.id, job_id)
        if ticket.reason == "suspect":  # once per process and open wait: later admits stop at the cache
            log.warning("%s is suspected of hanging (a call waits for its first token far past its usual "
                        "time, and nothing else on it moves): no new calls for %.1fs, then one trial",
                        endpoint.id, ticket.retry_after)
        if ticket.reason in ("open", "suspect"):
            self._open_until[endpoint.id] = time.monotonic() + ticket.retry_after
            self._open_why[endpoint.id] = ticket.reason
        return ticket

    def _probe(self, endpoint: Endpoint, job_id: str, ticket: Admission) -> Admission:
        """The trial `job_id` won goes to its probe, which holds it (admit.lua: `job_id` + PROBE_SUFFIX);
        the job is refused ("probing") and moves on. This process skips the endpoint until the probe settles."""
        assert self.probes is not None
        probe_id = job_id + PROBE_SUFFIX
        if self.leases is not None:  # renewed while the probe runs, as any call's
            self.leases.hold_call(endpoint.id, probe_id)
        timeout = self.probes.timeout(ticket.first_token_timeout)
        log.info("breaker of %s half-open: a probe makes the trial (won by job %s, waits %.1fs)",
                 endpoint.id, job_id, timeout)
        self._open_until[endpoint.id] = time.monotonic() + timeout
        self._open_why[endpoint.id] = "probing"

        def settle(probed: Endpoint, outcome: ProbeOutcome, seconds: float) -> None:
            if self._open_why.get(probed.id) == "probing":  # what Redis says from now on
                self._open_until.pop(probed.id, None)
            self.settle(probed, probe_id, ticket, outcome=outcome, reserved=0, used=None, duration=seconds)

        self.probes.start(endpoint, timeout, settle,
                          on_first_token=lambda seconds: self.first_token(endpoint, probe_id, seconds))
        return Admission(allowed=False, trial=False, reason="probing", retry_after=min(PROBING_RETRY, POLL_CAP))

    def first_token(self, endpoint: Endpoint, job_id: str, seconds: float) -> None:
        """The call's first token came after `seconds`: its wait ends, its TTFT joins the endpoint's."""
        try:
            self.admitter.first_token(endpoint.id, job_id, seconds, ttft=self.ttft)
        except redis.RedisError as exc:  # a lost sample must not cost the answer that is streaming in
            log.warning("could not record the first token of %s on %s: %s", job_id, endpoint.id, exc)

    def settle(self, endpoint: Endpoint, job_id: str, ticket: Ticket, *, outcome: Outcome, reserved: int,
               used: int | None, duration: float) -> None:
        call = self.settlement(endpoint, job_id, ticket, outcome=outcome, reserved=reserved, used=used,
                               duration=duration)
        assert call.on_reply is not None
        call.on_reply(call.script(keys=call.keys, args=call.args))

    def settlement(self, endpoint: Endpoint, job_id: str, ticket: Ticket, *, outcome: Outcome, reserved: int,
                   used: int | None, duration: float) -> ScriptCall:
        """`settle` as a script call to send with other writes (the job's finish: llmpool.run_gate);
        the lease keeper stops renewing the call's lease now."""
        if self.leases is not None:
            self.leases.drop_call(endpoint.id, job_id)
        call = self.admitter.settle_later(endpoint.id, job_id, outcome=outcome, trial=ticket.trial,
                                          reserved_tokens=reserved, used_tokens=used, duration=duration,
                                          limits=limits_for(endpoint, self.settings), breaker=self.breaker,
                                          ttft=self.ttft)

        def settled(reply: list[Any]) -> None:
            settlement = self.admitter.settlement(reply)
            _log_transition(endpoint, settlement.transition)
            if settlement.state == "open" and outcome in ("failure", "down"):
                # The base wait never outlasts the real one (which may have doubled); after it, Redis decides.
                self._open_until[endpoint.id] = time.monotonic() + self.breaker.open_wait
                self._open_why[endpoint.id] = "open"

        return replace(call, on_reply=settled)

    def pause(self, endpoint: Endpoint, seconds: float) -> None:
        log.info("endpoint %s paused %.1fs for every worker (a 429, or loading its model)", endpoint.id, seconds)
        self.admitter.pause(endpoint.id, seconds)


def _log_transition(endpoint: Endpoint, transition: str) -> None:
    """Each breaker transition once, fleet-wide: settle.lua names it to the one call that made it."""
    if transition == "opened":
        log.warning("breaker of %s opened: traffic moves to the next endpoint", endpoint.id)
    elif transition == "reopened":
        log.warning("breaker of %s open again: its trial call failed", endpoint.id)
    elif transition == "closed":
        log.info("breaker of %s closed: its trial call succeeded", endpoint.id)
