"""Pass locks: renewed while their pass runs, freed within a TTL when their holder dies (fakeredis)."""

from __future__ import annotations

import time

import fakeredis
import pytest

from llmpool import locks
from llmpool.keys import Keys
from llmpool.locks import pass_lock

KEYS = Keys("t")


@pytest.fixture(autouse=True)
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "LOCK_TTL", 1.0)  # renewed every 0.33 s: a stall under 0.6 s is harmless


def test_a_pass_longer_than_the_ttl_keeps_its_lock() -> None:
    client = fakeredis.FakeRedis()
    with pass_lock(client, KEYS, "discovery") as mine:
        assert mine
        time.sleep(2.0)  # twice the TTL: renewed meanwhile
        with pass_lock(client, KEYS, "discovery") as other:
            assert not other
    with pass_lock(client, KEYS, "discovery") as after:
        assert after  # released at the end of the pass


def test_a_dead_holders_lock_frees_within_the_ttl() -> None:
    client = fakeredis.FakeRedis()
    assert client.lock(KEYS.lock("sweep"), timeout=locks.LOCK_TTL).acquire(blocking=False)  # never renewed
    with pass_lock(client, KEYS, "sweep") as first:
        assert not first
    with pass_lock(client, KEYS, "sweep", wait=3.0) as waited:
        assert waited


def test_a_short_pass_may_skip_renewal_and_still_releases() -> None:
    client = fakeredis.FakeRedis()
    with pass_lock(client, KEYS, "sweep", renew=False) as mine:
        assert mine and client.exists(KEYS.lock("sweep"))
        with pass_lock(client, KEYS, "sweep", renew=False) as other:
            assert not other
    assert not client.exists(KEYS.lock("sweep"))
