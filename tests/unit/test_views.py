"""The read models against the session's real database: a callback listing reads only the
columns of its summaries."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert
from sqlalchemy.orm import Session

from ledger.db import make_engine
from ledger.models import Callback
from ledger.views import list_callbacks


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url)
    yield made
    made.dispose()


def test_a_callback_listing_reads_no_body_nor_headers(engine: Engine) -> None:
    """`GET /api/callbacks?limit=1000` lists summaries: one query that selects neither the
    bodies nor the headers (a 64 KiB body per row cost a 65 MiB peak for a 200 KB answer), and
    no query per row for them afterwards."""
    provider = f"t{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(Callback), [
            {"provider": provider, "account": "default", "received_at": now,
             "remote_addr": None, "headers": '[["X-Big", "' + "h" * 1000 + '"]]',
             "body": b"b" * 65536, "state": "received", "attempts": 0} for _ in range(3)
        ])
    statements: list[str] = []

    def sent(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", sent)
    try:
        with Session(engine) as session:
            listed = list_callbacks(session, state=None, provider=provider, limit=1000)
    finally:
        event.remove(engine, "before_cursor_execute", sent)
    assert [c["provider"] for c in listed] == [provider] * 3
    assert listed[0]["id"] > listed[1]["id"] > listed[2]["id"]
    assert listed[0]["received_at"] is not None
    [select] = [s for s in statements if "callbacks" in s]
    assert "callbacks.id" in select
    assert "callbacks.body" not in select
    assert "callbacks.headers" not in select
