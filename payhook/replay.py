"""`payhook replay`: put stored callbacks back to `received` and enqueue them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ledger.db import make_engine
from ledger.replay import Replay, reset_for_replay
from payhook.broker import make_publisher
from payhook.settings import Settings

CHUNK = 64


def replay(settings: Settings, *, ids: list[int], state: str | None) -> Replay:
    """Reset the chosen callbacks that have ended and publish them."""
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session, session.begin():
            found = reset_for_replay(session, ids=ids, state=state)
    finally:
        engine.dispose()
    publish = make_publisher(settings)
    for start in range(0, len(found.reset), CHUNK):
        publish(found.reset[start : start + CHUNK])
    return found
