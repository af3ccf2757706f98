"""A `PAYHOOK_*` value that is not valid stops the command at start-up, naming the variable and
never echoing a value; the log level and the body limit are among the values checked."""

from __future__ import annotations

import inspect

import pytest

from ingest.inbox import Inbox
from payhook.cli import main
from payhook.settings import INBOX_PENDING_BYTES, MAX_BODY_LIMIT, Settings, load_settings
from providers.errors import ConfigError

SECRET = "hunter2-s3cret"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"PAYHOOK_MAX_BODY": SECRET}, "PAYHOOK_MAX_BODY: Input should be a valid integer"),
        ({"PAYHOOK_MAX_BODY": str(MAX_BODY_LIMIT + 1)}, "PAYHOOK_MAX_BODY: Input should be less"),
        ({"PAYHOOK_LOG_LEVEL": SECRET}, "PAYHOOK_LOG_LEVEL: Input should be 'CRITICAL'"),
        ({"PAYHOOK_LOG_FORMAT": SECRET}, "PAYHOOK_LOG_FORMAT: Input should be 'json'"),
        ({"PAYHOOK_SWEEP_INTERVAL_S": "0"}, "PAYHOOK_SWEEP_INTERVAL_S: Input should be greater"),
        ({"PAYHOOK_RECONCILE_BACKOFF_S": "[300, -1]"}, "PAYHOOK_RECONCILE_BACKOFF_S[1]: Input"),
        ({"PAYHOOK_RECONCILE_BACKOFF_S": SECRET}, "PAYHOOK_RECONCILE_BACKOFF_S: not a valid JSON"),
        ({"PAYHOOK_TASK_TIME_LIMIT_S": "600"}, "PAYHOOK_TASK_TIME_LIMIT_S (600) must be below "
                                               "PAYHOOK_VISIBILITY_TIMEOUT_S (600)"),
    ],
    ids=["not_an_int", "max_body_over_limit", "log_level", "log_format", "zero_interval",
         "backoff_item", "backoff_not_json", "time_limit_over_visibility"],
)
def test_a_bad_value_stops_the_command_naming_its_variable_not_any_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    variables: dict[str, str], message: str,
) -> None:
    """`payhook <command>` with a bad value exits 2 with one line naming the variable (not the
    settings field), no traceback, and no value: neither the bad one, which may be a secret
    pasted into the wrong variable, nor the token or a URL's password set beside it."""
    monkeypatch.setenv("PAYHOOK_API_TOKEN", SECRET)
    monkeypatch.setenv("PAYHOOK_REDIS_URL", f"redis://:{SECRET}@127.0.0.1:1/0")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"payhook: configuration error: {message}"), err
    assert "Traceback" not in err
    assert SECRET not in err
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.__cause__ is None  # pydantic's error, which holds the values, is dropped
    assert caught.value.__suppress_context__


@pytest.mark.parametrize(("value", "level"), [("debug", "DEBUG"), (" Info ", "INFO"),
                                              ("warn", "WARNING"), ("ERROR", "ERROR")])
def test_a_log_level_is_taken_in_any_case(monkeypatch: pytest.MonkeyPatch, value: str,
                                          level: str) -> None:
    """PAYHOOK_LOG_LEVEL takes the logging module's level names in any case (and its aliases
    WARN and FATAL), normalised to the name logging knows."""
    monkeypatch.setenv("PAYHOOK_LOG_LEVEL", value)
    assert Settings().log_level == level


def test_any_body_within_the_limit_fits_the_receivers_inbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PAYHOOK_MAX_BODY is at most half the inbox's bound on what waits for a commit, so a body
    within the limit and its headers (at most 128 of 8 KiB name and 8 KiB value, each byte at
    most 6 in JSON) fit it: a larger body would be refused with a 503 at every try, for ever."""
    monkeypatch.setenv("PAYHOOK_MAX_BODY", str(MAX_BODY_LIMIT))
    assert Settings().max_body == MAX_BODY_LIMIT
    bound = inspect.signature(Inbox).parameters["max_pending_bytes"].default
    assert bound == INBOX_PENDING_BYTES
    most_headers = 128 * 2 * 8190 * 6  # as aiohttp takes them, in JSON
    assert bound - MAX_BODY_LIMIT >= most_headers
