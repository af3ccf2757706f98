"""The log format: JSON lines that keep a failure's traceback, for our code and the libraries'."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from payhook import logs


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """`payhook.logs.configure("json")` writing into a buffer; the previous set-up restored."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    logs.configure("json")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    yield buffer
    root.handlers[:], root.level = handlers, level
    structlog.configure(**config)


def test_json_lines_carry_the_traceback_and_mask_secrets(json_lines: io.StringIO) -> None:
    try:
        {}["missing"]
    except KeyError:
        structlog.get_logger("workers.process").exception("adapter_error", token="t0ken")
        logging.getLogger("aiohttp.server").exception("Error handling request")
    ours, library = (json.loads(line) for line in json_lines.getvalue().splitlines())
    for line in (ours, library):
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert "KeyError: 'missing'" in line["exception"]
    assert ours["token"] == logs.MASK
    assert library["logger"] == "aiohttp.server"
