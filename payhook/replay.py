"""`payhook replay`: put stored callbacks back to `received` and enqueue them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ledger.db import make_engine
from ledger.replay import reset_for_replay
from payhook.broker import make_publisher
from payhook.settings import Settings

CHUNK = 64


def replay(settings: Settings, *, ids: list[int], state: str | None) -> int:
    """Reset the chosen callbacks and publish them; how many."""
    engine = make_engine(settings.database_url)
    with Session(engine) as session, session.begin():
        found = reset_for_replay(session, ids=ids, state=state)
    engine.dispose()
    publish = make_publisher(settings)
    for start in range(0, len(found), CHUNK):
        publish(found[start : start + CHUNK])
    return len(found)
