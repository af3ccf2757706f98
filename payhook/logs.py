"""structlog, configured once per process: JSON or console lines, contextvars, redaction."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Matched against the key with "_" and "-" removed, lower-cased: client_auth_key, clientAuthKey
# and client-auth-key are one name.
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|apikey|private|clientauthkey|accesskey|authorization"
    r"|signature|^sign$|aeskey|aesiv)"
)
MASK = "***"


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask the value of any field whose name says it is a secret, at any depth of dicts."""
    for key, value in list(event.items()):
        if _SECRET_KEY.search(key.replace("_", "").replace("-", "").lower()):
            event[key] = MASK
        elif isinstance(value, dict):
            event[key] = redact(None, "", dict(value))
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
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
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
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
