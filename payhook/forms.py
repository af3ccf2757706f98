"""Where the fields are in text that is not JSON: a form's (`a=1&b=2`), those after prose (`bad
sign: amount=300&key=k1`), a URL's query and password. masking.py decides which values to mask
and looks inside the others."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import NamedTuple
from urllib.parse import unquote_plus

from payhook import spans

# How a form is read: each field's name, as spelled, and where its value starts and ends.
Fields = Callable[[str], Iterator[tuple[str, int, int]]]
# A form field (`a=1&b=2`): its name (group 1) starts the text or follows a `&`; its value
# (group 2) runs to the next `&` that starts a field (the `&` of a raw value, in JSON say, is its).
_FORM_FIELD = re.compile(r"(?:^|(?<=&))([^=&]*)=([^&]*(?:&(?![^=&]*=)[^&]*)*)")
# How many times over the text the tries to read raw form values as JSON may scan it, in all.
_JSON_TRIES = 4
# A field as a form splits at every `&`, for a second look.
_SPLIT_FIELD = re.compile(r"(?:^|(?<=&))([^=&]*)=([^&]*)")
# A string carried in JSON or in a form is read as a form if it starts with a field name (word
# characters, no space: prose with an `=` in it is no form; no `/`, and at most 64, so base64
# ciphertext is none either) and `=`: `a=1&token=x`, as providers wrap a payload in `data`.
_FORM_START = re.compile(r"[\w.\-\[\]%+]{1,64}=")
# …or if, after prose, it holds two fields or more, the first after a space or a colon: a
# signing string echoed in an error (`bad sign: amount=300&key=k1`). One field after prose is
# no form, but masked if its name is a secret's (`invalid sign=abc`): see `prose_parts`.
_FIELD_AFTER_PROSE = re.compile(r"(?<=[\s:])[\w.\-\[\]%+]{1,64}=")
_NEXT_FIELD = re.compile(r"&[\w.\-\[\]%+]{1,64}=")
# A field after prose ends at a space: a secret value has none (`bad key=k1, try again`).
_VALUE_IN_PROSE = re.compile(r"\S*")
# A URL (`https://user:pw@host/cb?token=x#a=1`) in a string runs to a space or a quote.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s\"'<>`]*")


class Part(NamedTuple):
    """A span of prose that masking looks at: a field's value (`name` decoded), or a form to
    look inside (`name` None)."""

    name: str | None
    start: int
    end: int


def form_at(text: str) -> int | None:
    """Where the form that the string `text` carries starts, if it carries one: at its start,
    or after prose."""
    if _FORM_START.match(text):
        return 0
    for field in _NEXT_FIELD.finditer(text):  # a second field; is a first one before it?
        first = _FIELD_AFTER_PROSE.search(text, text.rfind("&", 0, field.start()) + 1,
                                          field.start())
        if first:
            return first.start()
    return None


def fields(text: str) -> Iterator[tuple[str, int, int]]:
    """The fields of the form `text` as the scan reads them: each one's name, as spelled, and
    where its value starts and ends. A raw JSON value runs to its closing bracket if a `&` or
    the end follows it (`data={"a":"x&n=1","sign":"s"}&m=1` is two fields, not three); the
    brackets counted in all such tries stay under a few times the text, so the scan stays
    linear (`a={&a={&…` is read as fields split at `&` past that)."""
    at, budget = 0, _JSON_TRIES * len(text)
    while (field := _FORM_FIELD.search(text, at)) is not None:
        start, at = field.span(2)
        if budget > 0 and text.startswith(("{", "["), start):
            close = spans.json_close(text, start)
            budget -= (close or len(text)) - start
            if close is not None and (close == len(text) or text[close] == "&"):
                at = max(at, close)
        yield field.group(1), start, at


def split_fields(text: str) -> Iterator[tuple[str, int, int]]:
    """The fields of the form `text` split at every `&` (not as the scan reads them, for a
    second look): each one's name, as spelled, and where its value starts and ends."""
    for field in _SPLIT_FIELD.finditer(text):
        yield field.group(1), *field.span(2)


def prose_parts(text: str, end: int) -> list[Part]:
    """The parts of the prose `text[:end]` that may hold a secret: each URL's password, query
    and form-like fragment, and each field after a space or a colon outside URLs (`invalid
    sign=abc`), named so that masking masks a secret-named one's value to the next space."""
    parts: list[Part] = []
    prose = 0
    for url in _URL.finditer(text, 0, end):
        parts += _fields_in_prose(text, prose, url.start())
        parts += _url_parts(text, *url.span())
        prose = url.end()
    return parts + _fields_in_prose(text, prose, end)


def _fields_in_prose(text: str, start: int, end: int) -> list[Part]:
    parts: list[Part] = []
    for field in _FIELD_AFTER_PROSE.finditer(text, start, end):
        value = _VALUE_IN_PROSE.match(text, field.end(), end)
        assert value is not None  # `\S*` matches anywhere
        parts.append(Part(unquote_plus(field.group()[:-1]), *value.span()))
    return parts


def _url_parts(text: str, start: int, end: int) -> list[Part]:
    """A URL's password (a field named so), its query, and its fragment if that reads as a
    form (`#access_token=x&state=y`): the rest of a URL is no secret's place."""
    host = text.index("//", start) + 2
    path = min((i for i in (text.find(c, host, end) for c in "/?#") if i >= 0), default=end)
    parts: list[Part] = []
    if (at := text.rfind("@", host, path)) >= 0 and (colon := text.find(":", host, at)) >= 0:
        parts.append(Part("password", colon + 1, at))
    fragment = text.find("#", path, end)
    after = end if fragment < 0 else fragment
    if (query := text.find("?", path, after)) >= 0:
        parts.append(Part(None, query + 1, after))
    if fragment >= 0 and _FORM_START.match(text, fragment + 1, end):
        parts.append(Part(None, fragment + 1, end))
    return parts
