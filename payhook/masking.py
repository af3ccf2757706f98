"""Secrets masked in what payhook shows of a callback body (the API, logs): the value of every
secret-named JSON member or form field, every other byte kept."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

from payhook import forms, spans
from payhook.spans import Edit

# Matched against the key with "_" and "-" removed, lower-cased: client_auth_key, clientAuthKey
# and client-auth-key are one name.
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|apikey|private|clientauthkey|accesskey|authorization"
    r"|signature|^sign$|aeskey|aesiv|cookie|partnerkey|^key$)"
)
MASK = "***"
_BOM = "\ufeff"
_STRING = spans.JSON_STRING
_COLON = re.compile(r"\s*:\s*")
# Typographic quotes, as a provider's documentation writes JSON (MonetaPay's callback example,
# `{“data”:{“en_data”:”…”}}`): read as `"` in a text that has no other.
_CURLY = str.maketrans("\u201c\u201d", '""')
_SCALAR_END = re.compile(r"[\s,\]}]")
# JSON or a form carried in a string (or a form field) carried in JSON…: masked inside this
# many levels deep; a JSON-like or form-like string deeper still is masked whole.
_MAX_EMBEDDED = 4


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
    (`300.00`), key order and repeated keys would all change. The members are found by a scan;
    a body the scan left a secret in is shown re-serialised (JSON) or split at every `&` (a form).

    A string value or a form field's value carrying JSON, a form (as `forms.form_at` tells one
    from prose), a URL or a secret-named field after prose is masked inside the same way, by
    edits on the characters that spell its secret values (`\\"`, `%22`, `%20` stay as sent),
    and so on, `_MAX_EMBEDDED` levels deep."""
    return spans.apply(text, _edits(text, 0))


def mask_string(text: str, depth: int = 0) -> str:
    """`text`, a string that may carry a callback's text (a log field: an error echoing a
    signing string, a URL with a `?token=`), masked as a string value `depth` levels into a
    body is: inside, as `mask_text` says; whole should a secret be left."""
    shown = spans.apply(text, _embedded_edits(text, depth))
    return MASK if _embedded_leaks(shown, depth) else shown


def _edits(text: str, depth: int) -> list[Edit]:
    """The edits that mask `text`, a body or a string carried `depth` levels into one."""
    bom = len(_BOM) if text.startswith(_BOM) else 0  # Windows tools write one; JSON all the same
    body = text[bom:]
    return spans.shifted(
        _json_edits(body, depth) if _looks_json(body) else _checked_form_edits(body, depth), bom)


def _json_edits(text: str, depth: int) -> list[Edit]:
    """The edits that mask the JSON (or JSON-like) `text`; should they leave a secret-named
    member, one that shows the text re-serialised from its parsed form, masked."""
    if '"' not in text:
        text = text.translate(_CURLY)  # one character for one: every span stays where it was
    values = _member_values(text)
    edits = sorted([_masked_member(text, *value) for value in values]
                   + _string_edits(text, depth, values))
    try:
        if not _leaks(spans.apply(text, edits), depth):
            return edits
    except (ValueError, RecursionError):
        pass  # not JSON: the body was not either, or the scan broke it
    try:
        tree = _masked_value(json.loads(
            text, object_pairs_hook=lambda members: _masked_object(members, depth)), depth)
    except (ValueError, RecursionError):  # JSON-like, not JSON (truncated, say): the scan it is
        return edits
    return [(0, len(text), json.dumps(tree, ensure_ascii=False))]


def _looks_json(text: str) -> bool:  # an array or object, or a string carrying one or a form
    start = text.lstrip()[:1]
    return start in ("{", "[") or (
        start == '"' and _may_carry(text) and _STRING.fullmatch(text.strip()) is not None)


def _may_carry(text: str) -> bool:  # JSON text with a member, a form or a URL (escaped, maybe)
    return "{" in text or "=" in text or "\\u" in text or ":/" in text or ":\\/" in text


def _carries_json(text: str) -> bool:  # a string value that may hold members or forms
    return _may_carry(text) and _looks_json(text)


def _carried_at(text: str) -> int | None:
    """Where the JSON or the form that the string `text` carries starts, if it carries one."""
    return 0 if _carries_json(text) else forms.form_at(text)


def _embedded_edits(text: str, depth: int) -> list[Edit]:
    """The edits that mask `text`, a string value found at `depth`, if it carries JSON or a
    form, or prose with a URL or a field in it that may hold a secret."""
    start = _carried_at(text)
    parts = [part for part in forms.prose_parts(text, len(text) if start is None else start)
             if part.name is None or is_secret(part.name)]
    if start is None and not parts:
        return []
    if depth >= _MAX_EMBEDDED:
        return [(0, len(text), MASK)]
    edits: list[Edit] = []
    for name, part_start, part_end in parts:
        edits += ([(part_start, part_end, MASK)] if name is not None else spans.shifted(
            _form_edits(text[part_start:part_end], depth + 1), part_start))
    if start is not None:
        edits += spans.shifted(_edits(text[start:], depth + 1), start)
    return edits


def _checked_form_edits(text: str, depth: int) -> list[Edit]:
    """The edits that mask the form `text`; should they leave a secret, read as
    `forms.split_fields` reads the form, those that mask each field so split; should those
    too, one that masks the whole text. Checked at the top only: a JSON body's own check looks
    into the forms it carries, a form body's into those in its fields."""
    edits = _form_edits(text, depth)
    if depth or not _form_leaks(spans.apply(text, edits), depth):
        return edits
    edits = _form_edits(text, depth, forms.split_fields)
    return [(0, len(text), MASK)] if _form_leaks(spans.apply(text, edits), depth) else edits


