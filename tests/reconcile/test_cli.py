"""`payhook reconcile`: a pass with its own resources, its report printed as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from payhook.settings import Settings
from reconcile.cli import reconcile_now
from tests.reconcile.conftest import Recon
from tests.reconcile.harness import ACCESS_KEY, SECRET_KEY


@pytest.fixture
def default_prefix_cleaned(redis_client: redis.Redis) -> Iterator[None]:
    """The CLI uses the default key prefix; its keys are removed from the test Redis after."""
    yield
    keys = list(redis_client.scan_iter(match="payhook:recon:*"))
    if keys:
        redis_client.delete(*keys)


@pytest.mark.usefixtures("default_prefix_cleaned")
def test_reconcile_now_prints_the_report(
    recon: Recon, database_url: str, redis_url: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command resolves a stale order through the configured provider, prints the stored
    report (run id, state, findings) and returns 0."""
    config = tmp_path / "payhook.toml"
    config.write_text(
        f'[providers.mtpay.default]\nbase_url = "{recon.url}"\n'
        f'access_key = "{ACCESS_KEY}"\nsecret_key = "{SECRET_KEY}"\n',
        "utf-8",
    )
    now = datetime.now(UTC)
    recon.clock.now = now - timedelta(seconds=1000)
    recon.register("C1")
    recon.clock.now = now
    recon.mtpay.set("C1", "SUCCESS")
    settings = Settings(database_url=database_url, redis_url=redis_url, config=config)
    with capture_logs() as logs:  # configured logging goes to stderr; unconfigured, stdout
        assert reconcile_now(settings, provider="mtpay") == 0
    assert any(line["event"] == "reconcile_pass" for line in logs)
    printed = json.loads(capsys.readouterr().out)
    assert printed["state"] == "done"
    assert isinstance(printed["run_id"], int)
    assert printed["resolved_by_poll"]["orders"][0]["order"] == "mtpay/default/C1"
    assert recon.order("C1").status == "succeeded"


MTPAY = 'base_url = "http://127.0.0.1:1"\naccess_key = "a"\nsecret_key = "s"\n'


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--provider", "nope"], "--provider: unknown provider nope (configured: mtpay)"),
        (["--provider", "mtpay", "--account", "nope"],
         "--account: unknown account nope for mtpay (configured: default, eu)"),
        (["--account", "nope"], "--account: unknown account nope for any provider"),
        (["--provider", "opay"], "--provider: unknown provider opay"),
    ],
    ids=["provider", "account_of_provider", "account", "known_but_unconfigured"],
)
def test_reconcile_refuses_a_provider_or_account_nothing_configured_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    database_url: str, redis_url: str, argv: list[str], message: str,
) -> None:
    """A mistyped `--provider` or `--account` exits 2 naming it, as a configuration error,
    instead of a clean, empty report while the orders it meant go unqueried."""
    from payhook.cli import main

    config = tmp_path / "payhook.toml"
    config.write_text(f"[providers.mtpay.default]\n{MTPAY}[providers.mtpay.eu]\n{MTPAY}")
    monkeypatch.setenv("PAYHOOK_CONFIG", str(config))
    monkeypatch.setenv("PAYHOOK_DATABASE_URL", database_url)
    monkeypatch.setenv("PAYHOOK_REDIS_URL", redis_url)
    assert main(["reconcile", *argv]) == 2
    captured = capsys.readouterr()
    assert f"payhook: configuration error: {message}" in captured.err
    assert captured.out == ""


def test_reconcile_without_a_providers_file_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    database_url: str, redis_url: str,
) -> None:
    """A mistyped PAYHOOK_CONFIG (or a cron job in the wrong directory) exits 2 naming the
    file, as `serve` and `worker` do, rather than report a pass over no account as done."""
    from payhook.cli import main

    missing = tmp_path / "typo.toml"
    monkeypatch.setenv("PAYHOOK_CONFIG", str(missing))
    monkeypatch.setenv("PAYHOOK_DATABASE_URL", database_url)
    monkeypatch.setenv("PAYHOOK_REDIS_URL", redis_url)
    assert main(["reconcile"]) == 2
    captured = capsys.readouterr()
    assert f"payhook: configuration error: {missing}: no such providers file" in captured.err
    assert captured.out == ""
