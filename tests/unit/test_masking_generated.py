"""Masking generated bodies: documents, forms, URLs and fields after prose carried in strings, at
every depth, written every way their writers may choose; no secret value survives, no other byte
changes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

import hypothesis.strategies as st
from hypothesis import given

from payhook.masking import _MAX_EMBEDDED, MASK, is_secret, mask_text

# The value every generated secret-named member or field of `_SECRETS` holds: spelled the same
# at any level (no character any writer escapes), so a leak shows whatever wraps it.
_SECRET = "s3cr3t-42"


@dataclass(frozen=True)
class _Embedded:
    """A JSON document carried as a string, written as its writer chose."""

    doc: object
    ascii_only: bool
    separators: tuple[str, str]
    slash_escaped: bool  # `\/`, as PHP's json_encode writes `/`


@dataclass(frozen=True)
class _Form:
    """A form (`a=1&b=2`) carried as a string, written as its writer chose."""

    fields: tuple[tuple[str, object], ...]
    encoded: bool  # else raw, as a signing string is (a field carrying more is encoded still)
    plus: bool  # a space as `+`, else `%20`
    lower_hex: bool  # `%2c`, else `%2C`


@dataclass(frozen=True)
class _Url:
    """A URL carried as a string (`https://user:pw@host/cb?query#fragment`), its parts encoded
    as a URL's are: its password masked, its query and fragment masked as forms are."""

    user: str | None
    password: str | None
    path: str
    query: _Form | None
    fragment: _Form | None

    def carries(self) -> bool:  # what makes a URL one masking looks inside
        return ((self.user is not None and self.password is not None) or self.query is not None
                or (self.fragment is not None and bool(self.fragment.fields)))


@dataclass(frozen=True)
class _Prose:
    """Prose with one field after a space or a colon (`invalid sign=abc, try again`)."""

    before: str
    separator: str
    name: str
    value: str
    after: str


def _text(excluded: str) -> st.SearchStrategy[str]:
    return st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters=excluded),
                   max_size=8)


# No `=` in generated text: a string with one may read as a form, which only `_Form` makes; a
# raw field's text has none of what a raw form value cannot hold, nor a JSON document.
_TEXT = _text("=")
_FIELD_TEXT = _text("=&%+#{")
_SCALARS = st.none() | st.booleans() | st.integers() | _TEXT | st.floats(
    allow_nan=False, allow_infinity=False)
_SECRET_NAMES = st.sampled_from(["sign", "token", "clientAuthKey", "key", "partner_key"])
_NAMES = _SECRET_NAMES | st.sampled_from(["amount", "data", "n"]) | st.text(max_size=6)
_FIELD_NAMES = _SECRET_NAMES | st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
_SEPARATORS = st.sampled_from([(",", ":"), (", ", ": "), (" , ", " : ")])


def _with_secrets(entries: st.SearchStrategy[list[tuple[str, object]]],
                  ) -> st.SearchStrategy[list[tuple[str, object]]]:
    """`entries` and up to two secret-named ones holding `_SECRET`, in any order."""
    secrets = st.lists(st.tuples(_SECRET_NAMES, st.just(_SECRET)), max_size=2)
    return st.tuples(entries, secrets).map(lambda both: both[0] + both[1]).flatmap(
        st.permutations)


def _forms(values: st.SearchStrategy[object]) -> st.SearchStrategy[_Form]:
    fields = _with_secrets(st.lists(st.tuples(_FIELD_NAMES, values), max_size=4))
    return st.builds(_Form, fields.map(tuple), st.booleans(), st.booleans(), st.booleans())


def _urls(values: st.SearchStrategy[object]) -> st.SearchStrategy[_Url]:
    encoded = st.builds(_Form, _with_secrets(st.lists(st.tuples(_FIELD_NAMES, values),
                                                      max_size=3)).map(tuple),
                        st.just(True), st.booleans(), st.booleans())
    words = st.from_regex(r"[a-z0-9]{0,6}", fullmatch=True)
    return st.builds(_Url, st.none() | words, st.none() | st.just(_SECRET) | words,
                     st.sampled_from(["", "/", "/cb", ":8443/a:b/"]), st.none() | encoded,
                     st.none() | encoded)


# Prose around the field has no `=`, `&`, `:` or brackets: nothing else in it is masked.
_PROSE = st.from_regex(r"[A-Za-z ,.!']{0,12}", fullmatch=True)
_PROSES = _FIELD_NAMES.flatmap(lambda name: st.builds(
    _Prose, _PROSE, st.sampled_from([" ", ": ", ":", "  "]), st.just(name),
    st.just(_SECRET) if is_secret(name) else st.from_regex(r"[A-Za-z0-9.\-]{0,8}",
                                                             fullmatch=True), _PROSE))


def _containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    dicts = _with_secrets(st.lists(st.tuples(_NAMES, inner), max_size=4)).map(dict)
    lists_or_dicts = st.lists(inner, max_size=4) | dicts
    embedded = st.builds(_Embedded, lists_or_dicts, st.booleans(), _SEPARATORS, st.booleans())
    forms = _forms(_FIELD_TEXT | embedded | _forms(_FIELD_TEXT) | _PROSES)
    return lists_or_dicts | embedded | forms | _urls(_FIELD_TEXT | embedded) | _PROSES


