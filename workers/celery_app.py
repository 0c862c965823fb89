"""The Celery app: `celery -A workers worker|beat|flower` finds it as `workers.app`.

Task modules are listed in `include=` (imported when a worker or beat starts), so the control
tasks in `beat` register on this app without `beat` importing it.
"""

from __future__ import annotations

from celery import Celery

from beat.schedule import beat_schedule
from llmpool.settings import print_issues_report_once, settings_or_exit
from workers import broker_clients, broker_safety, green_broker, logging_setup  # noqa: F401 - logging_setup connects Celery's setup_logging
from workers.config import celery_config
from workers.event_flush import BatchedEvents
from workers.full_redis import FullRedisGuardStep
from workers.pool_safety import ThreadPoolSafetyNet
from workers.thread_acks import ThreadAcks

__all__ = ["app", "create_app"]

TASK_MODULES = ["workers.chat_task", "workers.signals", "workers.heartbeat", "beat.tasks"]


def create_app() -> Celery:
    settings = settings_or_exit()
    # Worker, beat and Flower all load this app: the one place every Celery process passes at start.
    print_issues_report_once(settings)
    celery = Celery("llmpool", include=TASK_MODULES)
    celery.conf.update(celery_config(settings))
    celery.conf.beat_schedule = beat_schedule(settings)
    celery.steps["worker"].add(ThreadPoolSafetyNet)
    broker_safety.install()  # a broker that dies under a BRPOP no longer stops the worker
    broker_clients.install()  # one Redis client per kombu channel, not one per command
    green_broker.install()  # with gevent, acks wait for a broker connection instead of failing
    celery.steps["consumer"].add(FullRedisGuardStep)
    celery.steps["consumer"].add(BatchedEvents)  # task events on a timer: the event loop feeds the threads
    celery.steps["consumer"].add(ThreadAcks)  # a job's thread acks its message: same reason
    return celery


app = create_app()
