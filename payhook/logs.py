"""structlog, configured once per process: JSON or console lines, contextvars, redaction."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import structlog

# Matched against the key with "_" and "-" removed, lower-cased: client_auth_key, clientAuthKey
# and client-auth-key are one name.
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|apikey|private|clientauthkey|accesskey|authorization"
    r"|signature|^sign$|aeskey|aesiv|cookie|partnerkey|^key$)"
)
MASK = "***"
_BOM = "\ufeff"
# A JSON string token (lenient: an escaped line break passes), then what makes it a member name.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_COLON = re.compile(r"\s*:\s*")
_STRUCTURE = re.compile(r'["\[\]{}]')
_SCALAR_END = re.compile(r"[\s,\]}]")
# A form field (`a=1&b=2`): the name is group 2, the value group 3.
_FORM_FIELD = re.compile(r"(^|&)([^=&]*)=([^&]*)")


def is_secret(name: str) -> bool:
    """Whether a field or header called `name` holds a secret (any spelling: client_auth_key,
    clientAuthKey and client-auth-key are one name)."""
    return bool(_SECRET_KEY.search(name.replace("_", "").replace("-", "").lower()))


def mask_text(text: str) -> str:
    """`text` (a callback body) with the value of every secret-named JSON member (whatever its
    type, at any depth, its name spelled with escapes or not) or form field masked, and every
    other byte as it was: what an operator may read of a raw body.

    Why not parse and re-serialise: the text is the evidence of what a provider sent, read to
    find why a signature failed: spacing, escapes (`\\/`, `\\u00e9`), number spellings
    (`300.00`), key order and repeated keys would all change. The members are found by a scan
    of the text instead; a JSON body is then parsed back, and shown re-serialised (its layout
    lost, its secrets masked) should the scan have missed a secret-named member anywhere."""
    bom = _BOM if text.startswith(_BOM) else ""  # Windows tools write one; JSON all the same
    body = text[len(bom):]
    if not body.lstrip().startswith(("{", "[")):
        return bom + _FORM_FIELD.sub(_mask_field, body)
    masked = _mask_members(body)
    try:
        if not _leaks(masked):
            return bom + masked
    except (ValueError, RecursionError):
        pass  # not JSON: the body was not either, or the scan broke it
    try:
        tree = json.loads(body, object_pairs_hook=_masked_object)
    except (ValueError, RecursionError):  # JSON-like, not JSON (truncated, say): the scan it is
        return bom + masked
    return bom + json.dumps(tree, ensure_ascii=False)


def _mask_field(m: re.Match[str]) -> str:
    name = unquote_plus(m.group(2))
    return f"{m.group(1)}{m.group(2)}={MASK}" if is_secret(name) else m.group(0)


def _mask_members(text: str) -> str:
    """Replace the value of each member whose decoded name is secret with `"***"`; a lenient
    scan, for JSON and for text that only looks like it."""
    out: list[str] = []
    kept = i = 0
    while (i := text.find('"', i)) >= 0:
        token = _STRING.match(text, i)
        if token is None:  # an unterminated string: no member after it
            break
        i = token.end()
        colon = _COLON.match(text, i)
        if colon is None or not is_secret(_name(token.group())):
            continue  # a value, or a member whose value is scanned on
        start = colon.end()
        out += [text[kept:start], f'"{MASK}"']
        kept = i = _value_end(text, start)
    return "".join(out) + text[kept:]


def _name(token: str) -> str:
    try:
        return str(json.loads(token))  # `"client\\u0041uthKey"` is clientAuthKey
    except ValueError:
        return token[1:-1]


def _value_end(text: str, start: int) -> int:
    """Where the value starting at `start` ends: a string, a whole array or object (brackets
    counted outside strings), or a scalar; the end of the text if it never does."""
    if text.startswith('"', start):
        token = _STRING.match(text, start)
        return token.end() if token else len(text)
    if not text.startswith(("[", "{"), start):
        end = _SCALAR_END.search(text, start)
        return end.start() if end else len(text)
    depth, i = 0, start
    while (found := _STRUCTURE.search(text, i)) is not None:
        char, i = found.group(), found.end()
        if char == '"':
            token = _STRING.match(text, found.start())
            if token is None:
                break
            i = token.end()
        elif char in "[{":
            depth += 1
        elif (depth := depth - 1) == 0:
            return i
    return len(text)


def _leaks(masked: str) -> bool:
    """Whether the JSON text `masked` still has a secret-named member not masked; the check
    runs inside the parser, so a deep body costs no recursion of ours."""
    leaked = False

    def check(members: list[tuple[str, Any]]) -> None:
        nonlocal leaked
        leaked = leaked or any(is_secret(name) and value != MASK for name, value in members)

    json.loads(masked, object_pairs_hook=check)
    return leaked


def _masked_object(members: list[tuple[str, Any]]) -> dict[str, Any]:
    return {name: MASK if is_secret(name) else value for name, value in members}


def mask_url(url: str) -> str:
    """`url` with any password in it masked: `redis://:***@host:6379/0`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask the value of any field whose name says it is a secret, at any depth of dicts and
    of the lists and tuples in them."""
    for key, value in list(event.items()):
        event[key] = MASK if is_secret(key) else _redacted(value)
    return event


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return redact(None, "", dict(value))
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


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
