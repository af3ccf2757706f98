"""POST /api/orders through the real receiver app (aiohttp test server, the session's database
and Redis): the amount's accepted forms, and a 400 (as for any invalid field) for every other."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from payhook.accounts import load_accounts
from payhook.settings import Settings
from sandbox.world import SandboxWorld
from tests.conftest import queue_name
from tests.unit.api_client import api_poster

TOKEN = "order-api-test-token"


@pytest.fixture(scope="module")
def post(
    database_url: str, redis_url: str, world: SandboxWorld, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """Send one raw JSON body to POST /api/orders; (status, parsed answer)."""
    config = world.write_config("http://127.0.0.1:1", tmp_path_factory.mktemp("api") /
                                "payhook.toml")
    accounts = load_accounts(Path(config))
    settings = Settings(database_url=database_url, redis_url=redis_url,
                        queue=queue_name("payhook-api"), api_token=TOKEN)
    return api_poster(settings, accounts, "/api/orders")


def _order(amount_json: str) -> bytes:
    """A registration whose amount is the raw JSON text `amount_json`."""
    number = f"API{uuid.uuid4().hex[:12]}"
    return (f'{{"provider": "opay", "merchant_order_no": "{number}", "kind": "payment", '
            f'"currency": "NGN", "amount": {amount_json}}}').encode()


@pytest.mark.parametrize("amount", [
    '"1_000"', '" 300.00 "', '"300.00 "', '"\u0663\u0660\u0660"', '"300.00\\n"', '"1e2"',
    '"+300"', '"-300"', '".5"', '"300."', '"0x10"', '"NaN"', '"Infinity"', '""', "1e2",
    "-300", "true", "null", "NaN", '["300"]',
])
def test_an_amount_not_plain_digits_is_a_400(post: Any, amount: str) -> None:
    """An amount that is not ASCII digits with an optional point and digits (as a JSON string,
    or a JSON number written so) is refused with 400 and a message naming the form wanted."""
    status, body = post(_order(amount))
    assert status == 400, body
    assert "amount must be a decimal string" in body["error"]


@pytest.mark.parametrize(("amount", "shown"), [
    ('"300.00"', "300.00"), ('"300"', "300.00"), ('"0.5"', "0.50"), ("300", "300.00"),
    ("300.50", "300.50"), ("0.1", "0.10"), ("300.5e0", "300.50"),
])
def test_a_plain_amount_registers_exactly(post: Any, amount: str, shown: str) -> None:
    """A plain decimal string, a JSON integer or a plain JSON decimal registers the exact amount
    (a JSON 0.1 is read as its text, never as the float nearest it; a JSON number is judged
    by the exact Decimal read from it, so 300.5e0, which is 300.5, is taken)."""
    status, body = post(_order(amount))
    assert status == 201, body
    assert body["amount"] == shown


def test_an_amount_finer_than_its_currency_is_still_a_400(post: Any) -> None:
    """A well-formed amount the currency cannot hold ("1.001" NGN) stays the 400 it was."""
    status, body = post(_order('"1.001"'))
    assert status == 400, body
    assert "NGN" in json.dumps(body)
