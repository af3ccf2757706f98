"""Counting attempts: the claim each attempt writes before it starts, and the end it writes.

Each attempt is counted before it starts (`claimed_at` marks it running, `claimed_by` names
its task), so a callback whose processing kills its worker (out of memory, a crash, the task
time limit) is seen on redelivery: its batch is split and each callback sent again alone, and
after `max_attempts` such attempts it is `dead` (reason `worker_lost`) instead of being
redelivered forever. A batch's attempt that died is given back to each callback when the batch
is split: which one killed it is not known, and alone each is counted again.

A claim is over when its task is this one (Redis redelivers a lost worker's task under its
id), when it is marked ended (`claimed_by` NULL), or when it is older than the task time limit.
Any other claim is an attempt still running in another task (a late retry the sweeper also
sent, say): that callback is left to it, neither judged twice nor taken for a death.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, text, update

from ledger.models import NON_FINAL, Callback
from workers.runtime import Runtime

log = structlog.get_logger(__name__)
LOST = "worker_lost"  # the reason of a callback whose every attempt died with its worker


@dataclass
class Claim:
    """What starting an attempt found: the callbacks to judge now, those whose earlier attempts
    all died with their worker (now `dead`), and a batch to split instead of judging."""

    rows: list[Callback] = field(default_factory=list)
    lost: list[Callback] = field(default_factory=list)
    split: list[int] = field(default_factory=list)


def claim_attempts(rt: Runtime, ids: list[int], task_id: str) -> Claim:
    """Count an attempt for each non-final callback in `ids` before any of it is judged.

    A callback with an attempt running in another task is left to that task. One found with
    a claim that is over had an attempt that never finished. In a batch of several, nothing is
    judged: the caller sends each callback again alone, so the one that kills its worker cannot
    take its neighbours down with it again. Alone, it is tried until `max_attempts` attempts
    have started, then ends `dead` with reason `worker_lost`.
    """
    now = datetime.now(UTC)
    running_since = now - timedelta(seconds=rt.settings.task_time_limit_s)

    def running_elsewhere(cb: Callback) -> bool:
        return (cb.claimed_at is not None and cb.claimed_by not in (None, task_id)
                and cb.claimed_at > running_since)

    with rt.sessions.begin() as session:
        if session.get_bind().dialect.name == "postgresql":
            # Losing this commit in a database crash loses one attempt's count, nothing else;
            # the write that ends the attempt is durable, and commits after this one.
            session.execute(text("SET LOCAL synchronous_commit = off"))
        rows = list(
            session.execute(
                select(Callback)
                .where(Callback.id.in_(ids), Callback.state.in_(NON_FINAL))
                .order_by(Callback.id)
                .with_for_update()
            ).scalars()
        )
        elsewhere = [cb.id for cb in rows if running_elsewhere(cb)]
        if elsewhere:
            log.warning("claim_skipped", reason="attempt_running_elsewhere",
                        callback_ids=elsewhere[:16])
            rows = [cb for cb in rows if cb.id not in elsewhere]
        unfinished = [cb for cb in rows if cb.claimed_at is not None]
        if unfinished and len(rows) > 1:
            log.warning("batch_split", reason="unfinished_attempt", size=len(rows),
                        unfinished=[cb.id for cb in unfinished][:16])
            for cb in unfinished:
                if cb.claimed_by == task_id:  # this batch's own attempt: no one callback's
                    cb.attempts, cb.claimed_at = cb.attempts - 1, None
                cb.claimed_by = None  # over: the task sending it alone must not wait for it
            return Claim(split=[cb.id for cb in rows])
        claim = Claim()
        for cb in rows:
            if cb.claimed_at is not None and cb.attempts >= rt.settings.max_attempts:
                cb.state, cb.reason, cb.processed_at = "dead", LOST, now
                cb.claimed_at = cb.claimed_by = None
                claim.lost.append(cb)
            else:
                cb.attempts, cb.claimed_at, cb.claimed_by = cb.attempts + 1, now, task_id
                claim.rows.append(cb)
    return claim


def end_attempts(rt: Runtime, ids: list[int], **values: Any) -> None:
    """Mark an attempt that failed with an error as over, writing `values`: ended (`claimed_at`
    cleared), given back too (`attempts` less one), or left unfinished but no longer running
    (only `claimed_by` cleared). If even this fails (the database is down), the claim runs out
    at the task time limit, which costs only time."""
    try:
        with rt.sessions.begin() as session:
            session.execute(
                update(Callback)
                .where(Callback.id.in_(ids), Callback.state.in_(NON_FINAL))
                .values(**values)
            )
    except Exception as exc:
        log.warning("claim_end_failed", error=str(exc)[:200], size=len(ids))
