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


BAD_URLS = ["payapi", "api.mtpay.example", "ftp://api.mtpay.example", "https://", "",
            "https://user:s3cret@api.mtpay.example:x", "https://api.mtpay.example/?a=1",
            "https:///path"]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("table", ["providers.mtpay.default", "notify.sssms88"])
def test_a_base_url_that_is_not_an_absolute_http_url_is_refused(
    tmp_path: Path, table: str, url: str,
) -> None:
    """A provider's `base_url`, like the SMS gateway's, must be an absolute http(s) URL with a
    host: `payapi` would otherwise be found only at the first status query. The refusal
    names the file, the table and the key, never the value."""
    text = MTPAY + SMS
    old = ('base_url = "https://api.mtpay.example"' if table.startswith("providers")
           else 'base_url = "https://sms.example"')
    path = tmp_path / "payhook.toml"
    path.write_text(text.replace(old, f'base_url = "{url}"'))
    with pytest.raises(ConfigError) as caught:
        load_accounts(path)
    assert f"{path}: [{table}] base_url: " in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_base_url_with_a_path_port_or_trailing_slash_is_taken(tmp_path: Path) -> None:
    """An http(s) URL with a port and a path prefix loads, its trailing `/` dropped (query
    paths are appended to it)."""
    path = tmp_path / "payhook.toml"
    path.write_text((MTPAY + SMS)
                    .replace("https://api.mtpay.example", "http://127.0.0.1:8080/mtpay/")
                    .replace("https://sms.example", "https://sms.example/"))
    accounts = load_accounts(path)
    account = accounts.get("mtpay")
    assert account is not None
    assert account.config.base_url == "http://127.0.0.1:8080/mtpay"
    assert accounts.sms is not None
    assert accounts.sms.base_url == "https://sms.example"
