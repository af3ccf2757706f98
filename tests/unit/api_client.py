"""One request to the receiver's /api through the real app (aiohttp test server, the
session's database and Redis), each in an app of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from ingest.app import create_app
from ledger.db import make_engine
from payhook.accounts import Accounts
from payhook.broker import make_celery
from payhook.settings import Settings

Post = Callable[[bytes], tuple[int, Any]]


def api_poster(settings: Settings, accounts: Accounts, path: str) -> Post:
    """Send a raw JSON body to POST `path` with the settings' API token; (status, parsed
    answer)."""

    assert settings.api_token is not None
    token = settings.api_token.get_secret_value()

    def send(body: bytes) -> tuple[int, Any]:
        async def run() -> tuple[int, Any]:
            engine = make_engine(settings.database_url)
            app = create_app(settings, accounts, engine, make_celery(settings))
            try:
                async with TestClient(TestServer(app)) as client:
                    reply = await client.post(path, data=body, headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json"})
                    return reply.status, await reply.json()
            finally:
                engine.dispose()
        return asyncio.run(run())

    return send
