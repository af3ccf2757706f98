"""OPay account tables: key formats accepted, bad tables refused, the client key kept out of
repr."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from providers.opay import OPayAccount
from tests.providers import vectors
from tests.providers.opay_setup import ACCOUNT, DATA


def _table(**changes: Any) -> dict[str, Any]:
    table: dict[str, Any] = {**DATA["account"], **changes}
    return table


def test_account_accepts_pem_text_and_base64_der() -> None:
    """Keys may be given as PEM text or base64 DER as well as a path."""
    pem = (vectors.VECTORS / "keys" / "opay-merchant-private.pem").read_text()
    der = ACCOUNT.provider_public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    table = _table(merchant_private_key=pem, provider_public_key=base64.b64encode(der).decode())
    account = OPayAccount.model_validate(table)
    expected = ACCOUNT.provider_public_key.public_numbers()
    assert account.provider_public_key.public_numbers() == expected


@pytest.mark.parametrize(
    "changes",
    [
        {"provider_public_key": "keys/missing.pem"},
        {"merchant_private_key": "bm90IGEga2V5"},
        {"unknown_setting": 1},
    ],
)
def test_account_refuses_bad_tables(changes: dict[str, Any]) -> None:
    """A missing key file, a non-key, or an unknown setting is a validation error."""
    with pytest.raises(ValidationError):
        OPayAccount.model_validate(_table(**changes), context={"base_dir": vectors.VECTORS})


def test_account_repr_hides_client_auth_key() -> None:
    """The clientAuthKey never appears in the account's repr."""
    assert ACCOUNT.client_auth_key.get_secret_value() not in repr(ACCOUNT)
