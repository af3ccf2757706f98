"""Due-order selection at scale: 100k pending orders, 1k of them due; the claim's latency and
its plan. Uses a database of its own (`payhook_bench_<random>` on the PostgreSQL server of
PAYHOOK_DATABASE_URL, dropped afterwards) or a temporary SQLite file.
Run: `python -m bench.reconcile_due`.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ledger.db import make_engine, make_sessionmaker
from ledger.migrate import upgrade
from ledger.models import Order
from reconcile.due import claim_due, due_query
from reconcile.report import still_pending

PENDING, DUE, RUNS, CHUNK = 100_000, 1_000, 7, 10_000
ACCOUNTS = (("mtpay", "default"), ("opay", "default"), ("otgpay", "default"), ("monetapay", "va"))
NOW = datetime.now(UTC).replace(microsecond=0)


@contextmanager
def bench_database() -> Iterator[str]:
    """A URL of an empty database that is removed afterwards."""
    configured = os.environ.get("PAYHOOK_DATABASE_URL", "")
    if not configured.startswith("postgresql"):
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    name = f"payhook_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(configured).set(database="postgres"),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(configured).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _rows(start: int, stop: int) -> list[dict[str, object]]:
    rows = []
    for n in range(start, stop):
        provider, account = ACCOUNTS[n % len(ACCOUNTS)]
        # Every hundredth order is due (in the last hour); the rest are due within a day.
        due = n % (PENDING // DUE) == 0
        offset = -(n % 3600) if due else 60 + n % 86400
        rows.append({
            "provider": provider, "account": account, "merchant_order_no": f"B{n:07d}",
            "kind": "payment", "status": "pending", "amount_minor": 10_000, "paid_minor": 0,
            "currency": "CNY", "needs_review": False, "review_reasons": "[]", "registered": True,
            "created_at": NOW - timedelta(hours=1), "updated_at": NOW, "poll_attempts": 0,
            "next_poll_at": NOW + timedelta(seconds=offset),
        })
    return rows


def fill(sessions: sessionmaker[Session]) -> float:
    """Insert the orders; seconds taken."""
    started = time.perf_counter()
    with sessions.begin() as session:
        for start in range(0, PENDING, CHUNK):
            session.execute(insert(Order), _rows(start, start + CHUNK))
    with sessions.begin() as session:
        session.execute(text("ANALYZE orders" if _dialect(session) == "postgresql" else "ANALYZE"))
    return time.perf_counter() - started


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def timed(sessions: sessionmaker[Session], work: Callable[[Session], int]) -> tuple[float, int]:
    """Median milliseconds of `work` over RUNS runs, each rolled back so every run is alike."""
    times, found = [], 0
    for _ in range(RUNS):
        with sessions() as session:
            started = time.perf_counter()
            found = work(session)
            times.append((time.perf_counter() - started) * 1000)
            session.rollback()
    return statistics.median(times), found


def plan(sessions: sessionmaker[Session], limit: int, account: tuple[str, str] | None) -> str:
    """The claim query's plan (EXPLAIN ANALYZE on PostgreSQL, the query plan on SQLite)."""
    scope = {"provider": account[0], "account": account[1]} if account else {}
    stmt = due_query(NOW, limit, **scope).with_for_update(skip_locked=True)
    with sessions() as session:
        bind = session.get_bind()
        sql = str(stmt.compile(bind, compile_kwargs={"literal_binds": True}))
        pg = _dialect(session) == "postgresql"
        explain = "EXPLAIN (ANALYZE, BUFFERS)" if pg else "EXPLAIN QUERY PLAN"
        lines = [str(r[0] if pg else r[-1]) for r in session.execute(text(f"{explain} {sql}"))]
        session.rollback()
    return "\n".join(lines)


def main() -> int:
    with bench_database() as url:
        upgrade(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        try:
            print(f"backend: {engine.dialect.name}; {PENDING} pending orders, {DUE} due")
            print(f"insert + analyze: {fill(sessions):.1f} s")
            cases: list[tuple[str, Callable[[Session], int]]] = [
                ("select due ids, limit 1000",
                 lambda s: len(s.execute(due_query(NOW, 1000)).all())),
                ("claim (lock + lease), limit 1000",
                 lambda s: len(claim_due(s, NOW, limit=1000, lease_s=600))),
                ("claim one account, limit 150",
                 lambda s: len(claim_due(s, NOW, limit=150, lease_s=600, provider="mtpay",
                                         account="default"))),
            ]
            for label, work in cases:
                median, found = timed(sessions, work)
                print(f"{label}: median {median:.2f} ms over {RUNS} runs ({found} rows)")
            median, _n = timed(sessions, lambda s: still_pending(s, NOW, None, None, 50)["count"])
            print(f"report's still-pending scan (count, ageing, oldest 50): median {median:.2f} ms")
            print("plan, claim limit 1000:\n" + plan(sessions, 1000, None))
            print("plan, claim one account, limit 150:\n" + plan(sessions, 150, ACCOUNTS[0]))
        finally:
            engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
