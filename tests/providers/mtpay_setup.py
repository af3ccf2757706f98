"""What the MTPay suites share: the vectors, their account and keys, a fixed clock, an order as
MTPay holds it, and the strategy of a callback's fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st

from providers.mtpay import MTPay, MTPayAccount
from sandbox.wire import mtpay as wire
from tests.providers import vectors

DATA = vectors.load("mtpay")
ACCOUNT: MTPayAccount = vectors.account("mtpay", MTPayAccount)
ADAPTER = MTPay()
KEYS = wire.MTPayProviderKeys(ACCOUNT.access_key, ACCOUNT.secret_key.get_secret_value())
NOW_MS = 1_700_000_000_000
PROPERTY = settings(max_examples=200, deadline=None, database=None)
ORDER = {
    "merchantOrderNo": "M1",
    "orderNo": "MT1",
    "status": "SUCCESS",
    "depositAmount": "100.00",
    "fiatCurrency": "CNY",
    "updatedAt": 1699999999000,
}


def at(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


FIELDS = st.fixed_dictionaries(
    {
        "merchantOrderNo": st.text(min_size=1) | st.just('M/1\\2"3'),
        "orderNo": st.text(min_size=1),
        "status": st.sampled_from(["SUCCESS", "FAILED", "EXPIRED", "CANCELLED", "PENDING"]),
        "depositAmount": st.decimals(min_value=0, max_value=10**9, places=2).map(str),
        "fiatCurrency": st.sampled_from(["CNY", "", "USDT"]),
        "updatedAt": st.integers(0, 2**41),
    },
    optional={"note": st.text(), "extra": st.lists(st.text(), max_size=3)},
)