_TREES = st.recursive(_SCALARS, _containers, max_leaves=20)


def _write_json(doc: object, ascii_only: bool, separators: tuple[str, str],
                slash_escaped: bool, indent: int | None = None) -> str:
    text = json.dumps(doc, ensure_ascii=ascii_only, separators=separators, indent=indent)
    return text.replace("/", "\\/") if slash_escaped else text  # a `/` is only ever in a string


def _write_field(text: str, form: _Form) -> str:
    spelled = (quote_plus if form.plus else quote)(text, safe="*")
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), spelled) if form.lower_hex \
        else spelled


def _render_form(form: _Form, mask: bool, depth: int) -> str:
    fields = []
    for name, value in form.fields:
        text = MASK if mask and is_secret(name) else _render(value, mask, depth + 1)
        assert isinstance(text, str)
        raw = not form.encoded and isinstance(value, str)
        fields.append(f"{_write_field(name, form)}={text if raw else _write_field(text, form)}")
    return "&".join(fields)


def _render_url(url: _Url, mask: bool, depth: int) -> str:
    user = "" if url.user is None else url.user
    if url.user is not None and url.password is not None:
        user += ":" + (MASK if mask else url.password)
    parts = [f"https://{user}@m.example" if url.user is not None else "https://m.example",
             url.path]
    if url.query is not None:
        parts += ["?", _render_form(url.query, mask, depth)]
    if url.fragment is not None:
        parts += ["#", _render_form(url.fragment, mask, depth)]
    return "".join(parts)


def _render_prose(prose: _Prose, mask: bool) -> str:
    value = MASK if mask and is_secret(prose.name) else prose.value
    after = f" {prose.after}" if prose.after else ""
    return f"{prose.before}{prose.separator}{prose.name}={value}{after}"


def _render(node: object, mask: bool, depth: int = 0) -> object:
    """The document `node` describes: as sent, or (`mask`) as the API should show it."""
    deep = mask and depth >= _MAX_EMBEDDED
    if isinstance(node, _Embedded):
        doc = _render(node.doc, mask and not deep, depth + 1)
        node = _write_json(doc, node.ascii_only, node.separators, node.slash_escaped)
    elif isinstance(node, _Form):
        node = _render_form(node, mask and not deep, depth)
    elif isinstance(node, _Url):
        return MASK if deep and node.carries() else _render_url(node, mask, depth)
    elif isinstance(node, _Prose):
        return MASK if deep and is_secret(node.name) else _render_prose(node, mask)
    if isinstance(node, dict):
        return {k: MASK if mask and is_secret(k) else _render(v, mask, depth)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_render(v, mask, depth) for v in node]
    if deep and isinstance(node, str) and (
            (re.search(r'[{=]|\\u|:\\?/', node) and node.lstrip()[:1] in ("{", "[", '"'))
            or re.match(r"[\w.\-\[\]%+]{1,64}=", node)):
        return MASK  # past the bound, JSON-like and form-like strings are masked whole
    return node


# The mask as any level spells it, its quotes included (`\"`, `%22`, `%5C%22`, …).
_MASKED = re.compile(r'(?:\\|"|%(?:25)*(?:22|5[Cc]))*\*\*\*(?:\\|"|%(?:25)*(?:22|5[Cc]))*')


def _differs_only_where_masked(sent: str, shown: str) -> bool:
    """Whether `sent` is `shown` with each mask (and its quotes) put back as some text."""
    first, *pieces = _MASKED.split(shown)
    if not pieces:
        return sent == shown
    *middle, last = pieces
    at = len(first) if sent.startswith(first) else -1
    for piece in middle:
        if at < 0:
            return False
        at = sent.find(piece, at)
        at = at + len(piece) if at >= 0 else -1
    return 0 <= at <= len(sent) - len(last) and sent.endswith(last)


@given(tree=_TREES, ascii_only=st.booleans(), indent=st.none() | st.integers(0, 2),
       separators=_SEPARATORS, slash_escaped=st.booleans())
def test_body_masking_matches_masking_the_documents_and_forms_in_its_strings(
    tree: object, ascii_only: bool, indent: int | None, separators: tuple[str, str],
    slash_escaped: bool,
) -> None:
    """Whatever the document, the documents, forms, URLs (userinfo, query, fragment) and
    fields after prose carried in its strings (and in their fields), and however each is
    written, the masked text is the document with each secret-named member's or field's value
    (and each URL's password) replaced by "***", at every level, written the same way: no
    secret value is left, and no other byte changed."""
    def write(doc: object) -> str:
        return _write_json(doc, ascii_only, separators, slash_escaped, indent)

    sent = write(_render(tree, mask=False))
    shown = mask_text(sent)
    assert _SECRET not in shown
    assert _differs_only_where_masked(sent, shown)
    assert shown == write(_render(tree, mask=True))
