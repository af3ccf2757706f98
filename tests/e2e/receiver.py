"""Receivers for the API suites: one of a test's own (in this process, with its own token and
broker), and what the stack's receiver has logged since a moment."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_request import Request

from ingest.app import create_app
from ledger.db import make_engine
from payhook.accounts import Accounts, load_accounts
from payhook.broker import make_celery
from payhook.settings import Settings
from tests.conftest import queue_name
from tests.harness import Stack


@contextlib.asynccontextmanager
async def own_receiver(
    stack: Stack, database_url: str, redis_url: str, token: str | None,
    accounts: Accounts | None = None,
) -> AsyncIterator[tuple[web.Application, TestClient[Request, web.Application]]]:
    """A receiver of the test's own (its API token and accounts as given) and a client for it;
    by default, the stack's accounts."""
    settings = Settings(database_url=database_url, redis_url=redis_url, api_token=token,
                        queue=queue_name("payhook-api"))
    engine = make_engine(database_url)
    accounts = accounts or load_accounts(stack.workdir / "payhook.toml")
    app = create_app(settings, accounts, engine, make_celery(settings))
    try:
        async with TestClient(TestServer(app)) as client:
            yield app, client
    finally:
        engine.dispose()


def logged_from_now(stack: Stack) -> Callable[[], bytes]:
    """A function that returns what the receiver has logged since this call (after a moment,
    so that what it logs about a request just answered is written)."""
    log = stack.workdir / "receiver.log"
    mark = log.stat().st_size

    def since() -> bytes:
        time.sleep(0.2)
        with log.open("rb") as fh:
            fh.seek(mark)
            return fh.read()

    return since
