"""The per-account circuit breaker: busy providers are left alone, passes still complete."""

from __future__ import annotations

import time
from datetime import timedelta

import redis

from reconcile.breaker import Breaker, BreakerState
from tests.reconcile.conftest import Recon


def test_busy_answers_open_the_breaker_and_the_pass_completes(recon: Recon) -> None:
    """Five busy answers in a row open the account's breaker: its other orders are skipped,
    the pass ends `done`, and the next pass does not query the account at all."""
    for n in range(7):
        recon.register(f"B{n}")
    recon.mtpay.busy = True
    recon.clock.advance(seconds=901)
    report = recon.pass_(concurrency=1, breaker_failures=5)
    assert report["state"] == "done"
    assert recon.mtpay.count() == 5
    stats = report["accounts"]["mtpay/default"]
    assert (stats["claimed"], stats["queried"], stats["skipped"]) == (7, 5, 2)
    assert stats["errors"] == {"transient": 5}
    assert stats["breaker"] == "open"
    recon.clock.advance(seconds=3600)
    again = recon.pass_(concurrency=1, breaker_failures=5)
    assert again["state"] == "done"
    assert again["accounts"]["mtpay/default"]["claimed"] == 0
    assert recon.mtpay.count() == 5


def test_busy_orders_are_not_counted_as_attempts(recon: Recon) -> None:
    """An order whose query met a busy provider keeps its attempt count; its lease brings it
    back."""
    recon.register("B9")
    recon.mtpay.busy = True
    recon.clock.advance(seconds=901)
    recon.pass_()
    order = recon.order("B9")
    assert order.poll_attempts == 0
    assert order.next_poll_at == recon.clock() + timedelta(seconds=600)


def test_half_open_allows_one_probe_and_success_closes(
    redis_client: redis.Redis, prefix: str
) -> None:
    """After the cool-down one probe goes out (shared across breakers); a success closes it,
    while a failed probe reopens it."""
    first = Breaker(redis_client, prefix, failures=2, cooldown_s=1)
    second = Breaker(redis_client, prefix, failures=2, cooldown_s=1)
    assert first.record_failure("p/a") is False
    assert first.record_failure("p/a") is True
    assert (first.allow("p/a"), second.state("p/a")) == (False, BreakerState.OPEN)
    time.sleep(1.1)
    assert second.state("p/a") is BreakerState.HALF_OPEN
    assert [first.allow("p/a"), second.allow("p/a")] == [True, False]
    assert first.record_failure("p/a") is True
    assert first.state("p/a") is BreakerState.OPEN
    time.sleep(1.1)
    assert second.allow("p/a") is True
    second.record_success("p/a")
    assert (first.state("p/a"), first.allow("p/a")) == (BreakerState.CLOSED, True)


def test_a_success_resets_the_failure_count(redis_client: redis.Redis, prefix: str) -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    breaker = Breaker(redis_client, prefix, failures=3, cooldown_s=60)
    breaker.record_failure("p/a")
    breaker.record_failure("p/a")
    breaker.record_success("p/a")
    assert breaker.record_failure("p/a") is False
    assert breaker.state("p/a") is BreakerState.CLOSED
