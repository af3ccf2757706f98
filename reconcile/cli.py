"""`payhook reconcile`: run one pass now, outside the worker, and print its report."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import redis

from ledger.db import make_engine, make_sessionmaker
from ledger.models import ReconcileRun
from payhook.accounts import load_accounts
from payhook.broker import redis_url
from payhook.settings import Settings
from providers.errors import ConfigError
from providers.http import QueryHttp
from reconcile.context import PassContext, ReconcileConfig
from reconcile.runner import run_pass

T = TypeVar("T")


def reconcile_now(
    settings: Settings, provider: str | None = None, account: str | None = None
) -> int:
    """Run a pass with resources of its own, print the stored report as JSON; exit status 0.
    Like `serve` and `worker`, it refuses to start (ConfigError) without a providers file,
    and on a `--provider`/`--account` no configured account has."""
    accounts = load_accounts(settings.config, required=True)
    unknown = accounts.unknown_in_scope(provider, account)
    if unknown is not None:
        raise ConfigError(f"--{unknown[0]}: {unknown[1]}")
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    client = redis.Redis.from_url(redis_url(settings))
    http = QueryHttp()
    loop = asyncio.new_event_loop()

    def run(coro: Coroutine[Any, Any, T], /) -> T:
        return loop.run_until_complete(coro)

    try:
        ctx = PassContext(
            sessions=sessions,
            accounts=accounts,
            http=http,
            redis=client,
            run=run,
            config=_unhurried(ReconcileConfig.from_settings(settings)),
        )
        run_id = run_pass(ctx, provider=provider, account=account)
        with sessions() as session:
            stored = session.get(ReconcileRun, run_id)
            assert stored is not None
            report = {"run_id": run_id, "state": stored.state, **json.loads(stored.report)}
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    finally:
        loop.run_until_complete(http.close())
        loop.close()
        client.close()
        engine.dispose()


def _unhurried(config: ReconcileConfig) -> ReconcileConfig:
    """The CLI's pass runs under no task time limit, but not for ever: past its claim's lease
    its orders may be claimed and asked again by another pass, and past `stale_run_after_s` its
    run is abandoned by the next. It stops (`time_limit`, its orders handed back) at the first."""
    limit = min(config.claim_lease_s, config.stale_run_after_s)
    return replace(config, time_limit_s=float(limit))
