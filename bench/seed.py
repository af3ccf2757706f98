"""Filling the ledger to a size before a phase, and clearing what an ack-only phase left behind.

Rows are generated inside the database (`generate_series` on PostgreSQL, a recursive CTE on
SQLite): one INSERT … SELECT per table, so a million orders with their history takes seconds.
Each order gets what the pipeline would have written for it: a callback, a provider event, a
history entry and, for successes (95%), a payment, a journal entry and two postings; the rest
stay pending with a poll due tomorrow.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from ledger.models import Callback, Journal, Order, Payment, Stamp

_PROVIDER = "CASE i % 4 WHEN 0 THEN 'opay' WHEN 1 THEN 'monetapay' WHEN 2 THEN 'otgpay' " \
            "ELSE 'mtpay' END"
_CURRENCY = "CASE i % 4 WHEN 0 THEN 'NGN' WHEN 1 THEN 'IDR' WHEN 2 THEN 'IDR' ELSE 'CNY' END"
_PENDING = "i % 20 = 0"

# Built from the constants above only (no input), so the f-string is not an injection vector.
_ORDERS = f"""
INSERT INTO orders (provider, account, merchant_order_no, provider_order_no, kind, status,
    amount_minor, paid_minor, currency, needs_review, review_reasons, registered, created_at,
    updated_at, next_poll_at, poll_attempts)
SELECT {_PROVIDER}, 'default', 'S' || i, 'P' || i, 'payment',
    CASE WHEN {_PENDING} THEN 'pending' ELSE 'succeeded' END,
    10000 + i % 997, CASE WHEN {_PENDING} THEN 0 ELSE 10000 + i % 997 END, {_CURRENCY},
    false, '[]', true, :now, :now, CASE WHEN {_PENDING} THEN :later ELSE NULL END, 0
FROM {{series}}"""  # noqa: S608
_CALLBACKS = """
INSERT INTO callbacks (provider, account, received_at, remote_addr, headers, body, state,
    attempts, processed_at, merchant_order_no)
SELECT provider, account, :now, '127.0.0.1', '[]', :body, 'applied', 1, :now,
    merchant_order_no
FROM orders WHERE id > :after"""
_EVENTS = """
INSERT INTO provider_events (provider, account, event_id, provider_status, order_id, created_at)
SELECT provider, account, provider_order_no, status, id, :now FROM orders WHERE id > :after"""
_HISTORY = """
INSERT INTO order_events (order_id, at, source, callback_id, provider_status, status, outcome,
    event_id)
SELECT id, :now, 'callback', NULL, status, status, 'applied', provider_order_no
FROM orders WHERE id > :after"""
_PAYMENTS = """
INSERT INTO payments (order_id, provider_txn_id, amount_minor, status, paid_at)
SELECT id, provider_order_no, amount_minor, 'succeeded', :now FROM orders
WHERE id > :after AND status = 'succeeded'"""
_JOURNAL = """
INSERT INTO journal (order_id, payment_id, memo, created_at)
SELECT order_id, id, 'payment', :now FROM payments WHERE id > :after_payment"""
_POSTINGS = """
INSERT INTO postings (journal_id, ledger_account, currency, amount_minor)
SELECT j.id, 'clearing:' || o.provider || '/default', o.currency, o.amount_minor
FROM journal j JOIN orders o ON o.id = j.order_id WHERE j.id > :after_journal
UNION ALL
SELECT j.id, 'receipts:' || o.provider || '/default', o.currency, -o.amount_minor
FROM journal j JOIN orders o ON o.id = j.order_id WHERE j.id > :after_journal"""


def _max_id(conn: Any, table: Any) -> int:
    return int(conn.execute(select(func.coalesce(func.max(table.id), 0))).scalar_one())


def _run(conn: Any, sql: str, **params: Any) -> None:
    stmt = text(sql)
    for name in ("now", "later"):
        if f":{name}" in sql:
            stmt = stmt.bindparams(bindparam(name, type_=Stamp))
    conn.execute(stmt, params)


def grow_ledger(engine: Engine, have: int, want: int) -> None:
    """Add seeded orders `have+1 … want` with everything the pipeline writes for them."""
    if want <= have:
        return
    now = datetime.now(UTC)
    if engine.dialect.name == "postgresql":
        series, prefix = "generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS s(i)", ""
    else:
        series = "s"
        prefix = "WITH RECURSIVE s(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM s WHERE i < :hi) "
    with engine.begin() as conn:
        after = _max_id(conn, Order)
        after_payment, after_journal = _max_id(conn, Payment), _max_id(conn, Journal)
        _run(conn, prefix + _ORDERS.format(series=series), lo=have + 1, hi=want, now=now,
             later=now + timedelta(days=1))
        _run(conn, _CALLBACKS, after=after, now=now, body=b'{"seeded":true}')
        _run(conn, _EVENTS, after=after, now=now)
        _run(conn, _HISTORY, after=after, now=now)
        _run(conn, _PAYMENTS, after=after, now=now)
        _run(conn, _JOURNAL, after_payment=after_payment, now=now)
        _run(conn, _POSTINGS, after_journal=after_journal)
    analyze(engine, vacuum=True)


def analyze(engine: Engine, vacuum: bool = False) -> None:
    """Fresh planner statistics on PostgreSQL; with `vacuum` (after a bulk load or delete) also
    reclaimed space, a set visibility map and a checkpoint."""
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if vacuum else "ANALYZE")
        if vacuum:
            # Write out what the bulk load dirtied now, so that its checkpoint does not land
            # in (and get measured as) the next timed phase. Needs superuser or pg_checkpoint.
            with contextlib.suppress(DBAPIError):
                conn.exec_driver_sql("CHECKPOINT")


def callbacks_mark(engine: Engine) -> int:
    """The highest callback id so far: everything a phase adds is above it."""
    with engine.connect() as conn:
        return _max_id(conn, Callback)


def drop_callbacks_after(engine: Engine, mark: int) -> int:
    """Delete the callbacks an ack-only phase stored (no worker ever saw them)."""
    with engine.begin() as conn:
        deleted = conn.execute(text("DELETE FROM callbacks WHERE id > :m"), {"m": mark}).rowcount
    analyze(engine, vacuum=True)
    return int(deleted)


def register_orders(engine: Engine, orders: list[dict[str, Any]]) -> None:
    """Register the orders an end-to-end batch will pay (the merchant tells us first)."""
    with engine.begin() as conn:
        for start in range(0, len(orders), 5000):
            conn.execute(insert(Order.__table__), orders[start : start + 5000])


def order_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Order)).scalar_one())
