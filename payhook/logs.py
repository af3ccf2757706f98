"""structlog, configured once per process: JSON or console lines, contextvars, redaction."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from payhook.masking import MASK, is_secret, mask_string


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask the value of any field whose name says it is a secret, at any depth of dicts and
    of the lists and tuples in them; and the secrets a string value carries (an error echoing
    a provider's signing string or body, a URL with a `?token=`), as a body's are masked."""
    for key, value in list(event.items()):
        event[key] = MASK if is_secret(key) else _redacted(value)
    return event


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        # Only a string with one of these can carry a form, JSON or a URL: the hot path's
        # ids, states and timestamps are spared the scan.
        return mask_string(value) if "=" in value or "{" in value or "://" in value else value
    if isinstance(value, dict):
        return redact(None, "", dict(value))
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def _masked_traceback(
    _logger: Any, _name: str, event: MutableMapping[str, Any],
) -> MutableMapping[str, Any]:
    """The `exception` field masked, line by line (a form in one runs to its line's end), as a
    string field is: its message may echo a provider's body or signing string, and
    format_exc_info writes it after `redact` has run."""
    if isinstance(text := event.get("exception"), str):
        event["exception"] = "\n".join(mask_string(line) for line in text.split("\n"))
    return event


def configure(fmt: str | None = None, level: str = "INFO") -> None:
    """Configure structlog and the stdlib root logger (Celery, aiohttp) to share one format."""
    fmt = fmt or ("console" if sys.stderr.isatty() else "json")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    # A traceback becomes the `exception` field, masked, before either renderer sees it (a JSON
    # line said only `"exc_info": true` without it; the console renderer, left to format the
    # exc_info itself, printed the secrets its message echoed). The console prints that text.
    renderer = (structlog.dev.ConsoleRenderer() if fmt == "console"
                else structlog.processors.JSONRenderer())
    renderers: list[Any] = [structlog.processors.format_exc_info, _masked_traceback, renderer]
    structlog.configure(
        # filter_by_level first: a dropped debug line must not pay for the processor chain.
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
