"""What the Celery configuration asks of kombu's Redis transport, checked on a real channel:
how often a worker looks for unacked tasks to redeliver."""

from __future__ import annotations

import pytest
from kombu.connection import Connection

from payhook.broker import celery_config
from payhook.settings import Settings


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
