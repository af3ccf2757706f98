"""Beat's periodic tasks: what beat sends expires when the next one is due."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
import redis
from celery import beat

from payhook.broker import RECONCILE_TASK, SWEEP_TASK, make_celery, scheduled_queue
from payhook.settings import Settings
from tests.conftest import queue_name


@pytest.mark.parametrize(("entry", "task"), [("reconcile", RECONCILE_TASK), ("sweep", SWEEP_TASK)])
def test_a_task_beat_sends_expires_after_one_interval(
    redis_url: str, entry: str, task: str
) -> None:
    """With the workers down, beat keeps sending a pass every interval: each message carries
    an expiry one interval after it was sent, so the workers, back, run the latest one rather
    than the whole backlog at once."""
    queue = queue_name("recon-beat")
    settings = Settings(redis_url=redis_url, queue=queue, reconcile_interval_s=45,
                        sweep_interval_s=20)
    every = {"reconcile": 45, "sweep": 20}[entry]
    app = make_celery(settings)
    assert app.conf.beat_schedule[entry]["options"] == {"expires": every}
    scheduler = beat.Scheduler(app, lazy=False)
    sent_at = datetime.now(UTC)
    scheduler.apply_async(scheduler.schedule[entry])
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.rpop(scheduled_queue(queue))  # not behind the callbacks' backlog
    finally:
        client.close()
        scheduler.close()
    assert isinstance(raw, bytes)
    message = json.loads(raw)
    headers = message["headers"]
    assert headers["task"] == task
    expires = datetime.fromisoformat(headers["expires"])
    assert timedelta(seconds=every - 1) <= expires - sent_at <= timedelta(seconds=every + 5)
    assert json.loads(base64.b64decode(message["body"]))[:2] == [[], {}]
