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
