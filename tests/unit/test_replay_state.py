"""`payhook replay --state S` takes only a state a callback can end in (CONTRACT §5)."""

from __future__ import annotations

import pytest

from payhook.cli import main

FINAL = "applied, duplicate, stale, conflict, rejected, dead"


@pytest.mark.parametrize("state", ["bogus", "Dead", "failed", "succeeded"])
def test_a_state_that_is_no_callback_state_exits_2_naming_the_valid_ones(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], database_url: str,
    redis_url: str, state: str,
) -> None:
    """A mistyped state (or an order status) exits 2 naming the states a replay takes,
    rather than "replayed 0 callback(s)" and 0."""
    monkeypatch.setenv("PAYHOOK_DATABASE_URL", database_url)
    monkeypatch.setenv("PAYHOOK_REDIS_URL", redis_url)
    assert main(["replay", "--state", state]) == 2
    captured = capsys.readouterr()
    assert f"no callback state '{state}'; a replay takes one of: {FINAL}" in captured.err
    assert "replayed" not in captured.out


@pytest.mark.parametrize("state", ["received", "processing"])
def test_a_state_not_yet_final_is_still_refused_as_such(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], database_url: str,
    redis_url: str, state: str,
) -> None:
    """A callback on its way needs no replay: exit 2, saying so."""
    monkeypatch.setenv("PAYHOOK_DATABASE_URL", database_url)
    monkeypatch.setenv("PAYHOOK_REDIS_URL", redis_url)
    assert main(["replay", "--state", state]) == 2
    assert "have not ended; they need no replay" in capsys.readouterr().err
