"""Fixtures for reconciliation tests: a migrated database, a real Redis, an MTPay stand-in and
a pass context wired to all three."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from ledger.db import make_engine, make_sessionmaker
from ledger.migrate import upgrade
from ledger.models import Base, Order, ReconcileRun
from ledger.money import to_minor
from ledger.orders import OrderSpec, register_order
from ledger.status import Kind
from payhook.accounts import Account, Accounts
from providers import registry
from providers.http import QueryHttp, RetryPolicy
from providers.mtpay import MTPayAccount
from reconcile.context import PassContext, ReconcileConfig
from reconcile.runner import run_pass
from reconcile.sms import SmsConfig
from tests.reconcile.harness import (
    ACCESS_KEY,
    SECRET_KEY,
    Clock,
    MTPayState,
    ThreadServer,
    create_mtpay_app,
)

T = TypeVar("T")
T0 = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """PAYHOOK_DATABASE_URL emptied of rows, else a fresh SQLite file; migrated to head."""
    url = os.environ.get("PAYHOOK_DATABASE_URL") or f"sqlite:///{tmp_path / 'recon.db'}"
    upgrade(url)
    if url.startswith("postgresql"):
        engine = make_engine(url)
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        engine.dispose()
    return url


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test database."""
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A real Redis: the session's (PAYHOOK_REDIS_URL, else the one it started)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted afterwards."""
    value = f"test:recon:{uuid.uuid4().hex}"
    yield value
    keys = list(redis_client.scan_iter(match=f"{value}:*"))
    if keys:
        redis_client.delete(*keys)


@dataclass
class Recon:
    """A pass context on the test database, Redis and MTPay stand-in, plus helpers."""

    sessions: sessionmaker[Session]
    redis: redis.Redis
    prefix: str
    clock: Clock
    mtpay: MTPayState
    url: str
    config: ReconcileConfig
    rate: float = 100.0
    stale_after_s: int = 900
    poll_backoff_s: tuple[int, ...] | None = None
    sms: SmsConfig | None = None
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    http: QueryHttp = field(default_factory=lambda: QueryHttp(retry=RetryPolicy(attempts=1)))

    def run(self, coro: Coroutine[Any, Any, T], /) -> T:
        return self.loop.run_until_complete(coro)

    def account(self) -> Account:
        config = MTPayAccount.model_validate(
            {"base_url": self.url, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
             "stale_after_s": self.stale_after_s, "query_rate_per_s": self.rate,
             "poll_backoff_s": self.poll_backoff_s}
        )
        return Account(registry.get("mtpay"), "default", config)

    def ctx(self, **config: Any) -> PassContext:
        accounts = Accounts({("mtpay", "default"): self.account()}, sms=self.sms)
        return PassContext(
            sessions=self.sessions, accounts=accounts, http=self.http, redis=self.redis,
            run=self.run, config=replace(self.config, **config), now=self.clock,
        )

    def register(self, number: str, amount: str = "100.00", kind: Kind = Kind.PAYMENT) -> None:
        """Register a CNY order at the clock's now, first due after `stale_after_s`."""
        now = self.clock()
        spec = OrderSpec("mtpay", "default", number, kind, to_minor(Decimal(amount), "CNY"),
                         "CNY", next_poll_at=now + timedelta(seconds=self.stale_after_s))
        with self.sessions.begin() as session:
            register_order(session, spec, now)

    def pass_(self, **config: Any) -> dict[str, Any]:
        """Run one pass; its stored report, with its `state`."""
        run_id = run_pass(self.ctx(**config))
        return self.report(run_id)

    def report(self, run_id: int) -> dict[str, Any]:
        with self.sessions() as session:
            run = session.get(ReconcileRun, run_id)
            assert run is not None
            report: dict[str, Any] = json.loads(run.report)
            return report | {"state": run.state, "run_id": run.id}

    def order(self, number: str) -> Order:
        with self.sessions() as session:
            return session.execute(
                select(Order).where(Order.merchant_order_no == number)
            ).scalar_one()


@pytest.fixture
def recon(sessions: sessionmaker[Session], redis_client: redis.Redis, prefix: str
          ) -> Iterator[Recon]:
    """A reconciliation harness; time starts at T0 and moves only when the test says."""
    clock = Clock(T0)
    state = MTPayState(clock)
    server = ThreadServer(create_mtpay_app(state))
    url = server.start()
    config = ReconcileConfig(redis_prefix=prefix)
    harness = Recon(sessions, redis_client, prefix, clock, state, url, config)
    yield harness
    harness.loop.run_until_complete(harness.http.close())
    harness.loop.close()
    server.stop()
