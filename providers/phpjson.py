"""PHP `json_encode` with its default flags: the exact bytes PHP providers (MonetaPay) sign.

Compact, `/` escaped as `\\/`, every non-ASCII character as lowercase `\\uXXXX` (astral ones as
a surrogate pair), integers as integers. `sort_keys` sorts the top-level keys only (`ksort`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# PHP refuses (returns false) beyond this nesting depth; we raise instead of recursing forever.
MAX_DEPTH = 512

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def encode(value: Any, *, sort_keys: bool = True) -> str:
    """`json_encode($value)` as PHP writes it; top-level keys sorted when `sort_keys`.

    Raises `ValueError` for what PHP cannot encode faithfully here: floats (MonetaPay signs
    integers only, and PHP's float formatting depends on `serialize_precision`), non-string
    keys, unknown types, and nesting deeper than `MAX_DEPTH`.
    """
    if sort_keys and isinstance(value, Mapping):
        value = {key: value[key] for key in sorted(value, key=_key_text)}
    parts: list[str] = []
    _encode(value, parts, 0)
    return "".join(parts)


def escape_string(text: str) -> str:
    """A PHP JSON string literal, quotes included."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        elif code < 0x80:
            out.append(char)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
    out.append('"')
    return "".join(out)


def _key_text(key: object) -> str:
    if not isinstance(key, str):
        raise ValueError(f"object keys must be strings, not {type(key).__name__}")
    return key


def _encode(value: Any, out: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("nesting deeper than PHP's json_encode allows")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(escape_string(value))
    elif isinstance(value, Mapping):
        # inline rather than a helper: one stack frame per nesting level keeps MAX_DEPTH reachable
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out.append(",")
            out.append(escape_string(_key_text(key)))
            out.append(":")
            _encode(item, out, depth + 1)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out, depth + 1)
        out.append("]")
    else:
        raise ValueError(f"cannot encode {type(value).__name__} as PHP does")
