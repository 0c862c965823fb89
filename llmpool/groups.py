"""Groups: endpoints serving the same model at the same rank share the load. Pure.

Within a group a job goes to the least loaded member: by the server's own figure when it reports
one (vLLM's queue and KV cache, llama.cpp's busy slots: llmpool.server_load), else by our in-flight
calls. The jobs of one `thread_id` stick to one member while it is selectable (its prefix cache
is warm) and not overloaded: when it has a queue or no free slot and another member has room,
the thread goes to the least loaded one for that job. Stickiness uses rendezvous hashing: when
a member leaves, only its own threads move, and they come back when it returns.
"""

from __future__ import annotations

import hashlib
from itertools import groupby

from llmpool.endpoints import Endpoint
from llmpool.selection import chain_position, priority_index
from llmpool.server_kinds import LOAD_KINDS
from llmpool.server_load import MemberLoad, MemberLoads
from llmpool.settings import Settings

__all__ = ["group_key", "order_candidates", "sticky_member"]

GroupKey = tuple[int, int, str]
IDLE = MemberLoad()


def group_key(endpoint: Endpoint, settings: Settings) -> GroupKey:
    """Endpoints with equal keys are interchangeable: same chain step, priority and model."""
    return (chain_position(endpoint, settings),
            priority_index(endpoint.model_name, settings.agent_priority_models), endpoint.model.lower())


def _weight(thread_id: str, endpoint_id: str) -> int:
    digest = hashlib.blake2b(f"{thread_id}\0{endpoint_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def sticky_member(thread_id: str, members: list[Endpoint]) -> Endpoint:
    """The member a thread sticks to (highest rendezvous weight)."""
    return max(members, key=lambda e: _weight(thread_id, e.id))


def order_candidates(
    order: list[Endpoint], *, settings: Settings, thread_id: str | None, pinned: str | None,
    load: MemberLoads,
) -> list[Endpoint]:
    """The selection's order with each group rearranged: sticky member or least loaded first.

    `load` is asked once, only for groups of two or more (it costs a Redis round trip), and for
    a sticky job only when some member's kind reports its load. A pinned endpoint stays first:
    the pin is an operator's explicit choice.
    """
    head = [e for e in order if e.id == pinned]
    rest = [e for e in order if e.id != pinned]
    groups = [list(g) for _k, g in groupby(rest, key=lambda e: group_key(e, settings))]
    shared = [e for g in groups if len(g) > 1 for e in g]
    # A sticky job only asks when a member's server can report itself overloaded (nothing else
    # makes it yield), so a thread on servers of other kinds costs no round trip, as before.
    asks = shared and (not thread_id or any(e.kind in LOAD_KINDS for e in shared))
    loads = load([e.id for e in shared]) if asks else {}

    def least_loaded(group: list[Endpoint]) -> list[Endpoint]:
        return sorted(group, key=lambda e: loads.get(e.id, IDLE).sort_key())  # stable: ties keep rank order

    arranged: list[Endpoint] = []
    for group in groups:
        if len(group) == 1:
            arranged += group
        elif thread_id:
            first = sticky_member(thread_id, group)
            if loads.get(first.id, IDLE).overloaded and not all(loads.get(e.id, IDLE).overloaded for e in group):
                arranged += least_loaded(group)  # it yields while it has no room
            else:
                arranged += [first, *(e for e in group if e is not first)]
        else:
            arranged += least_loaded(group)
    return head + arranged
