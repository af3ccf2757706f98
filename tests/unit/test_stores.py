"""How a writer stores its groups (ingest/stores.py), against the session's real database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs

from ingest.inbox import Inbox
from ingest.stores import Received
from ledger.db import make_engine

HIGH_FD = 1100  # above FD_SETSIZE (1024), the most select.select takes


@contextlib.contextmanager
def _low_descriptors_taken() -> Iterator[int]:
    """Hold every descriptor below HIGH_FD (copies of /dev/null), so the next socket opened
    gets a number above it, as in a receiver with that many client connections; how many were
    taken. The soft RLIMIT_NOFILE is raised for it if needed, and restored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = HIGH_FD + 200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    held: list[int] = []
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        held.append(devnull)
        while held[-1] < HIGH_FD:  # dup takes the lowest free number: every one below is ours
            held.append(os.dup(devnull))
        yield len(held)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_writer_keeps_its_connection_when_its_socket_number_is_above_1024(
    database_url: str,
) -> None:
    """With over 1024 descriptors open (a busy receiver's client sockets), the writer's kept
    connection still passes its idle check before each group: five groups go over one server
    backend, without reconnecting (select.select refused such descriptors, and every group
    threw its connection away and opened another)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        pytest.skip("PostgreSQL only: the writer's kept connection is PgStore's")
    name = f"stores-test-{uuid.uuid4().hex[:8]}"
    engine = make_engine(url.update_query_dict({"application_name": name})
                         .render_as_string(hide_password=False))
    admin = make_engine(database_url)
    inbox = Inbox(engine, lambda ids: None, writers=1)
    item = Received("opay", "default", datetime.now(UTC), "10.0.0.1", "[]", b"{}")

    def writer_backends() -> list[int]:
        with admin.connect() as conn:
            return list(conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE application_name = :n"),
                {"n": name}).scalars())

    async def scenario() -> list[list[int]]:
        await inbox.start()
        seen = []
        try:
            for _ in range(5):  # one request at a time: one group each
                await inbox.put(item)
                seen.append(await asyncio.to_thread(writer_backends))
        finally:
            await inbox.stop()
        return seen

    with _low_descriptors_taken() as taken, capture_logs() as logs:
        assert taken > 1024
        seen = asyncio.run(scenario())
    admin.dispose()
    engine.dispose()
    assert [e["event"] for e in logs if e["event"].startswith("inbox_")] == []
    assert len(seen[0]) == 1
    assert seen == [seen[0]] * 5  # the same backend for every group
