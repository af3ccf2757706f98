"""The Celery configuration shared by the workers, beat and the receiver's publisher."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery import Celery

from payhook.settings import Settings

PROCESS_TASK = "payhook.process_callbacks"
SWEEP_TASK = "payhook.sweep"
RECONCILE_TASK = "payhook.reconcile"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for at-least-once delivery that survives a killed worker."""
    if not settings.redis_url:
        raise ValueError("PAYHOOK_REDIS_URL is not set (payhook dev starts an embedded Redis)")
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": {
            # An unacked task comes back after this many seconds (Celery's default is an hour).
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_connect_timeout": settings.publish_timeout_s,
            "socket_timeout": 10,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.publish_timeout_s,
        "task_default_queue": settings.queue,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            "sweep": {"task": SWEEP_TASK, "schedule": timedelta(seconds=settings.sweep_interval_s)},
            "reconcile": {
                "task": RECONCILE_TASK,
                "schedule": timedelta(seconds=settings.reconcile_interval_s),
            },
        },
    }


def make_publisher(app: Celery) -> Callable[[list[int]], None]:
    """A function that sends one processing task for a batch of callback ids (no retry: the
    sweeper is the retry)."""

    def publish(ids: list[int]) -> None:
        app.send_task(PROCESS_TASK, args=[ids], retry=False)

    return publish


def make_celery(settings: Settings) -> Celery:
    """A Celery app for publishing only (the receiver, the CLI); tasks are sent by name."""
    app = Celery("payhook-publisher", set_as_current=False)
    app.conf.update(celery_config(settings))
    # No task-sent event per publish: Flower still sees every task from the workers' events,
    # and the receiver saves a Redis round trip per batch.
    app.conf.task_send_sent_event = False
    return app
