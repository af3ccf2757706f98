"""The sweeper: any callback not final after its deadline is enqueued again.

A callback waiting out its retry delay is not overdue: its `enqueued_at` is the time its retry
is due. Nor is one with an attempt running (`claimed_by` a task) until that attempt is past the
task time limit, by which time it has ended or its worker is gone: a copy sent sooner would
find the attempt running and leave the callback to it, so it would only cost a task.

Safe with several beat instances or sweeps at once: rows are claimed with FOR UPDATE SKIP
LOCKED (PostgreSQL) and stamped `enqueued_at`, and processing is idempotent anyway. The stamp is
committed before sending, so no lock is held while the broker is slow; what a sweep then fails
to send has its stamp taken back, and the next sweep sends it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import or_, select, update

from ledger.models import NON_FINAL, Callback
from workers.runtime import Runtime

log = structlog.get_logger(__name__)
CHUNK = 64
LIMIT = 20000


def sweep(rt: Runtime, enqueue: Callable[[list[int]], object]) -> int:
    """Claim overdue non-final callbacks, enqueue them in chunks; how many were enqueued."""
    now = datetime.now(UTC)
    deadline = now - timedelta(seconds=rt.settings.sweep_after_s)
    running_since = now - timedelta(seconds=rt.settings.task_time_limit_s)
    with rt.sessions.begin() as session:
        ids = list(
            session.execute(
                select(Callback.id)
                .where(
                    Callback.state.in_(NON_FINAL),
                    Callback.received_at < deadline,
                    or_(Callback.enqueued_at.is_(None), Callback.enqueued_at < deadline),
                    or_(Callback.claimed_at.is_(None), Callback.claimed_by.is_(None),
                        Callback.claimed_at < running_since),
                )
                .order_by(Callback.received_at)
                .limit(LIMIT)
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        if ids:
            session.execute(update(Callback).where(Callback.id.in_(ids)).values(enqueued_at=now))
    sent = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        try:
            enqueue(chunk)
            sent += len(chunk)
        except Exception as exc:  # broker down: the next sweep sends the rest
            log.warning("sweep_enqueue_failed", error=str(exc)[:200], ids=len(ids) - start)
            _unstamp(rt, ids[start:], now)
            break
    if ids:
        log.info("sweep", overdue=len(ids), enqueued=sent)
    return sent


def _unstamp(rt: Runtime, ids: list[int], stamp: datetime) -> None:
    """Take back this sweep's stamp from callbacks it claimed but did not send: stamped, they
    would wait a whole `sweep_after_s` more. Only where the stamp is still this sweep's, so a
    replay or a retry scheduled since keeps its own. NULL is overdue as their earlier stamp
    was (the sweep took them as overdue), the only thing `enqueued_at` is read for."""
    try:
        with rt.sessions.begin() as session:
            session.execute(
                update(Callback)
                .where(Callback.id.in_(ids), Callback.enqueued_at == stamp)
                .values(enqueued_at=None)
            )
    except Exception as exc:  # database down too: they wait out `sweep_after_s`, as before
        log.warning("sweep_unstamp_failed", error=str(exc)[:200], ids=len(ids))

