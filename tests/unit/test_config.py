"""The providers file is validated at start-up, and its errors name file, table and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from payhook.accounts import load_accounts
from providers.errors import ConfigError

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
OTG = f"""
[providers.otgpay.default]
base_url = "https://uat-interface.haipay.asia"
app_id = 1054
currency = "idr"
merchant_secret = "env:TEST_OTG_SECRET"
merchant_private_key = "{VECTORS / 'keys/otgpay-merchant-private.pem'}"
provider_public_key = "{VECTORS / 'keys/otgpay-provider-public.pem'}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "payhook.toml"
    path.write_text(text)
    return path


def test_valid_file_loads_with_env_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`env:NAME` values come from the environment and the account is usable."""
    monkeypatch.setenv("TEST_OTG_SECRET", "s3cret")
    accounts = load_accounts(write(tmp_path, OTG))
    account = accounts.get("otgpay")
    assert account is not None
    assert account.provider.name == "otgpay"
    assert "s3cret" not in repr(account.config)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (OTG.replace("app_id = 1054", "app_id = 'x'"), "[providers.otgpay.default] app_id"),
        (OTG + "\nsurprise = 1\n", "[providers.otgpay.default] surprise"),
        (OTG.replace("otgpay-provider-public.pem", "missing.pem"),
         "[providers.otgpay.default] provider_public_key"),
        ("[providers.nopay.default]\nbase_url='x'\n", "[providers.nopay] unknown provider"),
        ("[providers.otgpay\n", "payhook.toml"),
    ],
    ids=["bad_type", "unknown_key", "missing_key_file", "unknown_provider", "bad_toml"],
)
def test_invalid_file_names_file_table_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, needle: str,
) -> None:
    """Each kind of mistake is refused with a message naming where it is."""
    monkeypatch.setenv("TEST_OTG_SECRET", "s3cret")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_accounts(path)
    assert str(path) in str(caught.value)
    assert needle in str(caught.value)


def test_missing_env_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An `env:NAME` whose variable is unset is refused, naming the variable and the key."""
    monkeypatch.delenv("TEST_OTG_SECRET", raising=False)
    with pytest.raises(ConfigError, match=r"merchant_secret.*TEST_OTG_SECRET"):
        load_accounts(write(tmp_path, OTG))
