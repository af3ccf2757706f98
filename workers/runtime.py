"""Per-process resources of a worker: settings, accounts, engine, Redis, the query HTTP layer.

Created on first use in each process (after a prefork worker forks) and never shared across
processes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ledger.db import make_engine, make_sessionmaker
from payhook.accounts import Accounts, load_accounts
from payhook.broker import redis_url
from payhook.settings import Settings, load_settings
from providers.http import QueryHttp
from reconcile.context import PassContext, ReconcileConfig, recon_prefix, run_to_end

T = TypeVar("T")


@dataclass
class Runtime:
    """What a task needs; one per worker process."""

    settings: Settings
    accounts: Accounts
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    http: QueryHttp = field(default_factory=QueryHttp)
    _loop: asyncio.AbstractEventLoop | None = None
    _pass: PassContext | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this process's own loop (kept, so the HTTP session is reused)."""
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return run_to_end(self._loop, coro)

    @property
    def recon_prefix(self) -> str:
        """The Redis prefix of the state every process shares: query budgets, breakers."""
        return recon_prefix(self.settings.queue)

    def pass_context(self) -> PassContext:
        """The reconciliation context, built once per process (its SMS client keeps a token)."""
        if self._pass is None:
            config = ReconcileConfig.from_settings(self.settings)
            self._pass = PassContext(sessions=self.sessions, accounts=self.accounts,
                                     http=self.http, redis=self.redis, run=self.run,
                                     config=config)
        return self._pass

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self.http.close())
            self._loop.close()
        self.engine.dispose()
        self.redis.close()


_lock = threading.Lock()
_current: Runtime | None = None


def get() -> Runtime:
    """This process's runtime, created on first use."""
    global _current
    with _lock:
        if _current is None:
            settings = load_settings()
            engine = make_engine(settings.database_url)
            _current = Runtime(
                settings=settings,
                accounts=load_accounts(settings.config),
                engine=engine,
                sessions=make_sessionmaker(engine),
                redis=redis.Redis.from_url(redis_url(settings)),
            )
        return _current


def reset() -> None:
    """Forget the runtime inherited through fork (its connections belong to the parent)."""
    global _current
    with _lock:
        if _current is not None:
            _current.engine.dispose(close=False)
        _current = None
