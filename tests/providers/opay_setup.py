"""What the OPay suites share: the vectors' account and OPay's keys, a fixed clock, and raw
callbacks received at it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st

from providers.opay import OPay, OPayAccount
from sandbox.wire import opay as wire
from tests.providers import vectors

DATA = vectors.load("opay")
ACCOUNT: OPayAccount = vectors.account("opay", OPayAccount)
ADAPTER = OPay()
KEYS = wire.OPayProviderKeys.from_pem_files(
    vectors.VECTORS / "keys" / "opay-provider-private.pem",
    vectors.VECTORS / "keys" / "opay-merchant-public.pem",
    ACCOUNT.client_auth_key.get_secret_value(),
    head_merchant_id=ACCOUNT.head_merchant_id,
    merchant_id=ACCOUNT.merchant_id,
)
NOW_MS = 1_700_000_000_000
NOT_OPAYS_KEY = ACCOUNT.merchant_private_key  # any RSA key but OPay's forges a signature
PROPERTY = settings(max_examples=150, deadline=None, database=None)
ORDER = {
    "outOrderNo": "M1",
    "orderNo": "231114145500000009",
    "transactionId": "231114145500000009T",
    "status": "SUCCESS",
    "amount": "300.00",
    "currency": "NGN",
    "completedTime": "1699999998000",
}


def at(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


TEXT = st.text(max_size=60)
FIELDS = st.fixed_dictionaries(
    {
        "outOrderNo": TEXT.filter(bool) | st.just('M/1\\2"3'),
        "orderNo": TEXT.filter(bool),
        "status": st.sampled_from(["SUCCESS", "FAIL", "CLOSE", "CANCEL", "PENDING"]),
        "amount": st.decimals(min_value=0, max_value=10**9, places=2).map(str),
        "currency": st.sampled_from(["NGN", "", "USD"]),
    },
    optional={"transactionId": TEXT, "completedTime": st.integers(0, 2**41).map(str), "note": TEXT},
)
