"""The wait between attempts after transient failures."""

from __future__ import annotations

from payhook.settings import Settings
from workers.process import retry_delay_s


def test_default_retries_span_minutes_not_one() -> None:
    """With the defaults, the waits double from 15 s, so the six attempts of a callback span
    almost eight minutes of provider trouble (they spanned 62 s)."""
    settings = Settings()
    waits = [retry_delay_s(settings, attempts) for attempts in range(1, settings.max_attempts)]
    assert waits == [15, 30, 60, 120, 240]


def test_no_wait_and_run_outlasts_the_visibility_timeout() -> None:
    """A retry task is held for its countdown, then runs up to the time limit: together they
    stay within the visibility timeout, or Redis would deliver the task twice."""
    settings = Settings(retry_backoff_s=20, visibility_timeout_s=150, task_time_limit_s=60)
    assert [retry_delay_s(settings, n) for n in (1, 2, 3, 4, 30)] == [20, 40, 80, 90, 90]
