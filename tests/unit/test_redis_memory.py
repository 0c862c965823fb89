"""How full Redis is, judged from INFO memory, and the operator's rate-limited warning."""

from __future__ import annotations

import logging

import pytest

from llmpool.redis_memory import SUBMIT_LIMIT, MemoryWarner, RedisMemory, parse_memory

MB = 2**20


def memory(used: int, maxmemory: int = 100 * MB, policy: str = "noeviction") -> RedisMemory:
    return RedisMemory(used=used, maxmemory=maxmemory, policy=policy, warn_at=0.8)


@pytest.mark.parametrize(("used", "state"), [
    (10 * MB, "ok"), (80 * MB, "warning"), (int(SUBMIT_LIMIT * 100 * MB), "refusing_jobs"),
    (100 * MB, "full"), (120 * MB, "full"),
])
def test_states_by_fraction_of_maxmemory(used: int, state: str) -> None:
    assert memory(used).state == state
    assert (memory(used).problem() is None) == (state == "ok")


def test_no_maxmemory_and_an_evicting_policy_are_problems_of_their_own() -> None:
    assert memory(10 * MB, maxmemory=0).state == "no_limit"
    assert "no maxmemory" in (memory(10 * MB, maxmemory=0).problem() or "")
    assert "evict" in (memory(10 * MB, policy="allkeys-lru").problem() or "")


def test_parse_reads_redis_py_info_and_the_status_fields() -> None:
    info = {"used_memory": 85 * MB, "maxmemory": 100 * MB, "maxmemory_policy": "noeviction", "other": 1}
    shown = parse_memory(info, warn_at=0.8).to_dict()
    assert shown["state"] == "warning" and shown["used_fraction"] == 0.85
    assert shown["refuse_jobs_at"] == SUBMIT_LIMIT and "85%" in shown["warning"]


def test_the_warning_is_logged_on_change_then_at_most_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    warner = MemoryWarner(every=300)
    with caplog.at_level(logging.WARNING, logger="llmpool.redis_memory"):
        assert warner.check(memory(85 * MB), now=0) is not None
        assert warner.check(memory(86 * MB), now=10) is None  # same state: quiet
        assert warner.check(memory(99 * MB), now=20) is not None  # worse: at once
        assert warner.check(memory(99 * MB), now=330) is not None  # still bad: again after the interval
        assert warner.check(memory(10 * MB), now=340) is None
        assert warner.check(memory(85 * MB), now=350) is not None  # a new episode
    assert [r.levelname for r in caplog.records] == ["WARNING"] * 4
