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
    # Before the reset: settings that cannot publish (no broker URL) change nothing. A publish
    # that fails after it loses nothing either: the reset counts as enqueued, and the sweeper
    # sends it again once `sweep_after_s` has passed.
    publish = make_publisher(settings)
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session, session.begin():
            found = reset_for_replay(session, ids=ids, state=state)
    finally:
        engine.dispose()
    for start in range(0, len(found.reset), CHUNK):
        publish(found.reset[start : start + CHUNK])
    return found
