"""Celery settings for llmpool, built from llmpool's settings (see DESIGN.md, Celery facts)."""

from __future__ import annotations

from typing import Any

from llmpool.client import producer_config
from llmpool.redis_conn import celery_transport_options
from llmpool.settings import Settings

__all__ = ["celery_config"]

# kombu scans for unacked messages past their visibility timeout this often (seconds, every scan).
UNACKED_RESTORE_INTERVAL = 5


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        **producer_config(settings),
        "result_backend": settings.redis_url,
        # sentinel:// URLs: Celery's SentinelBackend asks for this master, as kombu does for the broker.
        "result_backend_transport_options": celery_transport_options(settings),
        "result_serializer": "json",
        # Reliability: a job is acked only once it has finished, one message per free thread.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_disable_prefetch": True,
        # kombu >= 5.7 keeps the -Q order, so "priority" reads chat.high before chat.default.
        # A message a worker took and died with before claiming its job (no lease yet, so the sweep
        # cannot see it) comes back after the visibility timeout, so that is short. A running job's
        # message comes back too while the job runs; its claim acks that copy as `busy`.
        "broker_transport_options": {
            "queue_order_strategy": "priority", "visibility_timeout": settings.agent_visibility_timeout,
            "unacked_restore_interval": UNACKED_RESTORE_INTERVAL, "unacked_restore_throttle": 1,
            **celery_transport_options(settings),
        },
        "broker_connection_max_retries": None,
        # Cancelling on connection loss helps neither pool: the threads pool cannot cancel (it logs
        # NotImplementedError), and prefork kills jobs whose messages then return only after the
        # visibility timeout. Our claim leases and the sweep recover what a lost connection strands.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # A result write during a Redis outage waits for Redis instead of raising out of the tracer
        # (with the threads pool that raise leaks the worker slot; see workers/pool_safety.py).
        "result_backend_always_retry": True,
        "result_backend_max_sleep_between_retries_ms": 1000,
        "result_backend_thread_safe": True,
        "result_expires": int(settings.agent_result_ttl),
        # Flower needs both kinds of events.
        "worker_send_task_events": True,
        # No worker_pool / worker_concurrency here: Celery cannot tell an explicit `-P prefork` from
        # its default and lets a configured pool win over it, so `-P prefork` silently ran threads.
        # `llmpool up` and compose pass -P and -c from AGENT_WORKER_POOL / AGENT_WORKER_CONCURRENCY.
        "worker_hijack_root_logger": True,
        "worker_redirect_stdouts": False,
    }
