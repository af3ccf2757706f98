"""The end-to-end reference: a bare Celery app whose task does nothing but count itself done.

Configured by payhook's own `celery_config` (same broker, acks_late, prefetch, events,
serializer), started with the same worker flags; only the queue differs. The one Redis
pipeline per task (INCR + SET of the finish time) is what makes the drain observable, and it
matches the outcome counter payhook's task writes per batch.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from celery import Celery, signals

from payhook.broker import configure_or_exit, redis_url
from payhook.settings import load_settings

NOOP_TASK = "bench.noop"
app = Celery("bench-noop", set_as_current=False)
_client: list[redis.Redis] = []


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    configure_or_exit(sender)


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    _client.clear()


def done_keys(queue: str) -> tuple[str, str]:
    """The Redis keys holding (how many tasks ran, when the last one finished)."""
    return f"{queue}:noop:done", f"{queue}:noop:last"


@app.task(name=NOOP_TASK, acks_late=True, reject_on_worker_lost=True)
def noop(ids: list[int]) -> None:
    """Count the task done; nothing else."""
    if not _client:
        settings = load_settings()
        _client.append(redis.Redis.from_url(redis_url(settings)))
    done, last = done_keys(app.conf.task_default_queue)
    pipe = _client[0].pipeline(transaction=False)
    pipe.incr(done)
    pipe.set(last, repr(time.time()))
    pipe.execute()
