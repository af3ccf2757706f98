"""The log formats: JSON or console lines that keep a failure's traceback, for our code and the
libraries', their secrets masked; no Redis password in what payhook prints."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import structlog

from payhook import logs
from payhook.dev import _banner
from payhook.masking import MASK, mask_string


def _configured(fmt: str) -> io.StringIO:
    """`payhook.logs.configure(fmt)` writing into a buffer."""
    logs.configure(fmt)
    buffer = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    return buffer


@pytest.fixture
def json_lines(kept_logging: None) -> io.StringIO:
    """`payhook.logs.configure("json")` writing into a buffer; the previous set-up restored."""
    return _configured("json")


def test_json_lines_carry_the_traceback_and_mask_secrets(json_lines: io.StringIO) -> None:
    """A JSON line keeps the traceback, for our errors and the libraries', and masks a
    secret-named field."""
    try:
        dict[str, int]()["missing"]
    except KeyError:
        structlog.get_logger("workers.process").exception("adapter_error", token="t0ken")
        logging.getLogger("aiohttp.server").exception("Error handling request")
    ours, library = (json.loads(line) for line in json_lines.getvalue().splitlines())
    for line in (ours, library):
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert "KeyError: 'missing'" in line["exception"]
    assert ours["token"] == MASK
    assert library["logger"] == "aiohttp.server"


def test_secrets_carried_in_string_fields_are_masked(json_lines: io.StringIO) -> None:
    """A log field whose string carries a form, JSON, a URL or a secret-named field after
    prose (an error echoing a provider's signing string) has those secrets masked, the rest of
    the line as logged."""
    structlog.get_logger("workers.judging").warning(
        "callback_malformed", error="bad sign: amount=300&appId=1054&key=k1",
        url="https://m.example/cb?token=t0k&x=1", reason='{"clientAuthKey":"s3","n":1}',
        code="invalid sign=abc", nested={"e": ["https://u:pw@h/"]}, plain="a = b, see x")
    line = json.loads(json_lines.getvalue())
    assert line["error"] == f"bad sign: amount=300&appId=1054&key={MASK}"
    assert line["url"] == f"https://m.example/cb?token={MASK}&x=1"
    assert line["reason"] == f'{{"clientAuthKey":"{MASK}","n":1}}'
    assert line["code"] == f"invalid sign={MASK}"
    assert line["nested"] == {"e": [f"https://u:{MASK}@h/"]}
    assert line["plain"] == "a = b, see x"


def test_a_traceback_echoing_a_secret_is_masked(json_lines: io.StringIO) -> None:
    """The `exception` field of a JSON line has the secrets its message echoes masked, the
    traceback kept."""
    try:
        raise ValueError("bad sign: amount=300&key=k1")
    except ValueError:
        structlog.get_logger("workers.judging").exception("adapter_error")
    exception = json.loads(json_lines.getvalue())["exception"]
    assert exception.startswith("Traceback (most recent call last):")
    assert exception.endswith(f"\nValueError: bad sign: amount=300&key={MASK}")
    assert "k1" not in exception


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("logger", ["workers.judging", "celery.app.trace"])
def test_tracebacks_are_masked_in_both_formats(kept_logging: None, fmt: str, logger: str) -> None:
    """A traceback whose message echoes a secret is shown masked and still readable, in JSON
    and on the console (`payhook dev` in a terminal), for our lines and the libraries'."""
    out = _configured(fmt)
    try:
        raise ValueError("bad sign: amount=300&key=k1")
    except ValueError:
        if logger.startswith("celery"):
            logging.getLogger(logger).error("Task failed", exc_info=True)
        else:
            structlog.get_logger(logger).exception("adapter_error")
    text = out.getvalue()
    assert "Traceback (most recent call last):" in text
    assert f"ValueError: bad sign: amount=300&key={MASK}" in (
        json.loads(text)["exception"] if fmt == "json" else text)
    assert "k1" not in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0"),
        ("redis://payhook:hunter2@cache:6380/1", "redis://payhook:***@cache:6380/1"),
        ("redis://cache:6379/0?password=hunter2", "redis://cache:6379/0?password=***"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redis_urls_lose_their_password(url: str, shown: str) -> None:
    """A Redis URL is shown with its password masked, in its userinfo or its query (redis-py
    reads `?password=`), and every other part as it was."""
    assert mask_string(url) == shown


@pytest.mark.parametrize(
    "url", ["redis://:hunter2@cache:6379/0", "redis://cache:6379/0?password=hunter2"])
def test_dev_banner_never_prints_the_redis_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """`payhook dev` tells how to start Flower on its Redis, without the Redis password."""
    env = {"PAYHOOK_API_TOKEN": "dev-token", "PAYHOOK_REDIS_URL": url}
    _banner(env, 8080, tmp_path / "payhook.toml", None)
    printed = capsys.readouterr().err
    assert f"PAYHOOK_REDIS_URL={url.replace('hunter2', MASK)} celery" in printed
    assert "hunter2" not in printed
