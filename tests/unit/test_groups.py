"""Groups: least-loaded within a group, thread stickiness by rendezvous hashing, pins first."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from llmpool.endpoints import Endpoint
from llmpool.groups import order_candidates, sticky_member
from llmpool.server_load import MemberLoad, ServerLoad
from llmpool.settings import Settings

SETTINGS = Settings(agent_priority_models=["llama-3.1-70b", "llama-3.1-8b"])


def ep(endpoint_id: str, model: str) -> Endpoint:
    return Endpoint(id=endpoint_id, chat_url=f"http://{endpoint_id}/v1/chat/completions", model=model,
                    model_name=model, source="discovered")


A1, A2, A3 = ep("a1", "Llama-3.1-70B"), ep("a2", "Llama-3.1-70B"), ep("a3", "Llama-3.1-70B")
B1 = ep("b1", "Llama-3.1-8B")
ORDER = [A1, A2, A3, B1]


def ids(endpoints: list[Endpoint]) -> list[str]:
    return [e.id for e in endpoints]


@pytest.mark.parametrize(
    ("load", "expected"),
    [({"a1": 3, "a2": 1, "a3": 2}, ["a2", "a3", "a1", "b1"]),
     ({}, ["a1", "a2", "a3", "b1"]),                       # ties keep the selection's order
     ({"a1": 0, "a2": 0, "a3": 5, "b1": 0}, ["a1", "a2", "a3", "b1"])],
)
def test_least_loaded_member_first_and_groups_stay_in_rank_order(load: dict[str, int], expected: list[str]) -> None:
    asked: list[list[str]] = []

    def in_flight(endpoint_ids: list[str]) -> dict[str, MemberLoad]:
        asked.append(endpoint_ids)
        return {e: MemberLoad(in_flight=n) for e, n in load.items()}

    assert ids(order_candidates(ORDER, settings=SETTINGS, thread_id=None, pinned=None, load=in_flight)) == expected
    assert asked == [["a1", "a2", "a3"]]  # one question, only about shared groups


def test_no_load_question_when_no_group_is_shared() -> None:
    def in_flight(endpoint_ids: list[str]) -> dict[str, MemberLoad]:
        raise AssertionError("asked needlessly")

    assert ids(order_candidates([A1, B1], settings=SETTINGS, thread_id=None, pinned=None,
                                load=in_flight)) == ["a1", "b1"]


def test_a_thread_sticks_to_one_member_and_threads_spread() -> None:
    never = lambda _ids: {}  # noqa: E731
    firsts = Counter()
    for n in range(300):
        thread = f"thread-{n}"
        runs = {order_candidates(ORDER, settings=SETTINGS, thread_id=thread, pinned=None, load=never)[0].id
                for _ in range(3)}
        assert len(runs) == 1  # the same member every time
        firsts[runs.pop()] += 1
    assert set(firsts) == {"a1", "a2", "a3"} and min(firsts.values()) > 60  # spread over the group


def test_when_a_member_leaves_only_its_threads_move() -> None:
    threads = [f"t{n}" for n in range(200)]
    before = {t: sticky_member(t, [A1, A2, A3]).id for t in threads}
    after = {t: sticky_member(t, [A1, A3]).id for t in threads}
    moved = [t for t in threads if before[t] != after[t]]
    assert moved and all(before[t] == "a2" for t in moved)


def test_a_pin_stays_first() -> None:
    ordered = order_candidates(ORDER, settings=SETTINGS, thread_id=None, pinned="b1",
                               load=lambda _ids: {"a1": MemberLoad(in_flight=9)})
    assert ids(ordered)[0] == "b1" and set(ids(ordered)) == {"a1", "a2", "a3", "b1"}


def _served(**figures: ServerLoad | None) -> dict[str, MemberLoad]:
    return {e: MemberLoad(server=load) for e, load in figures.items()}


@pytest.mark.parametrize(("loads", "expected"), [
    # the server's own queue beats our in-flight count (other clients share the server)
    ({"a1": MemberLoad(in_flight=0, server=ServerLoad(running=4, waiting=3)),
      "a2": MemberLoad(in_flight=2, server=ServerLoad(running=2)),
      "a3": MemberLoad(in_flight=1, server=ServerLoad(running=3))}, ["a2", "a3", "a1"]),
    # a full KV cache is overloaded however few it runs; a fuller cache goes after an emptier one
    (_served(a1=ServerLoad(running=1, cache_use=0.97), a2=ServerLoad(running=1, cache_use=0.5),
             a3=ServerLoad(running=1, cache_use=0.2)), ["a3", "a2", "a1"]),
    # llama.cpp: every slot busy is overloaded; our fresher lease count raises a stale figure
    ({"a1": MemberLoad(server=ServerLoad(running=1, slots=1)),
      "a2": MemberLoad(in_flight=3, server=ServerLoad(running=1, slots=4)),
      "a3": MemberLoad(in_flight=0, server=ServerLoad(running=2, slots=4))}, ["a3", "a2", "a1"]),
    # members without a figure are ordered by our in-flight count among the others
    ({"a1": MemberLoad(in_flight=5), "a2": MemberLoad(server=ServerLoad(running=0, waiting=2)),
      "a3": MemberLoad(in_flight=1)}, ["a3", "a1", "a2"]),
])
def test_the_servers_own_load_orders_a_group(loads: dict[str, MemberLoad], expected: list[str]) -> None:
    ordered = order_candidates(ORDER, settings=SETTINGS, thread_id=None, pinned=None, load=lambda _ids: loads)
    assert ids(ordered) == [*expected, "b1"]


def _thread_on(member: str) -> str:
    return next(t for t in (f"t{n}" for n in range(1000)) if sticky_member(t, [A1, A2, A3]).id == member)


LOADED = [replace(e, kind="vllm") for e in ORDER]  # servers that report their own load


def test_a_sticky_job_asks_no_load_unless_a_member_can_report_one() -> None:
    def refuse(endpoint_ids: list[str]) -> dict[str, MemberLoad]:
        raise AssertionError("asked needlessly")

    thread = _thread_on("a1")
    assert ids(order_candidates(ORDER, settings=SETTINGS, thread_id=thread, pinned=None, load=refuse))[0] == "a1"
    busy = {"a1": MemberLoad(server=ServerLoad(running=1, waiting=1))}
    assert ids(order_candidates(LOADED, settings=SETTINGS, thread_id=thread, pinned=None,
                                load=lambda _ids: busy))[0] == "a2"


def test_a_sticky_thread_yields_while_its_member_is_overloaded() -> None:
    thread = _thread_on("a1")
    busy = {"a1": MemberLoad(server=ServerLoad(running=8, waiting=2)), "a2": MemberLoad(in_flight=3),
            "a3": MemberLoad(in_flight=1)}
    assert ids(order_candidates(LOADED, settings=SETTINGS, thread_id=thread, pinned=None,
                                load=lambda _ids: busy))[0] == "a3"
    # merely busier (no queue) is no reason to leave a warm prefix cache
    warm = {"a1": MemberLoad(in_flight=7, server=ServerLoad(running=7)), "a2": MemberLoad(), "a3": MemberLoad()}
    assert ids(order_candidates(LOADED, settings=SETTINGS, thread_id=thread, pinned=None,
                                load=lambda _ids: warm))[0] == "a1"
    # when every member is overloaded, the thread stays where its cache is
    full = {e: MemberLoad(server=ServerLoad(running=1, slots=1)) for e in ("a1", "a2", "a3")}
    assert ids(order_candidates(LOADED, settings=SETTINGS, thread_id=thread, pinned=None,
                                load=lambda _ids: full))[0] == "a1"
