"""What the Celery configuration asks of Celery and kombu, checked on a real app and channel:
the reconciliation task's soft time limit, and how often a worker looks for unacked tasks to
redeliver."""

from __future__ import annotations

import pytest
from celery import Celery
from kombu.connection import Connection

import workers.tasks  # noqa: F401 - registers the shared tasks this test reads
from payhook.broker import PROCESS_TASK, RECONCILE_TASK, celery_config
from payhook.settings import Settings


@pytest.mark.parametrize(("variables", "soft_s"), [
    ({}, 220), ({"task_time_limit_s": 12, "reconcile_wind_down_s": 3}, 9),
    ({"task_time_limit_s": 8, "reconcile_wind_down_s": 5}, 6),
], ids=["default", "wind_down", "at_most_a_quarter"])
def test_only_the_reconciliation_task_is_told_to_stop_before_its_time_limit(
    variables: dict[str, float], soft_s: float
) -> None:
    """The reconciliation task's soft time limit is PAYHOOK_RECONCILE_WIND_DOWN_S (default 20 s)
    before the task time limit, at most a quarter of it earlier; the callbacks' task has none
    (their handling has no way to stop half-way but to be killed)."""
    app = Celery("test-soft-limit", set_as_current=False)
    settings = Settings(redis_url="redis://127.0.0.1:1/0").model_copy(update=variables)
    app.conf.update(celery_config(settings))
    # The real tasks (workers.tasks, imported above): shared, so every app has them, each app's
    # with its own annotations.
    assert app.tasks[RECONCILE_TASK].soft_time_limit == soft_s
    assert app.tasks[RECONCILE_TASK].time_limit == settings.task_time_limit_s
    assert app.tasks[PROCESS_TASK].soft_time_limit is None


@pytest.mark.parametrize(("scan_s", "period_s"), [(None, 10), (3, 3)])
def test_a_worker_scans_for_unacked_tasks_every_redelivery_scan_s(
    redis_url: str, scan_s: int | None, period_s: int
) -> None:
    """A worker's Redis channel looks for unacked tasks past the visibility timeout every
    PAYHOOK_REDELIVERY_SCAN_S (default 10 s), each look a scan: kombu's defaults (a look every
    10 s, one in ten a scan) would redeliver a lost task up to 100 s after the timeout."""
    settings = Settings(redis_url=redis_url)
    if scan_s is not None:
        settings = settings.model_copy(update={"redelivery_scan_s": scan_s})
    options = celery_config(settings)["broker_transport_options"]
    with Connection(redis_url, transport_options=options) as conn:  # type: ignore[no-untyped-call]
        channel = conn.default_channel
        assert channel.unacked_restore_interval * channel.unacked_restore_throttle == period_s
        assert channel.visibility_timeout == 600
