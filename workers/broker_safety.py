"""A worker survives its broker dying under it while a BRPOP is in flight (a Sentinel failover).

kombu's Redis channel closes by first reading the reply of the BRPOP it has in flight (kombu#1733,
so a popped message is not lost). When the broker is gone, that read raises before the channel is
marked closed. Celery's consumer then detaches the transport (`Connection.collect`) and closes the
connection again: the second close restores the unacked messages through a fresh pool whose
parameters come from the detached transport, raises AttributeError ('NoneType' object has no
attribute 'hostname'), which is no connection error, and Celery stops the worker as an
"Unrecoverable error". With Sentinel it happens at every failover that finds jobs running
(tests/chaos/test_sentinel_failover.py fails without this); with one Redis the same race exists
whenever the pub/sub socket is read before the BRPOP one.

The fix: when the first close raises, finish closing at once (the BRPOP is read, so the second pass
restores the unacked messages or fails on the dead broker with a connection error that Celery
handles); the channel is then closed and a later close does nothing. Messages that could not be
restored come back after the visibility timeout, and the claim leases cover their jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from workers.channel_patch import patch_channel

__all__ = ["install", "finishing_close"]

log = logging.getLogger(__name__)


def finishing_close(original: Callable[[Any], None]) -> Callable[[Any], None]:
    """`original` (a channel's close), run a second time when the first raised before closing."""

    def close(self: Any) -> None:
        try:
            original(self)
        except Exception:
            if self.closed:
                raise
            log.info("broker gone while closing a channel: finishing the close now")
            original(self)  # the BRPOP was read (or dropped): this pass restores or raises a connection error
            raise

    return close


def install() -> None:
    """Make kombu's Redis (and Sentinel) channel finish closing when its in-flight BRPOP fails."""
    patch_channel("close", finishing_close)
