"""Groups: least-loaded within a group, thread stickiness by rendezvous hashing, pins first."""

from __future__ import annotations

from collections import Counter

import pytest

from llmpool.endpoints import Endpoint
from llmpool.groups import order_candidates, sticky_member
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

    def in_flight(endpoint_ids: list[str]) -> dict[str, int]:
        asked.append(endpoint_ids)
        return load

    assert ids(order_candidates(ORDER, settings=SETTINGS, thread_id=None, pinned=None, in_flight=in_flight)) == expected
    assert asked == [["a1", "a2", "a3"]]  # one question, only about shared groups


def test_no_load_question_when_no_group_is_shared() -> None:
    def in_flight(endpoint_ids: list[str]) -> dict[str, int]:
        raise AssertionError("asked needlessly")

    assert ids(order_candidates([A1, B1], settings=SETTINGS, thread_id=None, pinned=None,
                                in_flight=in_flight)) == ["a1", "b1"]


def test_a_thread_sticks_to_one_member_and_threads_spread() -> None:
    never = lambda _ids: {}  # noqa: E731
    firsts = Counter()
    for n in range(300):
        thread = f"thread-{n}"
        runs = {order_candidates(ORDER, settings=SETTINGS, thread_id=thread, pinned=None, in_flight=never)[0].id
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
                               in_flight=lambda _ids: {"a1": 9})
    assert ids(ordered)[0] == "b1" and set(ids(ordered)) == {"a1", "a2", "a3", "b1"}
