"""One job run's view of the gate: its first admission came with the claim, its last settlement
leaves with the job's finish, so a first run on a healthy endpoint costs three round trips of ours
(claim + admit, the first token, settle + finish + metrics) instead of six.

Only what can wait without changing a decision waits. A successful call's settlement is held back
until the job's finish takes it (`take`), or until anything else goes to the gate (another admit,
another settle, a pause), or the run ends (`close`): the breaker of an endpoint that answered has
nothing to decide meanwhile, and its concurrency lease stays renewed until the settlement is sent.
Failures settle at once, as before, so the next candidate's admission sees them.
"""

from __future__ import annotations

import threading

from llmpool.admission import Admission
from llmpool.endpoints import Endpoint
from llmpool.gate import RedisGate
from llmpool.runner import Outcome, Ticket
from llmpool.scripts import ScriptCall

__all__ = ["RunGate"]


class RunGate:
    """A Gate for one run of one job, in front of the process's RedisGate."""

    def __init__(self, gate: RedisGate, job_id: str, *, first: tuple[Endpoint, Admission] | None = None,
                 reserved: int = 0) -> None:
        self.gate = gate
        self.job_id = job_id
        self._first = first  # the admission the claim took, until the runner asks for that endpoint
        self._reserved = reserved  # the tokens it reserved, given back if it goes unused
        self._held: ScriptCall | None = None  # a success's settlement, waiting for the finish
        self._lock = threading.Lock()  # hedge legs settle from their own threads

    def admit(self, endpoint: Endpoint, job_id: str, *, tokens: int, budget: float, fallback: bool = False) -> Ticket:
        with self._lock:
            first, self._first = self._first, None
        if first is not None and first[0].id == endpoint.id:
            return first[1]
        if first is not None:  # the runner went elsewhere first (e.g. a tool loop's endpoints)
            self._release(first)
        self.flush()
        return self.gate.admit(endpoint, job_id, tokens=tokens, budget=budget, fallback=fallback)

    def settle(self, endpoint: Endpoint, job_id: str, ticket: Ticket, *, outcome: Outcome, reserved: int,
               used: int | None, duration: float) -> None:
        call = self.gate.settlement(endpoint, job_id, ticket, outcome=outcome, reserved=reserved, used=used,
                                    duration=duration)
        if outcome == "success":
            with self._lock:
                earlier, self._held = self._held, call
            if earlier is not None:
                _send(earlier)
            return
        self.flush()
        _send(call)

    def pause(self, endpoint: Endpoint, seconds: float) -> None:
        self.flush()
        self.gate.pause(endpoint, seconds)

    def first_token(self, endpoint: Endpoint, job_id: str, seconds: float) -> None:
        self.gate.first_token(endpoint, job_id, seconds)

    def take(self) -> ScriptCall | None:
        """The settlement held back, for the finish's round trip (whose reply it then reads)."""
        with self._lock:
            held, self._held = self._held, None
        return held

    def flush(self) -> None:
        """Send the settlement held back now, if any."""
        held = self.take()
        if held is not None:
            _send(held)

    def close(self) -> None:
        """The run is over: send what is held, and free a first admission no call used."""
        with self._lock:
            first, self._first = self._first, None
        if first is not None:
            self._release(first)
        self.flush()

    def _release(self, first: tuple[Endpoint, Admission]) -> None:
        endpoint, ticket = first
        if ticket.allowed:  # as a call that never reached the endpoint: lease, trial and tokens go back
            _send(self.gate.settlement(endpoint, self.job_id, ticket, outcome="neutral", reserved=self._reserved,
                                       used=0, duration=0.0))


def _send(call: ScriptCall) -> None:
    reply = call.script(keys=list(call.keys), args=list(call.args))
    if call.on_reply is not None:
        call.on_reply(reply)