def _form_edits(text: str, depth: int, fields: forms.Fields = forms.fields) -> list[Edit]:
    """The edits that mask the form `text` (its fields as `fields` reads them): each
    secret-named field's value, and the JSON or form carried in any other's."""
    edits: list[Edit] = []
    for name, start, end in fields(text):
        if is_secret(unquote_plus(name)):
            edits.append((start, end, MASK))
            continue
        value, offsets = spans.form_value(text[start:end])
        spell = spans.form_speller(text[start:end], value)
        edits += spans.moved(_embedded_edits(value, depth), offsets, start, spell)
    return edits


def _member_values(text: str) -> list[tuple[int, int]]:
    """Where the value of each member whose decoded name is secret starts and ends; a lenient
    scan, for JSON and for text that only looks like it."""
    values: list[tuple[int, int]] = []
    i = 0
    while (i := text.find('"', i)) >= 0:
        token = _STRING.match(text, i)
        if token is None:  # an unterminated string: no member after it
            break
        i = token.end()
        colon = _COLON.match(text, i)
        if colon is None or not is_secret(_name(token.group())):
            continue  # a value, or a member whose value is scanned on
        values.append((colon.end(), i := _value_end(text, colon.end())))
    return values


def _masked_member(text: str, start: int, end: int) -> Edit:
    """A string value keeps its quotes as spelled, its content masked; any other is `"***"`."""
    if _STRING.fullmatch(text, start, end):
        return start + 1, end - 1, MASK
    return start, end, f'"{MASK}"'


def _string_edits(text: str, depth: int, values: list[tuple[int, int]]) -> list[Edit]:
    """The edits that mask the JSON carried in each string value of the text (not a member
    name, nor one in the masked `values`)."""
    edits: list[Edit] = []
    masked = iter(values)
    value = next(masked, None)
    i = 0
    while (i := text.find('"', i)) >= 0:
        token = _STRING.match(text, i)
        if token is None:
            break
        start, i = token.span()
        while value is not None and value[1] <= start:
            value = next(masked, None)
        if value is not None and value[0] < i:
            i = max(i, value[1])
        elif _COLON.match(text, i) is None:
            edits += _token_edits(text, start, i, depth)
    return edits


def _token_edits(text: str, start: int, end: int, depth: int) -> list[Edit]:
    """The edits that mask the JSON carried in the string token `text[start:end]`."""
    token = text[start:end]
    if not _may_carry(token):
        return []  # the common case, spared a decode (`\\u007b` is a brace too)
    decoded = spans.json_string(token)
    if decoded is None:
        return []
    value, offsets = decoded
    return spans.moved(_embedded_edits(value, depth), offsets, start, spans.json_speller(token))


def _name(token: str) -> str:
    try:
        return str(json.loads(token))  # `"client\\u0041uthKey"` is clientAuthKey
    except ValueError:
        return token[1:-1]


def _value_end(text: str, start: int) -> int:
    """Where the value starting at `start` ends: a string, a whole array or object, or a
    scalar; the end of the text if it never does."""
    if text.startswith('"', start):
        token = _STRING.match(text, start)
        return token.end() if token else len(text)
    if not text.startswith(("[", "{"), start):
        end = _SCALAR_END.search(text, start)
        return end.start() if end else len(text)
    return spans.json_close(text, start) or len(text)


def _leaks(masked: str, depth: int) -> bool:
    """Whether the JSON text `masked` still has a secret-named member not masked, here or in
    JSON carried by its strings; the check runs inside the parser, so a deep body costs no
    recursion of ours."""
    if '"' not in masked:
        return False  # no string, so no member: spared a parse, as a form's `a={` value is
    leaked = False

    def check(members: list[tuple[str, Any]]) -> None:
        nonlocal leaked
        leaked = leaked or any(
            value != MASK if is_secret(name) else _embedded_leaks(value, depth)
            for name, value in members)

    top = json.loads(masked, object_pairs_hook=check)
    return leaked or _embedded_leaks(top, depth)


def _embedded_leaks(value: Any, depth: int) -> bool:
    """Whether a string in `value` (a string, or lists of them) carries JSON or a form with a
    secret not masked; objects in it were checked by the parser already."""
    for text in _strings(value):
        if (start := _carried_at(text)) is None:
            continue
        if depth >= _MAX_EMBEDDED:
            return True  # `_embedded_edits` masks these whole
        try:
            if (_leaks(text, depth + 1) if _carries_json(text)
                    else _form_leaks(text[start:], depth + 1)):
                return True
        except (ValueError, RecursionError):
            pass  # not JSON after all: the scan masked what it found in it
    return False


def _form_leaks(text: str, depth: int) -> bool:
    """Whether the form `text`, as `forms.split_fields` reads it, has a secret-named field not
    masked, or a field carrying JSON or a form that leaks."""
    for name, start, end in forms.split_fields(text):
        value = unquote_plus(text[start:end])
        if value != MASK if is_secret(unquote_plus(name)) else _embedded_leaks(value, depth):
            return True
    return False


def _strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        if isinstance(item := stack.pop(), str):
            yield item
        elif isinstance(item, list):
            stack.extend(item)


def _masked_object(members: list[tuple[str, Any]], depth: int) -> dict[str, Any]:
    return {name: MASK if is_secret(name) else _masked_value(value, depth)
            for name, value in members}


def _masked_value(value: Any, depth: int) -> Any:
    """`value` with the JSON and forms in its strings masked (objects in it are masked
    already); a string the scan leaves a secret in (a form: only the scan reads one) whole."""
    if isinstance(value, str):
        return mask_string(value, depth)
    if isinstance(value, list):
        return [_masked_value(item, depth) for item in value]
    return value
