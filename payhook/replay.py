"""`payhook replay`: put stored callbacks back to `received` and enqueue them."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ledger.db import make_engine
from ledger.models import Callback
from payhook.broker import make_celery, make_publisher
from payhook.settings import Settings

CHUNK = 64


def replay(settings: Settings, *, ids: list[int], state: str | None) -> int:
    """Reset the chosen callbacks and publish them; how many."""
    engine = make_engine(settings.database_url)
    with Session(engine) as session, session.begin():
        stmt = select(Callback.id)
        if ids:
            stmt = stmt.where(Callback.id.in_(ids))
        elif state:
            stmt = stmt.where(Callback.state == state)
        else:
            return 0
        found = list(session.execute(stmt).scalars())
        if found:
            session.execute(
                update(Callback).where(Callback.id.in_(found))
                .values(state="received", reason=None, enqueued_at=None, attempts=0)
            )
    publish = make_publisher(make_celery(settings))
    for start in range(0, len(found), CHUNK):
        publish(found[start : start + CHUNK])
    engine.dispose()
    return len(found)
