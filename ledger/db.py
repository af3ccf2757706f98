"""Engines and the dialect-specific pieces: SQLite serialised writers, insert-or-ignore."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, TextClause, bindparam, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, pool_size: int = 5, pre_ping: bool = True) -> Engine:
    """An engine for `url`; on SQLite, WAL + BEGIN IMMEDIATE: concurrent writers queue."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(
            url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so BEGIN IMMEDIATE below is the only BEGIN.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A write lock at BEGIN: a read-then-write transaction can never deadlock on upgrade.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def insert_ignore(session: Session, table: Table, values: dict[str, Any]) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id: the new id, or None if the row existed."""
    row = session.execute(_insert_ignore_sql(table, tuple(values)), values).first()
    return None if row is None else int(row[0])


@functools.cache
def _insert_ignore_sql(table: Table, columns: tuple[str, ...]) -> TextClause:
    """The statement as text, typed by the table's columns: the same SQL on PostgreSQL and
    SQLite (3.35+), and, unlike the dialects' `on_conflict_do_nothing()` constructs, cached by
    SQLAlchemy instead of compiled anew on every execution (a worker runs it per event)."""
    typed = [bindparam(c, type_=table.c[c].type) for c in columns]  # KeyError: not a column
    names, params = ", ".join(columns), ", ".join(f":{c}" for c in columns)
    # Only the table's own name and column names are interpolated; values are bound.
    sql = f"INSERT INTO {table.name} ({names}) VALUES ({params}) ON CONFLICT DO NOTHING"  # noqa: S608
    return text(f"{sql} RETURNING id").bindparams(*typed)
