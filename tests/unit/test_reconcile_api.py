"""POST /api/reconcile through the real receiver app: a provider or account that nothing
configured has is a 400 naming the field, not a queued pass over nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from payhook.accounts import load_accounts
from payhook.settings import Settings
from tests.conftest import queue_name
from tests.unit.api_client import api_poster

TOKEN = "reconcile-api-test-token"
MTPAY = 'base_url = "http://127.0.0.1:1"\naccess_key = "a"\nsecret_key = "s"\n'


@pytest.fixture(scope="module")
def post(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Send one JSON body to POST /api/reconcile; (status, parsed answer). The pass is queued
    on a queue of this session's own, which no worker reads."""
    config = tmp_path_factory.mktemp("recon-api") / "payhook.toml"
    config.write_text(f"[providers.mtpay.default]\n{MTPAY}[providers.mtpay.eu]\n{MTPAY}")
    accounts = load_accounts(Path(config))
    settings = Settings(database_url=database_url, redis_url=redis_url,
                        queue=queue_name("payhook-recon-api"), api_token=TOKEN)
    send = api_poster(settings, accounts, "/api/reconcile")
    return lambda body: send(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"provider": "nope"}, "provider: unknown provider nope (configured: mtpay)"),
        ({"provider": "opay"}, "provider: unknown provider opay (configured: mtpay)"),
        ({"provider": "mtpay", "account": "nope"},
         "account: unknown account nope for mtpay (configured: default, eu)"),
        ({"account": "nope"},
         "account: unknown account nope for any provider (configured: default, eu)"),
    ],
    ids=["unknown_provider", "unconfigured_provider", "unknown_account", "account_anywhere"],
)
def test_an_unknown_provider_or_account_is_a_400_naming_the_field(
    post: Any, body: dict[str, str], error: str,
) -> None:
    """A pass limited to something no account matches is refused with 400, the field and the
    value named, as any invalid field of the API is."""
    status, answer = post(body)
    assert status == 400, answer
    assert answer == {"error": error}


@pytest.mark.parametrize("body", [{}, {"provider": "mtpay"}, {"account": "eu"},
                                  {"provider": "mtpay", "account": "eu"}])
def test_a_known_provider_or_account_is_queued(post: Any, body: dict[str, str]) -> None:
    """Filters that name a configured account (or none) queue the pass: 202 and its run id."""
    status, answer = post(body)
    assert status == 202, answer
    assert answer["state"] == "queued"
    assert isinstance(answer["id"], int)
