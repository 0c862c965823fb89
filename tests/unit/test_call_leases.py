"""A call's concurrency lease is short and renewed while the call runs, on fakeredis with a frozen clock
(conftest `clock`); tests/integration/real_redis/test_call_leases.py runs them on a real Redis."""

from __future__ import annotations

import redis

from llmpool.admission import Admitter
from llmpool.endpoints import Endpoint
from llmpool.gate import RedisGate
from llmpool.jobs import JobStore
from llmpool.keys import Keys
from llmpool.leases import LeaseKeeper
from llmpool.settings import load_settings
from tests.conftest import Clock

KEYS = Keys("t")
ENDPOINT = Endpoint(id="e1", chat_url="http://127.0.0.1:9/v1/chat/completions", model="m", model_name="m",
                    source="discovered")


def _rig(client: redis.Redis, lease: float) -> tuple[redis.Redis, RedisGate, LeaseKeeper]:
    admitter = Admitter(client, KEYS)
    leases = LeaseKeeper(JobStore(client, KEYS, ttl=60, stream_ttl=60), lease=lease, admitter=admitter,
                         wait=lambda seconds: True)  # no renewal thread: the test renews by hand
    settings = load_settings(agent_request_timeout=300, agent_endpoint_max_concurrency=1)
    return client, RedisGate(admitter, settings, leases=leases), leases


def _expiry(client: redis.Redis, job_id: str) -> float:
    score = client.zscore(KEYS.leases("e1"), job_id)
    assert score is not None
    return float(score)


def test_a_call_lease_lasts_one_job_lease_and_is_renewed_while_the_call_runs(any_redis: redis.Redis,
                                                                             clock: Clock) -> None:
    client, gate, leases = _rig(any_redis, lease=0.3)
    with clock.within(0.3):  # renewed inside the first lease
        ticket = gate.admit(ENDPOINT, "j1", tokens=10, budget=300)
        assert ticket.allowed
        assert _expiry(client, "j1") - clock.time() < 0.5  # not the 300 s budget
        clock.sleep(0.2)
        with clock.within(0.1):  # read, and the slot asked for, inside the renewed lease's first 0.1 s
            leases.renew_once()
            left = _expiry(client, "j1") - clock.time()
            held = gate.admit(ENDPOINT, "j2", tokens=10, budget=300)
    assert left > 0.2
    assert not held.allowed  # the one slot is held
    gate.settle(ENDPOINT, "j1", ticket, outcome="success", reserved=10, used=10, duration=0.2)
    leases.renew_once()
    assert client.zscore(KEYS.leases("e1"), "j1") is None  # settled calls are not renewed back


def test_a_dead_processs_slot_comes_back_after_one_lease(any_redis: redis.Redis, clock: Clock) -> None:
    _client, gate, _leases = _rig(any_redis, lease=0.2)
    with clock.within(0.2):
        assert gate.admit(ENDPOINT, "j1", tokens=10, budget=300).allowed  # then its process dies: no renewal
        held = gate.admit(ENDPOINT, "j2", tokens=10, budget=300)
    assert not held.allowed
    clock.sleep(0.3)
    assert gate.admit(ENDPOINT, "j2", tokens=10, budget=300).allowed
