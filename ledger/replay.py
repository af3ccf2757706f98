"""Putting stored callbacks back to `received`, so they are processed again from raw bytes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ledger.models import Callback


def reset_for_replay(
    session: Session, *, ids: Sequence[int] = (), state: str | None = None
) -> list[int]:
    """Reset the callbacks with these ids (else all in `state`), with a fresh retry budget;
    the ids that were reset. The caller owns the transaction and enqueues them."""
    stmt = select(Callback.id)
    if ids:
        stmt = stmt.where(Callback.id.in_(ids))
    elif state:
        stmt = stmt.where(Callback.state == state)
    else:
        return []
    found = list(session.execute(stmt).scalars())
    if found:
        session.execute(
            update(Callback)
            .where(Callback.id.in_(found))
            .values(state="received", reason=None, enqueued_at=None, attempts=0, claimed_at=None)
        )
    return found
