"""No secret in what payhook shows of a stored body: JSON carried in a string, and bodies in
UTF-16 or UTF-32, included."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import pytest

import payhook.forms
import payhook.masking
from payhook.bodies import mask_body
from payhook.forms import Fields
from payhook.masking import MASK, mask_text
from payhook.spans import Edit

_INNER = json.dumps({"clientAuthKey": "s3cret", "n": 1}, separators=(",", ":"))
_SHOWN = json.dumps({"clientAuthKey": MASK, "n": 1}, separators=(",", ":"))


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (json.dumps({"data": _INNER, "v": 1}), json.dumps({"data": _SHOWN, "v": 1})),
        ('{"data" : "{\\"clientAuthKey\\":\\"s3cret\\"}" ,"x":"\\u00e9\\/"}',
         '{"data" : "{\\"clientAuthKey\\":\\"***\\"}" ,"x":"\\u00e9\\/"}'),
        (json.dumps({"a": json.dumps({"b": _INNER})}),
         json.dumps({"a": json.dumps({"b": _SHOWN})})),
        (json.dumps({"a": json.dumps(_INNER)}), json.dumps({"a": json.dumps(_SHOWN)})),
        (json.dumps(_INNER), json.dumps(_SHOWN)),
        ('{"d": "\\u007b\\"token\\": 1}"}', '{"d": "\\u007b\\"token\\": \\"***\\"}"}'),
        (json.dumps([_INNER, "[1]"]), json.dumps([_SHOWN, "[1]"])),
        ('{"d": "{\\"n\\": \\"\\u00e9\\"}", "e": "{not json"}',
         '{"d": "{\\"n\\": \\"\\u00e9\\"}", "e": "{not json"}'),
        ('{"d": "{\\"sign\\": \\"s\\", \\"n\\": \\"é\\"}"}',
         '{"d": "{\\"sign\\": \\"***\\", \\"n\\": \\"é\\"}"}'),
        (f"data={quote(_INNER)}&n=1", f"data={quote(_SHOWN, safe='*')}&n=1"),
        (f"data={_INNER}&n=1", f"data={_SHOWN}&n=1"),
        (f"n=1&data={quote_plus(json.dumps({'v': _INNER}))}",
         f"n=1&data={quote_plus(json.dumps({'v': _SHOWN}), safe='*')}"),
        ('{"d":"{\\"sign\\":\\"s\\",\\"u\\":\\"http:\\/\\/x\\",\\"e\\":\\"\\u00e9é\\"}"}',
         '{"d":"{\\"sign\\":\\"***\\",\\"u\\":\\"http:\\/\\/x\\",\\"e\\":\\"\\u00e9é\\"}"}'),
        ('{"d":"{\\u0022token\\u0022:\\u0022s\\u0022,\\"n\\":\\"\\u00e9\\/\\"}"}',
         '{"d":"{\\u0022token\\u0022:\\u0022***\\u0022,\\"n\\":\\"\\u00e9\\/\\"}"}'),
        ("data=%7B%22token%22%3A%22s%22%2c%22m%22:%22a%20b+c%22,%22n%22:%22%41%22%7D&n=1",
         "data=%7B%22token%22%3A%22***%22%2c%22m%22:%22a%20b+c%22,%22n%22:%22%41%22%7D&n=1"),
        ("data=%7B%22sign%22%3A%20%5B1%5D%2C%20%22m%22%3A%22a%20b%22%7D",
         "data=%7B%22sign%22%3A%20%22***%22%2C%20%22m%22%3A%22a%20b%22%7D"),
    ],
    ids=["json_string", "layout_kept", "twice_embedded", "encoded_twice", "body_encoded_twice",
         "escaped_brace", "in_an_array", "no_secret_unchanged", "non_ascii",
         "form_field_encoded", "form_field_raw", "form_field_twice_embedded",
         "escapes_kept", "escaped_quotes_kept", "percent_escapes_kept", "non_string_in_a_form"],
)
def test_json_carried_in_a_string_is_masked_inside(body: str, shown: str) -> None:
    """A JSON document carried as a string value (or a form field's value), however deep, has
    its secret-named members masked; the body differs from what was sent in those values only:
    the escapes of the string carrying them (`\\/`, `\\u00e9`, `%20` or `+`, `%2c`) as sent."""
    assert mask_text(body) == shown


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ('{"data":"a=1&token=x"}', '{"data":"a=1&token=***"}'),
        ('{"notify": "amount=300.00&errorMsg=low balance & retry&key=k1&sign=s%2B1"}',
         '{"notify": "amount=300.00&errorMsg=low balance & retry&key=***&sign=***"}'),
        ('{"d":"a=%20x+y&client%41uthKey=k&b=%2c"}', '{"d":"a=%20x+y&client%41uthKey=***&b=%2c"}'),
        ('{"a":"{\\"b\\":\\"n=1&key=k\\"}"}', '{"a":"{\\"b\\":\\"n=1&key=***\\"}"}'),
        ('{"d":"n=1&data=%7B%22sign%22%3A%22s%22%7D"}',
         '{"d":"n=1&data=%7B%22sign%22%3A%22***%22%7D"}'),
        ("data=a%3D1%26token%3Dx&n=1", "data=a%3D1%26token%3D***&n=1"),
        ('data={"a":"x&y","token":"t"}&n=1', 'data={"a":"x&y","token":"***"}&n=1'),
        ('{"d":"a=1&token=x\\u0026n=\\u0031"}', '{"d":"a=1&token=***\\u0026n=\\u0031"}'),
        ('{"d":"Use a=1 & b=2","e":"see the n=2: x=1","f":"x == y","g":"YOSIRZ+EQ=="}',
         '{"d":"Use a=1 & b=2","e":"see the n=2: x=1","f":"x == y","g":"YOSIRZ+EQ=="}'),
        ('{"d":"a=1&n=2","e":"https://x.test/?a=1"}', '{"d":"a=1&n=2","e":"https://x.test/?a=1"}'),
        ('"sign=s&n=1"', '"sign=***&n=1"'),
        ('{"d":"[\\"a=1&token=x\\"]"}', '{"d":"[\\"a=1&token=***\\"]"}'),
        ('"a"=1&token=x', '"a"=1&token=***'),
        ("data=%22%7b%5c%22sign%5c%22%3a1%7d%22",
         "data=%22%7b%5c%22sign%5c%22%3a%5c%22***%5c%22%7d%22"),
    ],
    ids=["form_in_a_string", "signing_string_raw", "escapes_kept", "in_json_in_a_string",
         "json_in_a_form_in_a_string", "form_in_a_form_field", "raw_json_with_an_ampersand",
         "escaped_ampersand", "prose_unchanged", "no_secret_unchanged", "a_string_body",
         "in_an_array_in_a_string", "form_body_quoted_name", "lower_case_hex_kept"],
)
def test_a_form_carried_in_a_string_is_masked_inside(body: str, shown: str) -> None:
    """A form (`a=1&token=x`: a field name, no space in it, then `=`, at the string's start)
    carried as a JSON string value or a form field's value, raw or encoded, however deep, has
    its secret-named fields masked, every other byte as sent; prose with an `=` or `&` in it
    (no secret-named field after it), and a form with no secret, are left as they are."""
    assert mask_text(body) == shown


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ('{\u201cdata\u201d:{\u201cen_data\u201d:\u201dx\u201d,\u201cpartner_key\u201d:\u201dpk\u201d}}',
         '{\u201cdata\u201d:{\u201cen_data\u201d:\u201dx\u201d,\u201cpartner_key\u201d:\u201d***\u201d}}'),
        ('{ "status": 1, "data": [ "accessToken": "1|4vY2W2" ] }',
         '{ "status": 1, "data": [ "accessToken": "***" ] }'),
        ('{"appId":1054,"errorMsg":"bad sign: amount=300&appId=1054&key=k1","sign":"af0g"}',
         '{"appId":1054,"errorMsg":"bad sign: amount=300&appId=1054&key=***","sign":"***"}'),
        ('{"appId":1054,"signStr":"amount=300&appId=1054&key=k1","sign":"af0g"}',
         '{"appId":1054,"signStr":"amount=300&appId=1054&key=***","sign":"***"}'),
        ('{"d":"[\\"token\\u003dx\\"]"}', '{"d":"[\\"token\\u003d***\\"]"}'),
    ],
    ids=["monetapay_typographic_quotes", "sssms88_member_in_an_array",
         "otgpay_signing_string_in_an_error", "otgpay_signing_string", "escaped_equals_sign"],
)
def test_bodies_as_the_providers_documents_write_them_are_masked(body: str, shown: str) -> None:
    """The providers' documented examples: MonetaPay's callback in typographic quotes (its
    `partner_key` masked, the quotes kept), SSSMS88's token as a member of an array, OTGPAY's
    signing string (`…&key=<merchant secret>`) echoed in a field, alone or after prose."""
    assert mask_text(body) == shown


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ('{"e":"bad key=k1"}', '{"e":"bad key=***"}'),
        ('{"e":"invalid sign=abc, expected d8f"}', '{"e":"invalid sign=*** expected d8f"}'),
        ('{"e":"Use a=1 & token=2","f":"failed:password=p"}',
         '{"e":"Use a=1 & token=***","f":"failed:password=***"}'),
        ('{"e":"bad key=k1 at https://m.example/cb?n=1"}',
         '{"e":"bad key=*** at https://m.example/cb?n=1"}'),
        ("n=1&e=invalid+sign%3Dabc+now", "n=1&e=invalid+sign%3D***+now"),
        ('{"e":"amount=300 is low","f":"see n=2, x=1","g":"a token = 3"}',
         '{"e":"amount=300 is low","f":"see n=2, x=1","g":"a token = 3"}'),
    ],
    ids=["after_prose", "ends_at_a_space", "after_a_colon", "before_a_url", "in_a_form_value",
         "names_not_secret_unchanged"],
)
def test_a_secret_named_field_after_prose_is_masked(body: str, shown: str) -> None:
    """One field after prose (a space or a colon, then `name=value`) has its value masked, up
    to the next space, if its name is a secret's; prose whose `x=y` names no secret is left as
    it is."""
    assert mask_text(body) == shown


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ('{"notify_url":"https://m.example/cb?token=abc&x=1"}',
         '{"notify_url":"https://m.example/cb?token=***&x=1"}'),
        ('{"u":"https:\\/\\/m.example\\/cb?x=%20&clientAuthKey=k#s=1"}',
         '{"u":"https:\\/\\/m.example\\/cb?x=%20&clientAuthKey=***#s=1"}'),
        ('{"u":"https://user:pw@m.example:8443/cb"}', '{"u":"https://user:***@m.example:8443/cb"}'),
        ('{"u":"https://m.example/cb#access_token=t&state=1"}',
         '{"u":"https://m.example/cb#access_token=***&state=1"}'),
        ('{"e":"callback to https://m.example/cb?sign=s failed"}',
         '{"e":"callback to https://m.example/cb?sign=*** failed"}'),
        ("n=1&cb=https%3A%2F%2Fm.example%2Fcb%3Ftoken%3Dabc%26x%3D1",
         "n=1&cb=https%3A%2F%2Fm.example%2Fcb%3Ftoken%3D***%26x%3D1"),
        ("n=1&cb=https://u:pw@m.example/cb?x=1", "n=1&cb=https://u:***@m.example/cb?x=1"),
        ('{"u":"https://m.example/cb?back=https%3A%2F%2Fx%2F%3Ftoken%3Dt"}',
         '{"u":"https://m.example/cb?back=https%3A%2F%2Fx%2F%3Ftoken%3D***"}'),
        ('{"u":"https://user@m.example/a:b?x=1#top","v":"mailto:a@b.c"}',
         '{"u":"https://user@m.example/a:b?x=1#top","v":"mailto:a@b.c"}'),
    ],
    ids=["query_in_json", "escaped_slashes_kept", "userinfo_password", "form_like_fragment",
         "url_in_prose", "url_encoded_in_a_form", "url_raw_in_a_form", "url_in_a_query",
         "no_secret_unchanged"],
)
def test_urls_carried_in_a_string_are_masked_inside(body: str, shown: str) -> None:
    """A URL in a JSON string or a form value (alone or in prose, raw or encoded) has its
    query's secret-named fields, a form-like fragment's and its userinfo password masked,
    every other byte as sent."""
    assert mask_text(body) == shown


def test_json_embedded_past_the_depth_bound_is_masked_whole() -> None:
    """Past `_MAX_EMBEDDED` levels of JSON in strings, a JSON-like string is masked whole:
    the bound on the work never shows a secret."""
    doc: object = {"token": "s3cret"}
    for _ in range(payhook.masking._MAX_EMBEDDED + 3):
        doc = {"d": json.dumps(doc)}
    shown = mask_text(json.dumps(doc))
    assert "s3cret" not in shown
    levels, inner = 0, json.loads(shown)
    while inner["d"] != MASK:
        levels, inner = levels + 1, json.loads(inner["d"])
    assert levels == payhook.masking._MAX_EMBEDDED


def test_a_missed_embedded_secret_falls_back_to_the_parsed_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should the scan miss JSON carried in a string, the body is shown re-serialised from its
    parsed form with that JSON masked inside, never with the secret."""
    monkeypatch.setattr(payhook.masking, "_string_edits", lambda text, depth, values: [])
    shown = mask_text(json.dumps({"n": 1, "data": [_INNER]}, indent=1))
    assert shown == json.dumps({"n": 1, "data": [_SHOWN]})


def test_a_missed_form_secret_masks_the_string_carrying_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the scan miss a secret in a form carried in a string, the body is shown
    re-serialised from its parsed form with that string masked whole, never with the secret."""
    monkeypatch.setattr(payhook.masking, "_form_edits", lambda text, depth: [])
    shown = mask_text(json.dumps({"n": 1, "data": ["a=1&token=s3cret", "a=1&n=2"]}, indent=1))
    assert shown == json.dumps({"n": 1, "data": [MASK, "a=1&n=2"]})


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ('data={"a":"x&n=1","sign":"s"}&m=1', 'data={"a":"x&n=1","sign":"***"}&m=1'),
        ('data=[{"k":"a&b=1"},{"key":"k"}]', 'data=[{"k":"a&b=1"},{"key":"***"}]'),
        ('a={&data={"x":"y&n=1","token":"t"}', 'a={&data={"x":"y&n=1","token":"***"}'),
        ("a=[1]x&token=t&n={}", "a=[1]x&token=***&n={}"),
        ("a={x&token=abc}", "a={x&token=***"),
    ],
    ids=["ampersand_and_field_in_a_string", "array", "after_an_unclosed_one",
         "not_followed_by_a_field", "braces_not_json"],
)
def test_raw_json_in_a_form_value_is_read_whole(body: str, shown: str) -> None:
    """A raw JSON value in a form runs to its closing bracket, if a `&` or the end follows it:
    a `&name=` in its strings starts no field that would hide the secrets after it; a value
    that only looks like JSON is read as the form splits it."""
    assert mask_text(body) == shown


def test_a_form_body_the_scan_leaves_a_secret_in_is_masked_as_split_at_every_ampersand(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should the scan's reading of a form body leave a secret (a raw JSON value read whole, say),
    the body is shown with its fields split at every `&` and masked so, never with the secret."""
    scan = payhook.masking._form_edits

    def missing(text: str, depth: int, fields: Fields = payhook.forms.fields) -> list[Edit]:
        return [] if fields is payhook.forms.fields else scan(text, depth, fields)

    monkeypatch.setattr(payhook.masking, "_form_edits", missing)
    assert mask_text("n=1&token=s3cret&d=%7B%7D") == "n=1&token=***&d=%7B%7D"


def test_a_form_body_no_reading_masks_is_masked_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should neither reading of a form body mask the form one of its fields carries, the body
    is masked whole."""
    monkeypatch.setattr(payhook.masking, "_embedded_edits", lambda text, depth: [])
    assert mask_text("n=1&d=a%3D1%26sign%3Ds3cret") == MASK
    assert mask_text("n=1&d=a%3D1") == "n=1&d=a%3D1"


_DOC = '{"clientAuthKey":"s3cret","n":"é"}'


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32",
                                      "utf-32-le", "utf-32-be"])
def test_a_utf16_or_utf32_body_is_decoded_before_masking(encoding: str) -> None:
    """A body in UTF-16 or UTF-32, marked by a byte-order mark or by the NULs of its first
    characters, is read in its encoding and masked like any other (the mark kept as U+FEFF)."""
    mark = "\ufeff" if encoding in ("utf-16", "utf-32") else ""
    assert mask_body(_DOC.encode(encoding)) == mark + '{"clientAuthKey":"***","n":"é"}'
    assert mask_body("token=abc&n=1".encode(encoding)) == mark + "token=***&n=1"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b'\xff\xfe{"token":"s3cret"}', f"{MASK} body withheld: UTF-16-LE by its first bytes,"
                                        " UTF-8 by its text"),
        (b'\xff\xfe{"token":"s3cret"}!', f"{MASK} body withheld: not valid UTF-16-LE"),
        (_DOC.encode(), '{"clientAuthKey":"***","n":"é"}'),
        (b'\xef\xbb\xbf{"token":"s3cret"}', '\ufeff{"token":"***"}'),
        (b'{"token":"s3cret","n":"\xff"}', '{"token":"***","n":"\ufffd"}'),
    ],
    ids=["utf8_behind_a_utf16_mark", "odd_length", "utf8", "utf8_mark", "not_utf8"],
)
def test_a_body_whose_encoding_cannot_be_trusted_is_withheld(raw: bytes, shown: str) -> None:
    """A UTF-16 mark in front of UTF-8 text, or bytes not valid after their mark, withhold the
    body with a marker saying why; a UTF-8 body (marked or not, valid or not) is shown masked
    as before."""
    assert mask_body(raw) == shown
    assert b"s3cret" not in shown.encode("utf-16-le") + shown.encode()
