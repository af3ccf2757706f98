"""structlog, configured once per process: JSON or console lines, contextvars, redaction."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog

# Matched against the key with "_" and "-" removed, lower-cased: client_auth_key, clientAuthKey
# and client-auth-key are one name.
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|apikey|private|clientauthkey|accesskey|authorization"
    r"|signature|^sign$|aeskey|aesiv|cookie|partnerkey|^key$)"
)
MASK = "***"
# A JSON member with a string or number value, at any depth of the text; the name is group 1,
# the value group 2.
_JSON_MEMBER = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*)')
# A form field (`a=1&b=2`): the name is group 2, the value group 3.
_FORM_FIELD = re.compile(r"(^|&)([^=&]*)=([^&]*)")


def is_secret(name: str) -> bool:
    """Whether a field or header called `name` holds a secret (any spelling: client_auth_key,
    clientAuthKey and client-auth-key are one name)."""
    return bool(_SECRET_KEY.search(name.replace("_", "").replace("-", "").lower()))


def mask_text(text: str) -> str:
    """`text` (a callback body) with the value of every secret-named JSON member or form field
    masked, and every other byte of it as it was: what an operator may read of a raw body."""

    def member(m: re.Match[str]) -> str:
        if not is_secret(m.group(1)):
            return m.group(0)
        return m.group(0)[: m.start(2) - m.start(0)] + f'"{MASK}"'

    def field(m: re.Match[str]) -> str:
        return f"{m.group(1)}{m.group(2)}={MASK}" if is_secret(m.group(2)) else m.group(0)

    if text.lstrip().startswith(("{", "[")):
        return _JSON_MEMBER.sub(member, text)
    return _FORM_FIELD.sub(field, text)


def mask_url(url: str) -> str:
    """`url` with any password in it masked: `redis://:***@host:6379/0`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask the value of any field whose name says it is a secret, at any depth of dicts."""
    for key, value in list(event.items()):
        if is_secret(key):
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
    # The console renderer prints a traceback itself; for JSON it becomes the `exception` field
    # (without it a line said only `"exc_info": true`, for ours and for the libraries' errors).
    renderers: list[Any] = (
        [structlog.dev.ConsoleRenderer()] if fmt == "console"
        else [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
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
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
