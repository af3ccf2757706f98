"""Edits by span, and text decoded with where each of its characters is spelled in the source (a
JSON string token, a form value): an edit found in the decoded text lands on the bytes that
spelled it, and every other byte stays as it was."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import quote

# Replace text[start:end] with the string.
Edit = tuple[int, int, str]

# A JSON string token (lenient: an escaped line break passes).
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_STRUCTURE = re.compile(r'["\[\]{}]')
# One character of a JSON string's content, as json.loads reads it (a surrogate pair is one).
_JSON_CHAR = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\.|.",
    re.DOTALL)
# One byte, or one character, of a form value.
_FORM_CHAR = re.compile(r"%[0-9a-fA-F]{2}|.", re.DOTALL)
# A percent escape with a hex letter in it; one in upper case.
_HEX_LETTER = re.compile(r"%(?:[0-9a-fA-F][a-fA-F]|[a-fA-F][0-9])")
_HEX_UPPER = re.compile(r"%(?:[0-9A-F][A-F]|[A-F][0-9])")


def apply(text: str, edits: list[Edit]) -> str:
    """`text` with `edits` (in order, not overlapping) made."""
    out: list[str] = []
    kept = 0
    for start, end, replacement in edits:
        out += [text[kept:start], replacement]
        kept = end
    return "".join(out) + text[kept:]


def shifted(edits: list[Edit], by: int) -> list[Edit]:
    """`edits` found in a text that starts `by` characters into another, made on that one."""
    return [(start + by, end + by, replacement) for start, end, replacement in edits]


def json_close(text: str, start: int) -> int | None:
    """Where the JSON (or JSON-like) array or object starting at `start` ends, brackets counted
    outside strings; None if it never does."""
    depth, i = 0, start
    while (found := _STRUCTURE.search(text, i)) is not None:
        char, i = found.group(), found.end()
        if char == '"':
            token = JSON_STRING.match(text, found.start())
            if token is None:
                return None
            i = token.end()
        elif char in "[{":
            depth += 1
        elif (depth := depth - 1) == 0:
            return i
    return None


def json_string(token: str) -> tuple[str, list[int]] | None:
    """The JSON string `token` decoded, with the index in `token` where each of its characters
    is spelled, and one more for the closing quote; None if it is not a valid JSON string."""
    try:
        text = json.loads(token)
    except ValueError:
        return None
    if not isinstance(text, str):
        return None
    if "\\" not in token:  # the common case: each character spelled as itself
        return text, list(range(1, len(token)))
    offsets = [m.start() for m in _JSON_CHAR.finditer(token, 1, len(token) - 1)]
    if len(offsets) != len(text):  # a raw surrogate beside an escaped one: read otherwise
        return None
    return text, [*offsets, len(token) - 1]


def form_value(raw: str) -> tuple[str, list[int]]:
    """The form value (or name) `raw` decoded (`+` a space, `%XX` a byte of UTF-8; a byte that
    is not UTF-8 a lone surrogate), with the index in `raw` where each of its characters is
    spelled, and one more for its end."""
    if "%" not in raw and "+" not in raw:  # the common case: each character spelled as itself
        return raw, list(range(len(raw) + 1))
    data = bytearray()
    starts: list[int] = []
    for found in _FORM_CHAR.finditer(raw):
        spelled = found.group()
        byte = (bytes([int(spelled[1:], 16)]) if len(spelled) == 3
                else b" " if spelled == "+" else spelled.encode("utf-8", "surrogatepass"))
        starts += [found.start()] * len(byte)
        data += byte
    text = data.decode("utf-8", "surrogateescape")
    offsets: list[int] = []
    at = 0
    for char in text:
        offsets.append(starts[at])
        at += 1 if "\udc80" <= char <= "\udcff" else len(char.encode("utf-8", "surrogatepass"))
    return text, [*offsets, len(raw)]


def moved(edits: list[Edit], offsets: list[int], base: int,
          spell: Callable[[str], str]) -> list[Edit]:
    """`edits` found in a decoded text, made on its source: `offsets` as `json_string` or
    `form_value` give them, `base` where the source starts, each replacement spelled by
    `spell` as the source spells text."""
    return [(base + offsets[start], base + offsets[end], spell(replacement))
            for start, end, replacement in edits]


def json_speller(token: str) -> Callable[[str], str]:
    """How the JSON string `token` spells text: escaped, non-ASCII too if it has none raw."""
    return lambda text: json.dumps(text, ensure_ascii=token.isascii())[1:-1]


def form_speller(raw: str, decoded: str) -> Callable[[str], str]:
    """How the form value `raw` (`decoded`) spells text: percent-encoded (`*` kept; hex in the
    value's case) if the value is, or if the text holds what a raw value cannot."""
    lower = _HEX_LETTER.search(raw) is not None and _HEX_UPPER.search(raw) is None

    def spell(text: str) -> str:
        if raw == decoded and not re.search(r"[&%+#]", text):
            return text
        spelled = quote(text, safe="*")
        return _HEX_UPPER.sub(lambda m: m.group().lower(), spelled) if lower else spelled

    return spell
