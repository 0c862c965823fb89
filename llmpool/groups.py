"""Groups: endpoints serving the same model at the same rank share the load. Pure.

Within a group a job goes to the member with the fewest in-flight jobs, except that the jobs of
one `thread_id` stick to one member while it is selectable (its prefix cache is warm). Stickiness
uses rendezvous hashing: when a member leaves, only its own threads move, and they come back
when it returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from itertools import groupby

from llmpool.endpoints import Endpoint
from llmpool.selection import chain_position, priority_index
from llmpool.settings import Settings

__all__ = ["group_key", "order_candidates", "sticky_member"]

GroupKey = tuple[int, int, str]


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
    in_flight: Callable[[list[str]], dict[str, int]],
) -> list[Endpoint]:
    """The selection's order with each group rearranged: sticky member or least loaded first.

    `in_flight` is asked once, only for groups of two or more (it costs a Redis round trip). A
    pinned endpoint stays first: the pin is an operator's explicit choice.
    """
    head = [e for e in order if e.id == pinned]
    rest = [e for e in order if e.id != pinned]
    groups = [list(g) for _k, g in groupby(rest, key=lambda e: group_key(e, settings))]
    shared = [e.id for g in groups if len(g) > 1 for e in g]
    load = in_flight(shared) if shared and not thread_id else {}
    arranged: list[Endpoint] = []
    for group in groups:
        if len(group) == 1:
            arranged += group
        elif thread_id:
            first = sticky_member(thread_id, group)
            arranged += [first, *(e for e in group if e is not first)]
        else:
            arranged += sorted(group, key=lambda e: load.get(e.id, 0))  # stable: ties keep rank order
    return head + arranged
