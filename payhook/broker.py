"""The Celery configuration shared by the workers, beat and the receiver's publisher."""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import redis
import redis.asyncio
from celery import Celery
from kombu.entity import Exchange, Queue

from payhook.settings import Settings, load_settings
from providers.errors import ConfigError

PROCESS_TASK = "payhook.process_callbacks"
SWEEP_TASK = "payhook.sweep"
RECONCILE_TASK = "payhook.reconcile"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for at-least-once delivery that survives a killed worker."""
    return {
        "broker_url": redis_url(settings),
        "broker_transport_options": {
            # An unacked task comes back after this many seconds (Celery's default is an hour).
            "visibility_timeout": settings.visibility_timeout_s,
            # ...when a worker looks for it: every `unacked_restore_interval` seconds, a Redis
            # scan at each look only when the throttle is 1 (kombu's defaults scan every 100 s).
            "unacked_restore_interval": settings.redelivery_scan_s,
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": settings.publish_timeout_s,
            "socket_timeout": 10,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.publish_timeout_s,
        "task_default_queue": settings.queue,
        # The periodic tasks have a queue of their own, which every worker also consumes: behind
        # a backlog of callbacks, each would wait out its expiry and none would ever run.
        "task_queues": [_queue(settings.queue), _queue(scheduled_queue(settings.queue))],
        "task_routes": {task: {"queue": scheduled_queue(settings.queue)}
                        for task in (SWEEP_TASK, RECONCILE_TASK)},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # The pool kills a task running longer; its callbacks keep the attempt counted and the
        # sweeper sends them again (workers/claims.py).
        "task_time_limit": settings.task_time_limit_s,
        # A reconciliation pass killed so would leave its run `running` for the sweep and its
        # claimed orders leased, and Celery acks a task killed at its time limit, so nothing
        # delivers it again: the pass is told to stop first, and ends its run itself
        # (reconcile/runner.py). Only this task: the callbacks' judging does not expect it.
        "task_annotations": {
            RECONCILE_TASK: {"soft_time_limit": settings.reconcile_soft_time_limit_s},
        },
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
            "sweep": _periodic(SWEEP_TASK, settings.sweep_interval_s),
            "reconcile": _periodic(RECONCILE_TASK, settings.reconcile_interval_s),
        },
    }


def configure_or_exit(app: Celery) -> None:
    """Configure `app` (from its `on_configure` signal) from the settings, or end the process
    with exit 2 naming the variable at fault.

    Celery logs what a signal handler raises and carries on with its defaults: a worker or
    Flower on RabbitMQ's localhost, looking healthy, seeing nothing. So a missing Redis URL, or
    a value that is not valid (PAYHOOK_SWEEP_INTERVAL_S=0), ends the process instead."""
    try:
        config = celery_config(load_settings())
    except ConfigError as exc:
        print(f"payhook: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    app.conf.update(config)


def scheduled_queue(queue: str) -> str:
    """The queue of the sweep and reconciliation tasks beside the callbacks' `queue`."""
    return f"{queue}:scheduled"


def _queue(name: str) -> Queue:
    # As Celery makes its default queue (kombu is untyped).
    return Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]


def _periodic(task: str, every_s: float) -> dict[str, Any]:
    """A beat entry whose task expires when the next one is sent: with the workers down, beat
    keeps sending, and without it they would run the whole backlog at once when back."""
    return {"task": task, "schedule": timedelta(seconds=every_s), "options": {"expires": every_s}}


def redis_url(settings: Settings) -> str:
    """The one Redis every process of a deployment shares: the broker, the query budget and the
    counters. There is no fallback: a guess (Celery's own default is RabbitMQ on localhost)
    would start a process that looks healthy and never sees the others' work."""
    if not settings.redis_url:
        raise ConfigError(
            "PAYHOOK_REDIS_URL is not set: the receiver, the workers and beat share one Redis "
            "and cannot guess it (`payhook dev` runs them all with an embedded one)"
        )
    return settings.redis_url


class TaskMessages:
    """Builds `payhook.process_callbacks(ids)` task messages for pushing onto the queue's Redis
    list directly: Celery's message protocol v2, laid out exactly as kombu's Redis transport
    stores it (anonymous exchange, routing key = queue, priority 0 = the queue's own list), so
    any Celery worker and Flower read it like one sent by `send_task`.

    Why not `send_task`: through Celery's routing, kombu's producer and channel layers it costs
    about 500 µs of CPU per message on the bench machine, this about a tenth of that, and the
    receiver's core is the ack path's limit. No retry: a failed push raises, the caller logs it
    and the sweeper re-enqueues the callbacks later.
    """

    def __init__(self, settings: Settings) -> None:
        self.queue = settings.queue
        self._reply_to = str(uuid.uuid4())
        self._origin = f"gen{os.getpid()}@{socket.gethostname()}"

    def message(self, ids: list[int]) -> bytes:
        """The stored form of one `process_callbacks(ids)` task message."""
        task_id = str(uuid.uuid4())
        args = [list(ids)]
        body = json.dumps([args, {}, _EMBED]).encode()
        headers: dict[str, Any] = {
            "lang": "py", "task": PROCESS_TASK, "id": task_id, "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": task_id, "parent_id": None,
            "argsrepr": repr(args), "kwargsrepr": "{}", "origin": self._origin,
            "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None,
            "stamps": {},
        }  # fmt: skip
        properties = {
            "correlation_id": task_id, "reply_to": self._reply_to, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": self.queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        }  # fmt: skip
        message = {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
        return json.dumps(message).encode()


class Publisher(TaskMessages):
    """Publishes task messages from blocking code (the CLI's replay)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._client = redis.Redis.from_url(
            redis_url(settings),
            socket_timeout=settings.publish_timeout_s,
            socket_connect_timeout=settings.publish_timeout_s,
        )

    def __call__(self, ids: list[int]) -> None:
        self._client.lpush(self.queue, self.message(ids))

    def close(self) -> None:
        self._client.close()


class AsyncPublisher(TaskMessages):
    """Publishes task messages from the receiver's event loop (its dispatcher)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._client = redis.asyncio.Redis.from_url(
            redis_url(settings),
            socket_timeout=settings.publish_timeout_s,
            socket_connect_timeout=settings.publish_timeout_s,
        )

    async def __call__(self, ids: list[int]) -> None:
        await self._client.lpush(self.queue, self.message(ids))  # type: ignore[misc]

    async def close(self) -> None:
        await self._client.aclose()


_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def make_publisher(settings: Settings) -> Callable[[list[int]], None]:
    """A function that sends one processing task for a batch of callback ids (no retry: the
    sweeper is the retry)."""
    return Publisher(settings)


def make_celery(settings: Settings) -> Celery:
    """A Celery app for publishing only (the receiver, the CLI); tasks are sent by name."""
    app = Celery("payhook-publisher", set_as_current=False)
    app.conf.update(celery_config(settings))
    # No task-sent event per publish: Flower still sees every task from the workers' events,
    # and the receiver saves a Redis round trip per batch.
    app.conf.task_send_sent_event = False
    return app
