"""The wait between attempts after transient failures."""

from __future__ import annotations

from payhook.settings import Settings
from workers.process import retry_delay_s


def test_default_retries_span_minutes_not_one() -> None:
    """With the defaults, the waits double from 15 s up to half the visibility timeout, so the
    six attempts of a callback span about six minutes of provider trouble (they spanned 62 s)."""
    settings = Settings()
    waits = [retry_delay_s(settings, attempts) for attempts in range(1, settings.max_attempts)]
    assert waits == [15, 30, 60, 120, 150]
    assert sum(waits) >= 300


def test_no_wait_outlasts_half_the_visibility_timeout() -> None:
    """A task held for its countdown past the visibility timeout would be delivered twice."""
    settings = Settings(retry_backoff_s=100, visibility_timeout_s=120, task_time_limit_s=60)
    assert [retry_delay_s(settings, n) for n in (1, 2, 3, 30)] == [60, 60, 60, 60]
