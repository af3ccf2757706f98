"""Shared by the batch tests: a worker runtime in the test process, and sound callbacks to
process with it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import update

from ledger.db import make_engine, make_sessionmaker
from ledger.models import Callback
from payhook.accounts import load_accounts
from payhook.settings import Settings
from tests.conftest import unique
from tests.harness import Stack, store
from workers.runtime import Runtime

TASK = "task-1"  # the Celery task id an attempt is claimed for


@pytest.fixture
def runtime(stack: Stack, database_url: str, redis_url: str) -> Iterator[Runtime]:
    """A worker runtime in this process, on the session's database and providers."""
    settings = Settings(database_url=database_url, redis_url=redis_url,
                        config=stack.workdir / "payhook.toml", max_attempts=3)
    engine = make_engine(database_url)
    rt = Runtime(settings=settings, accounts=load_accounts(settings.config), engine=engine,
                 sessions=make_sessionmaker(engine), redis=redis.Redis.from_url(redis_url))
    yield rt
    rt.close()


def sound(stack: Stack, runtime: Runtime, count: int) -> list[int]:
    """Store `count` sound callbacks (OPay successes of new orders); their ids."""
    world = stack.world
    return store(runtime.engine, [world.callback("opay", world.fields("opay", unique(),
                                                                     "succeeded", "5.00"))
                                  for _ in range(count)])


def set_row(runtime: Runtime, callback_id: int, **values: object) -> None:
    """Write these columns of the callback's row directly, as time or a worker would have."""
    with runtime.engine.begin() as conn:
        conn.execute(update(Callback).where(Callback.id == callback_id).values(**values))
