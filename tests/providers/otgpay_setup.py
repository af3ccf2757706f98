"""What the OTGPAY suites share: the vectors, their account and the platform's keys, a fixed
clock, a callback's fields, and raw callbacks received at that clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import settings

from providers.base import Headers, HttpRequest, RawCallback
from providers.errors import Rejected
from providers.otgpay import OTGPay, OTGPayAccount
from sandbox.wire import otgpay as wire
from tests.providers import vectors

DATA = vectors.load("otgpay")
ACCOUNT: OTGPayAccount = vectors.account("otgpay", OTGPayAccount)
ADAPTER = OTGPay()
SECRET = ACCOUNT.merchant_secret.get_secret_value()
KEYS = wire.OTGPayProviderKeys.from_pem_files(
    vectors.VECTORS / "keys" / "otgpay-provider-private.pem",
    vectors.VECTORS / "keys" / "otgpay-merchant-public.pem",
    SECRET,
    ACCOUNT.app_id,
)
NOT_THE_PLATFORMS_KEY = ACCOUNT.merchant_private_key
NOW = datetime(2023, 11, 14, tzinfo=UTC)
RSA_PROPERTY = settings(max_examples=40, deadline=None, database=None)
CALLBACKS = DATA["callbacks"]
FIELDS: dict[str, Any] = {
    "appId": 1054,
    "currency": "IDR",
    "orderId": "M1",
    "orderNo": "6001",
    "amount": "300.00",
    "fee": "3.00",
    "status": 2,
    "payTime": "2023-11-14 05:13:20",
    "errorMsg": "",
}


def raw_callback(request: HttpRequest) -> RawCallback:
    return RawCallback(request.body, Headers(request.headers), NOW)


def rejection(raw: RawCallback) -> str:
    """The reason the adapter rejects `raw` with (it must reject it)."""
    with pytest.raises(Rejected) as caught:
        ADAPTER.parse_callback(raw, ACCOUNT)
    return caught.value.reason
