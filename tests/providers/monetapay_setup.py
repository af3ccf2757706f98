"""What the MonetaPay suites share: the vectors, their account and MonetaPay's keys, a fixed
clock, a repayment record, and raw callbacks received at that clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import settings

from providers.base import Headers, HttpRequest, RawCallback
from providers.monetapay import MonetaPay, MonetaPayAccount
from sandbox.wire import monetapay as wire
from tests.providers import vectors

DATA = vectors.load("monetapay")
ACCOUNT: MonetaPayAccount = vectors.account("monetapay", MonetaPayAccount)
ADAPTER = MonetaPay()
KEYS = wire.MonetaPayProviderKeys(
    token=ACCOUNT.token.get_secret_value(),
    aes_key=ACCOUNT.aes_key.get_secret_value(),
    aes_iv=ACCOUNT.aes_iv,
    partner_key=ACCOUNT.partner_key,
    mch_id=ACCOUNT.mch_id,
    appid=ACCOUNT.appid,
)
NOW_MS = 1_700_000_001_234
TIMESTAMP = 1_700_000_000
PROPERTY = settings(max_examples=200, deadline=None, database=None)
RECORD: dict[str, Any] = {
    "order_no": "MP1",
    "mch_order_no": "M1",
    "status": 1,
    "comeback_number": "880812345678",
    "amount": 50000,
    "pay_time": "2023-11-14 05:13:20",
}
CALLBACKS = DATA["callbacks"]


def raw_callback(request: HttpRequest) -> RawCallback:
    return RawCallback(
        request.body, Headers(request.headers), datetime.fromtimestamp(NOW_MS / 1000, UTC)
    )
