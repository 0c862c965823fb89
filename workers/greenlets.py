"""What a worker does differently when it runs the gevent pool (`-P gevent`, AGENT_WORKER_POOL=gevent).

Celery's `-P gevent` monkey-patches the standard library before anything else is imported, so our
threads (lease keeper, sweeper, heartbeat, deaf watch, hedge pool) become greenlets, locks and
events become gevent's, and contextvars are per greenlet (greenlet >= 1.0): the code runs as is.
Signal handlers are the exception: gevent runs them as callbacks of its event loop, where nothing
may block, and starting a thread waits for it to start.
"""

from __future__ import annotations

import logging
import resource
import threading
from collections.abc import Callable

__all__ = ["running_green", "call_later", "room_for_sockets"]

log = logging.getLogger(__name__)
# Files a worker holds besides its calls' sockets: Redis pools, the broker, logs, libraries.
SPARE_FILES = 1024


def running_green() -> bool:
    """True when gevent patched the socket module (celery's `-P gevent` does, before anything is imported)."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


def call_later(seconds: float, action: Callable[[], None]) -> None:
    """Run `action` in `seconds` on its own daemon thread (a greenlet under gevent), safe in a signal handler."""
    if running_green():
        import gevent

        gevent.spawn_later(seconds, action)  # returns at once, unlike Thread.start() in a loop callback
        return
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()


def room_for_sockets(slots: int) -> int:
    """Raise this process's soft open-files limit toward `slots` sockets plus spares (a call in flight is
    one socket), up to the hard limit; the limit it ends with. Warns when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = slots + SPARE_FILES
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    if new < wanted:
        log.warning("open files capped at %d (the hard limit) for %d slots: calls past it fail to connect "
                    "(EMFILE); raise the hard limit (ulimit -Hn, compose's ulimits.nofile)", new, slots)
    return new
