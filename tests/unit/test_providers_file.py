"""The providers file's outer shape: only `[providers.*]` and `[notify.sssms88]` are taken, so
a mistyped table is refused at start-up, with the file, the table and the key named (CONTRACT
§2), rather than ignored (a `[notify.sssms]` typo would start with no SMS alerts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from payhook.accounts import load_accounts
from providers.errors import ConfigError
from sandbox.world import SandboxWorld

MTPAY = """[providers.mtpay.default]
base_url = "https://api.mtpay.example"
access_key = "a"
secret_key = "s"
"""
SMS = """[notify.sssms88]
base_url = "https://sms.example"
username = "merchant_user"
password = "p"
api_key = "k"
api_secret = "s"
account_code = "APP"
alert_numbers = ["601111330000"]
low_credit = "10"
"""


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("foo = 1\n" + MTPAY, ": foo: unknown key at the top level (known: notify, providers)"),
        (MTPAY + "[provider.opay.default]\nx = 1\n",
         ": [provider] unknown table (known: notify, providers)"),
        (MTPAY + SMS.replace("sssms88", "sssms"),
         ": [notify.sssms] unknown notifier (known: sssms88)"),
        (MTPAY + SMS.replace("sssms88", "SSSMS88"),
         ": [notify.SSSMS88] unknown notifier (known: sssms88)"),
        (MTPAY + "[notify.twilio]\nx = 1\n", ": [notify.twilio] unknown notifier"),
        ("notify = 1\n" + MTPAY, ": [notify] must be a table"),
        ("providers = 1\n", ": [providers] must be a table"),
        (MTPAY + "[notify]\nsssms88 = 1\n", ": [notify.sssms88] must be a table"),
    ],
    ids=["top_level_key", "top_level_table", "notify_typo", "notify_case", "notify_other",
         "notify_not_table", "providers_not_table", "sssms88_not_table"],
)
def test_an_unknown_or_misshapen_table_is_refused_naming_it(
    tmp_path: Path, text: str, needle: str,
) -> None:
    """Each is a ConfigError (exit 2 at start-up) that names the file and what is unknown."""
    path = tmp_path / "payhook.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_accounts(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert needle in str(caught.value)


def test_the_known_tables_load(tmp_path: Path) -> None:
    """A file with accounts and the SMS table, and one with an empty `[notify]`, load."""
    path = tmp_path / "payhook.toml"
    path.write_text(MTPAY + SMS)
    accounts = load_accounts(path, required=True)
    assert accounts.get("mtpay") is not None
    assert accounts.sms is not None
    path.write_text(MTPAY + "[notify]\n")
    assert load_accounts(path, required=True).sms is None


def test_the_sandbox_providers_file_loads(tmp_path: Path) -> None:
    """The file the sandbox (and so `payhook dev`, the tests' stacks and the bench) writes is
    within the shape: all four providers load, with per-account extras."""
    world = SandboxWorld(tmp_path / "world")
    path = world.write_config("http://127.0.0.1:1", tmp_path / "payhook.toml",
                              stale_after_s=60)
    accounts = load_accounts(path, required=True)
    assert sorted(a.key for a in accounts) == [
        "monetapay/default", "mtpay/default", "opay/default", "otgpay/default"]
