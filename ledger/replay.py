"""Putting stored callbacks back to `received`, so they are processed again from raw bytes.

Only a callback that has ended is replayed. One still `received` or `processing` is on its
way already: resetting it would restart its retry budget and clear the claim its running
attempt holds, so it is left alone and named instead. A replay is safe for every final
state: the ledger knows the events a callback applied, so an `applied` one stays `applied`
and books nothing again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ledger.models import FINAL, NON_FINAL, Callback


@dataclass
class Replay:
    """The ids reset for a replay, and those left alone because they have not ended yet."""

    reset: list[int] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)


def reset_for_replay(
    session: Session, *, ids: Sequence[int] = (), state: str | None = None
) -> Replay:
    """Reset the ended callbacks with these ids (else all in `state`, which must be final)
    with a fresh retry budget. The caller owns the transaction and enqueues `reset` once it
    commits; they count as enqueued now, so the sweeper sends them again only if that is lost."""
    if state in NON_FINAL:
        raise ValueError(f"callbacks in state {state!r} have not ended; they need no replay")
    if state and state not in FINAL:  # a typo would replay nothing and say so quietly
        raise ValueError(f"no callback state {state!r}; a replay takes one of: "
                         f"{', '.join(FINAL)}")
    stmt = select(Callback.id, Callback.state).order_by(Callback.id).with_for_update()
    if ids:
        stmt = stmt.where(Callback.id.in_(ids))
    elif state:
        stmt = stmt.where(Callback.state == state)
    else:
        return Replay()
    replay = Replay()
    for callback_id, current in session.execute(stmt):
        (replay.in_flight if current in NON_FINAL else replay.reset).append(int(callback_id))
    if replay.reset:
        session.execute(
            update(Callback)
            .where(Callback.id.in_(replay.reset))
            .values(state="received", reason=None, enqueued_at=datetime.now(UTC), attempts=0,
                    claimed_at=None, claimed_by=None)
        )
    return replay
