"""Processing a batch of stored callbacks: judge each (decode, verify, confirm), then apply.

An attempt is claimed before it starts (`workers.claims`). One that fails with an error a
retry can cure (the database or a provider away) is ended and the task retries the batch. Any
other error (a bug, an input nothing here foresaw) is treated as a death: the batch is split at
once, and the culprit alone ends `dead` after `max_attempts`, instead of taking its neighbours
down with it at every sweep, for ever.

Judging (`workers.judging`) runs outside any transaction. Applying runs in one
transaction with a savepoint per callback, so the round trip and the commit are shared while
each callback still ends in its own state and one bad callback cannot fail its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ledger.apply import OrderKey, apply_event, lock_orders
from ledger.fields import EventError
from ledger.models import NON_FINAL, Callback, Order
from ledger.money import AmountError
from ledger.status import Outcome, strongest
from payhook.settings import Settings
from providers.base import ProviderEvent
from providers.errors import Transient
from workers import judging
from workers.claims import LOST, claim_attempts, end_attempts
from workers.judging import Verdict
from workers.runtime import Runtime

log = structlog.get_logger(__name__)
# The errors a retry of the whole batch can cure: the database or a provider away. The task
# retries on these (its `autoretry_for`); any other error is treated as a death.
RETRYABLE: tuple[type[Exception], ...] = (OperationalError, Transient)


@dataclass
class BatchResult:
    """Counts by final state, the ids to try again later, and those to send again alone."""

    states: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # "state|reason" → count
    retry: dict[int, list[int]] = field(default_factory=dict)  # seconds to wait → ids
    split: list[int] = field(default_factory=list)

    def count(self, callback_id: int, state: str, reason: str | None, order: str | None) -> None:
        log.info("callback_processed", callback_id=callback_id, state=state, reason=reason,
                 order=order)
        self.states[state] = self.states.get(state, 0) + 1
        key = f"{state}|{reason or ''}"
        self.reasons[key] = self.reasons.get(key, 0) + 1


def now_utc() -> datetime:
    return datetime.now(UTC)


def retry_delay_s(settings: Settings, attempts: int) -> int:
    """Seconds to wait after `attempts` attempts, the last one a transient failure: doubling
    from `retry_backoff_s`. A worker holds the retry task, unacknowledged, for its countdown
    and then its run, and Redis hands a task held past the visibility timeout to a second
    worker; so the wait is at most the visibility timeout less the task time limit."""
    delay = settings.retry_backoff_s * int(2 ** max(attempts - 1, 0))
    return min(delay, settings.visibility_timeout_s - settings.task_time_limit_s)


def process_batch(rt: Runtime, ids: list[int], task_id: str) -> BatchResult:
    """Bring every non-final callback in `ids` to a final state (or schedule a retry); the
    attempts are claimed for `task_id`, the Celery task running them."""
    claim = claim_attempts(rt, ids, task_id)
    result = BatchResult(split=claim.split)
    for cb in claim.lost:
        result.count(cb.id, "dead", LOST, cb.merchant_order_no)
    if not claim.rows:
        return result
    try:
        verdicts = [judging.judge(rt, cb) for cb in claim.rows]
        judging.confirm(rt, [v for v in verdicts if v.claimed is not None and not v.events])
        try:
            finals = _write(rt, ids, verdicts, isolate=False)
        except Exception as exc:  # one callback failed the shared transaction: redo, isolated
            log.warning("batch_apply_failed", error=str(exc)[:200], size=len(verdicts))
            finals = _write(rt, ids, verdicts, isolate=True)
    except RETRYABLE:  # the attempt ended (the task retries it), its worker did not die
        end_attempts(rt, [cb.id for cb in claim.rows], claimed_at=None, claimed_by=None)
        raise
    except Exception:
        # Not retryable: taken for a death. Several callbacks get the attempt back and are each
        # sent again alone now, so the neighbours apply. Alone, the attempt stays counted and
        # marked unfinished, and the sweeper sends the culprit again until it ends `dead`
        # (`worker_lost`) after `max_attempts`.
        log.exception("batch_attempt_failed", size=len(claim.rows),
                      callback_ids=[cb.id for cb in claim.rows][:16])
        claimed = [cb.id for cb in claim.rows]
        if len(claimed) > 1:
            end_attempts(rt, claimed, attempts=Callback.attempts - 1, claimed_at=None,
                         claimed_by=None)
            result.split = claimed
            return result
        end_attempts(rt, claimed, claimed_by=None)
        raise
    for verdict, values in finals:
        state = str(values["state"])
        result.count(verdict.callback_id, state, values["reason"],
                     values.get("merchant_order_no"))
        if state == "processing":
            delay = retry_delay_s(rt.settings, verdict.counted)
            result.retry.setdefault(delay, []).append(verdict.callback_id)
    return result


def _write(
    rt: Runtime, ids: list[int], verdicts: list[Verdict], *, isolate: bool
) -> list[tuple[Verdict, dict[str, Any]]]:
    """Apply and record the batch in one transaction: the final values of each callback.

    The callback rows are locked in one statement (a redelivered task waits here, then skips
    what the other worker finished) and their states written in one executemany. With
    `isolate`, each callback's apply runs in its own savepoint, so one failure stays its own.
    """
    now = now_utc()
    finals: list[tuple[Verdict, dict[str, Any]]] = []
    with rt.sessions.begin() as session:
        rows = session.execute(
            select(Callback.id, Callback.state).where(Callback.id.in_(ids)).with_for_update()
        )
        current: dict[int, str] = {int(i): str(state) for i, state in rows}
        todo = [v for v in verdicts if current.get(v.callback_id) in NON_FINAL]
        locked = lock_orders(session, [v.order_key(e) for v in todo for e in v.events])
        for verdict in todo:
            finals.append((verdict, _final_values(rt, session, verdict, now, isolate, locked)))
        if finals:
            session.execute(
                update(Callback), [{"id": v.callback_id, **values} for v, values in finals]
            )
    return finals


def _final_values(
    rt: Runtime,
    session: Session,
    v: Verdict,
    now: datetime,
    isolate: bool,
    locked: dict[OrderKey, Order],
) -> dict[str, Any]:
    """Apply the callback's events; the values of its final (or retry) state."""
    claimed = v.claimed or (v.events[0] if v.events else None)
    values: dict[str, Any] = {
        "claimed_at": None,
        "claimed_by": None,
        "processed_at": now,
        "merchant_order_no": claimed.merchant_order_no[:128] if claimed else None,
    }
    if v.confirmed_before:  # its event is in the ledger already: nothing is applied again
        return {**values, "state": v.confirmed_before, "reason": judging.CONFIRMED_BEFORE}
    problem = v.transient
    if v.rejected is None and problem is None:
        if not isolate:
            outcomes = [_apply(session, v, e, now, locked) for e in v.events]
            return {**values, "state": strongest(outcomes).value, "reason": None}
        held = set(locked)
        try:
            with session.begin_nested():
                outcomes = [_apply(session, v, e, now, locked) for e in v.events]
            return {**values, "state": strongest(outcomes).value, "reason": None}
        except AmountError:  # deterministic: retrying cannot help
            reason: str | None = "bad_amount"
        except EventError:  # deterministic too: a field wider than the ledger's column
            reason = "malformed"
        except Exception as exc:  # this callback only: its savepoint is rolled back
            log.warning("callback_apply_failed", callback_id=v.callback_id, error=str(exc)[:200])
            problem, reason = f"apply:{type(exc).__name__}"[:64], None
        # Rolled back: an order this savepoint created no longer exists, so forget it.
        for key in set(locked) - held:
            del locked[key]
        if reason is not None:
            return {**values, "state": "rejected", "reason": reason}
    if v.rejected is not None:
        return {**values, "state": "rejected", "reason": v.rejected}
    if v.counted >= rt.settings.max_attempts:
        return {**values, "state": "dead", "reason": problem}
    if v.deferred:
        values["attempts"] = v.counted
    # Due again after its wait: the sweeper leaves it alone until `sweep_after_s` past that.
    due = now + timedelta(seconds=retry_delay_s(rt.settings, v.counted))
    return {**values, "state": "processing", "reason": problem, "enqueued_at": due}


def _apply(
    session: Session,
    v: Verdict,
    event: ProviderEvent,
    now: datetime,
    locked: dict[OrderKey, Order],
) -> Outcome:
    assert v.account is not None
    incoming = v.account.incoming(
        event, "callback", callback_id=v.callback_id,
        poll_after=now + timedelta(seconds=v.account.config.stale_after_s),
    )
    return apply_event(session, incoming, now, locked).outcome
