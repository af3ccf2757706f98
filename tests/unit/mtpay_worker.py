"""A worker's runtime with one MTPay account (confirm_by_query) on MTPay's query API stand-in,
for the tests of the confirming path on the real database and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import redis

from ledger.db import make_engine, make_sessionmaker
from payhook.accounts import Account, Accounts
from payhook.settings import Settings
from providers import registry
from providers.http import QueryHttp, RetryPolicy
from providers.mtpay import MTPayAccount
from tests.conftest import queue_name
from tests.reconcile.harness import (
    ACCESS_KEY,
    SECRET_KEY,
    Clock,
    MTPayState,
    ThreadServer,
    create_mtpay_app,
)
from workers.runtime import Runtime


@contextmanager
def mtpay_server() -> Iterator[tuple[MTPayState, str]]:
    """MTPay's query API stand-in, and its URL, for the block."""
    state = MTPayState(Clock(datetime.now(UTC)))
    server = ThreadServer(create_mtpay_app(state))
    try:
        yield state, server.start()
    finally:
        server.stop()


@contextmanager
def mtpay_runtime(
    database_url: str, redis_url: str, base_url: str, retry: RetryPolicy, **settings: Any,
) -> Iterator[Runtime]:
    """The runtime, its queue of its own, for the block; `settings` as Settings takes them."""
    config = MTPayAccount.model_validate(
        {"base_url": base_url, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY})
    engine = make_engine(database_url)
    rt = Runtime(settings=Settings(database_url=database_url, redis_url=redis_url,
                                   queue=queue_name("confirm"), **settings),
                 accounts=Accounts({("mtpay", "default"):
                                    Account(registry.get("mtpay"), "default", config)}),
                 engine=engine, sessions=make_sessionmaker(engine),
                 redis=redis.Redis.from_url(redis_url), http=QueryHttp(retry=retry))
    try:
        yield rt
    finally:
        rt.close()
