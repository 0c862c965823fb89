"""Worker lifecycle hooks: clients per process, the sweeper and the deaf watch, the first discovery,
leaving the heartbeat set, the shutdown grace, and keeping answers out of the logs (heartbeats
themselves: workers/heartbeat.py; the log configuration: workers/logging_setup.py)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import signals
from celery.worker.control import control_command

from llmpool import resources
from llmpool.client import publish_chat
from llmpool.errors import ConfigError
from llmpool.heartbeats import WorkerHeartbeats
from llmpool.locks import LOCK_TTL
from llmpool.settings import get_settings
from llmpool.sweep import Sweeper
from workers.full_redis import holding_messages
from workers.greenlets import call_later, room_for_sockets, running_green
from workers.watchdog import DeafWatch

log = logging.getLogger(__name__)
HIDDEN = "<hidden>"


@signals.worker_init.connect
def _open_in_main(**_: Any) -> None:
    res = resources.open_resources()
    if running_green():  # thousands of slots: a socket per call in flight
        room_for_sockets(res.settings.agent_worker_concurrency)


@signals.worker_process_init.connect
def _open_in_child(**_: Any) -> None:
    resources.forget_after_fork()
    resources.open_resources()


@signals.worker_ready.connect
def _discover_at_start(sender: Any = None, **_: Any) -> None:
    """Fill the registry now instead of at beat's first tick, an interval later."""
    if sender is not None:
        sender.app.send_task("llmpool.control.discover", kwargs={"wait": LOCK_TTL + 1}, queue="control")


_sweeper: Sweeper | None = None
_sweeper_lock = threading.Lock()


def sweeper(app: Any) -> Sweeper:
    """This process's sweeper, started on first use (prefork children start their own)."""
    global _sweeper
    with _sweeper_lock:
        if _sweeper is None:
            _sweeper = Sweeper(resources.current,
                               lambda job_id, queue, payload: publish_chat(app, job_id, queue, payload)).start()
        return _sweeper


@signals.worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    """Recovery must not depend on beat, nor on this worker's consumer still hearing the broker."""
    if sender is not None:
        sweeper(sender.app)


@signals.worker_ready.connect
def _watch_for_deafness(sender: Any = None, **_: Any) -> None:
    """The queues this worker was started with, watched even if its consumer drops one."""
    res = resources.peek()
    if sender is None or res is None or not res.settings.agent_deaf_after:
        return
    queues = [q.name for q in sender.task_consumer.queues]
    DeafWatch(res.redis, queues=queues, slots=sender.pool.num_processes,
              after=res.settings.agent_deaf_after, paused=holding_messages).start()


@signals.worker_process_init.connect
def _no_inherited_sweeper(**_: Any) -> None:
    """A forked child has the parent's Sweeper object but not its thread."""
    global _sweeper
    _sweeper = None


@control_command(args=[], signature="")  # type: ignore[misc]
def refresh_config(state: Any) -> dict[str, Any]:
    """Re-read the settings (env and .env) and rebuild this worker's clients with them."""
    get_settings.cache_clear()
    try:
        settings = get_settings()
    except ConfigError as exc:
        return {"error": f"settings not reloaded: {exc}"}
    resources.reload_resources(settings)
    return {"ok": "settings reloaded", "priority_models": settings.agent_priority_models}


@signals.worker_shutting_down.connect
def _hand_back_after_grace(how: str | None = None, **_: Any) -> None:
    """Warm shutdown: running jobs may finish within AGENT_SHUTDOWN_GRACE; the rest go back at once."""
    res = resources.peek()
    if res is None or str(how).lower() != "warm":
        return

    def hand_back() -> None:
        handed = res.leases.hand_back_all("worker stopping")
        if handed:
            log.warning("shutdown grace over: %d running jobs handed back to the fleet", len(handed))

    call_later(res.settings.agent_shutdown_grace, hand_back)  # gevent calls this handler in its loop


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close(sender: Any = None, **_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stop()  # before the clients close, or its next pass would open new ones
    hostname = getattr(sender, "hostname", None)
    res = resources.peek()
    if res is not None and hostname:
        WorkerHeartbeats(res.redis, res.keys).forget(hostname)
    resources.close_resources()


class _HideChatResults(logging.Filter):
    """Celery logs a task's return value on success; a chat answer is message text."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, dict) and args.get("name") == "llmpool.chat" and "return_value" in args:
            record.args = {**args, "return_value": HIDDEN}
        return True


logging.getLogger("celery.app.trace").addFilter(_HideChatResults())
