"""workers/broker_safety.py: a channel whose close fails before it is closed is closed at once, so a
later close (after Celery detached the transport) has nothing left to do. The real failure, a
Sentinel failover under a worker: tests/chaos/test_sentinel_failover.py."""

from __future__ import annotations

import pytest
import redis
from kombu.transport import redis as kombu_redis

from workers.broker_safety import finishing_close, install
from workers.channel_patch import patches


class FakeChannel:
    """Closes like kombu's: the in-flight BRPOP read raises first if the broker is gone."""

    def __init__(self, *, broker_alive_for_restore: bool) -> None:
        self.closed = False
        self.in_poll = True
        self.restore_ok = broker_alive_for_restore
        self.restored = 0

    def close(self) -> None:
        if self.in_poll:
            self.in_poll = False  # kombu's _brpop_read clears it in `finally`
            raise redis.ConnectionError("Connection closed by server.")
        if not self.closed:
            self.closed = True
            if not self.restore_ok:
                raise redis.ConnectionError("Connection refused")
            self.restored += 1


@pytest.mark.parametrize("alive", [True, False])
def test_a_close_cut_short_by_a_dead_brpop_is_finished_at_once(alive: bool) -> None:
    channel = FakeChannel(broker_alive_for_restore=alive)
    close = finishing_close(FakeChannel.close)
    with pytest.raises(redis.ConnectionError):  # still a connection error: Celery handles those
        close(channel)
    assert channel.closed and channel.restored == (1 if alive else 0)
    close(channel)  # the close Celery makes later, transport detached: nothing left to do
    assert channel.restored == (1 if alive else 0)


def test_a_close_that_works_runs_once() -> None:
    channel = FakeChannel(broker_alive_for_restore=True)
    channel.in_poll = False
    finishing_close(FakeChannel.close)(channel)
    assert (channel.closed, channel.restored) == (True, 1)


def test_install_wraps_kombus_channel_once() -> None:
    install()
    wrapped = kombu_redis.Channel.close
    install()
    assert kombu_redis.Channel.close is wrapped and patches(wrapped).count("finishing_close") == 1
