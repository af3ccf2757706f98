"""A processed batch against the sweeper and replay: a callback waiting out its retry, or with
an attempt still running, is not swept again early; one not ended is not replayed, and a
replay that cannot publish changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

import ledger.booking
from ledger.models import Callback
from ledger.replay import reset_for_replay
from payhook.replay import replay
from providers.errors import ConfigError
from tests.e2e.conftest import TASK, set_row, sound
from tests.harness import Stack
from workers.process import process_batch
from workers.runtime import Runtime
from workers.sweeper import sweep


def test_a_callback_waiting_out_its_retry_is_not_swept_until_overdue(
    stack: Stack, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient failure schedules the next attempt after its delay (15 s at first); the
    sweeper must not start a second chain of attempts meanwhile, even for a callback received
    long ago, but does take it once `sweep_after_s` has passed beyond the retry's due time."""
    [callback_id] = sound(stack, runtime, 1)

    def transient(*_: object) -> list[str]:
        raise RuntimeError("injected transient fault")

    monkeypatch.setattr(ledger.booking, "move_money", transient)
    result = process_batch(runtime, [callback_id], TASK)
    assert result.retry == {15: [callback_id]}
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    set_row(runtime, callback_id, received_at=long_ago)
    swept: list[int] = []
    sweep(runtime, swept.extend)
    assert callback_id not in swept
    set_row(runtime, callback_id, enqueued_at=long_ago)
    sweep(runtime, swept.extend)
    assert callback_id in swept


def test_a_callback_with_an_attempt_running_is_not_swept_until_past_the_time_limit(
    stack: Stack, runtime: Runtime
) -> None:
    """An attempt that takes longer than `sweep_after_s` (slow provider queries) is still
    running: a copy sent beside it would only find it running and leave it alone. The sweeper
    waits out the task time limit, unless the attempt is marked over."""
    [callback_id] = sound(stack, runtime, 1)
    now = datetime.now(UTC)
    long_ago = now - timedelta(hours=1)
    limit = timedelta(seconds=runtime.settings.task_time_limit_s)
    swept: list[int] = []
    for claimed_at, claimed_by, expected in (
        (now, "another-task", False),
        (now - limit + timedelta(seconds=30), "another-task", False),
        (now - limit - timedelta(seconds=30), "another-task", True),
        (now, None, True),  # the attempt is over (it failed): no need to wait for it
    ):
        set_row(runtime, callback_id, received_at=long_ago, enqueued_at=None, claimed_at=claimed_at,
             claimed_by=claimed_by, attempts=1)
        swept.clear()
        sweep(runtime, swept.extend)
        assert (callback_id in swept) is expected, claimed_at


def test_a_callback_that_has_not_ended_is_not_replayed(stack: Stack, runtime: Runtime) -> None:
    """A replay of a callback still `processing` would restart its retry budget and clear the
    claim of the attempt running it: it is refused (409) and the callback left as it was. Once
    it has ended it is replayed, counted as enqueued, so the sweeper does not send it again."""
    [callback_id] = sound(stack, runtime, 1)
    now = datetime.now(UTC)
    long_ago = now - timedelta(hours=1)
    set_row(runtime, callback_id, state="processing", attempts=2, claimed_at=now, enqueued_at=now)

    def row() -> tuple[str, int, bool]:
        with Session(runtime.engine) as session:
            cb = session.get_one(Callback, callback_id)
            return cb.state, cb.attempts, cb.claimed_at is not None

    status, body = stack.api("POST", f"/api/callbacks/{callback_id}/replay")
    assert (status, body) == (409, {"error": "callback has not ended yet; it is still being "
                                             "processed"})
    assert row() == ("processing", 2, True)
    with (Session(runtime.engine) as session, session.begin(),
          pytest.raises(ValueError, match="not ended")):
        reset_for_replay(session, state="processing")

    set_row(runtime, callback_id, claimed_at=None)  # the attempt ends without a verdict
    assert process_batch(runtime, [callback_id], TASK).states == {"applied": 1}
    with Session(runtime.engine) as session, session.begin():
        replay = reset_for_replay(session, ids=[callback_id, callback_id + 10**9])
    assert (replay.reset, replay.in_flight) == ([callback_id], [])
    assert row() == ("received", 0, False)
    # Received long ago: overdue, unless just enqueued.
    set_row(runtime, callback_id, received_at=long_ago)
    swept: list[int] = []
    sweep(runtime, swept.extend)
    assert callback_id not in swept


def test_a_replay_that_cannot_publish_changes_nothing(stack: Stack, runtime: Runtime) -> None:
    """`payhook replay` without a broker to publish to refuses before it resets anything: the
    callback keeps its final state and its attempts."""
    [callback_id] = sound(stack, runtime, 1)
    assert process_batch(runtime, [callback_id], TASK).states == {"applied": 1}
    unpublishable = runtime.settings.model_copy(update={"redis_url": None})
    with pytest.raises(ConfigError, match="PAYHOOK_REDIS_URL"):
        replay(unpublishable, ids=[callback_id], state=None)
    record = stack.callback(callback_id)
    assert (record["state"], record["attempts"]) == ("applied", 1)
