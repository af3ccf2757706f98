"""MonetaPay's side of the wire: callbacks as MonetaPay sends them and `/trade/query` answers.

Written from CONTRACT §4 with `cryptography`, `hashlib` and `json` directly (not
`providers.monetapay` or `providers.phpjson`), so a round trip checks two implementations.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from providers.base import HttpReply, HttpRequest

QUERY_PATH = "/trade/query"
_JSON = {"Content-Type": "application/json"}
_PY_ONLY_ESCAPES = re.compile(r"\\\\|\\u007f")


@dataclass(frozen=True)
class MonetaPayProviderKeys:
    """What MonetaPay holds for one merchant; the ids, when set, must match a query's."""

    token: str
    aes_key: str
    aes_iv: str
    partner_key: str | None = None
    mch_id: int | None = None
    appid: int | None = None


class QueryRefused(Exception):
    """Raised by `read_query` when MonetaPay would refuse the request; carries its code.

    The codes are the sandbox's [assumed]: MonetaPay documents only `"0"` for success.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def php_json(value: Any, *, sort_keys: bool = False) -> str:
    """PHP `json_encode` with default flags: Python's ASCII-only compact JSON, `/` as `\\/`.

    Python escapes what PHP does (quotes, backslash, control characters, every non-ASCII
    character as lowercase `\\uXXXX`, astral ones as surrogate pairs) but for `/`, which PHP
    escapes, and DEL, which PHP leaves alone. An escaped backslash is consumed first, so a
    literal `\\u007f` in a string is never mistaken for DEL.
    """
    if sort_keys and isinstance(value, Mapping):
        value = dict(sorted(value.items()))
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/")
    return _PY_ONLY_ESCAPES.sub(lambda m: "\x7f" if m.group() == "\\u007f" else m.group(), text)


def sign(token: str, fields: Mapping[str, Any], timestamp: int) -> str:
    """md5(md5(token*|*J@!@timestamp)) in lower hex; J is `fields` without sign and timestamp."""
    unsigned = {k: v for k, v in fields.items() if k not in ("sign", "timestamp")}
    text = f"{token}*|*{php_json(unsigned, sort_keys=True)}@!@{timestamp}"
    inner = hashlib.md5(text.encode("utf-8")).hexdigest()  # noqa: S324 - MonetaPay's scheme
    return hashlib.md5(inner.encode("ascii")).hexdigest()  # noqa: S324 - MonetaPay's scheme


def _cipher(keys: MonetaPayProviderKeys) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(keys.aes_key.encode()), modes.CBC(keys.aes_iv.encode()))


def encrypt(keys: MonetaPayProviderKeys, plaintext: str) -> str:
    """`en_data`: base64 of AES-128-CBC, PKCS#7 padded."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext.encode("utf-8")) + padder.finalize()
    encryptor = _cipher(keys).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def decrypt(keys: MonetaPayProviderKeys, en_data: str) -> bytes:
    """Inverse of `encrypt`; raises ValueError on damage."""
    decryptor = _cipher(keys).decryptor()
    padded = decryptor.update(base64.b64decode(en_data, validate=True)) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def signed_record(
    keys: MonetaPayProviderKeys,
    record: Mapping[str, Any],
    timestamp: int,
    *,
    token: str | None = None,
) -> dict[str, Any]:
    """`record` with `sign` and `timestamp` appended; `token` forges the signature."""
    unsigned = {k: v for k, v in record.items() if k not in ("sign", "timestamp")}
    return {
        **unsigned,
        "sign": sign(token or keys.token, unsigned, timestamp),
        "timestamp": timestamp,
    }


def callback(
    keys: MonetaPayProviderKeys,
    record: Mapping[str, Any],
    timestamp: int,
    *,
    path: str = "/callbacks/monetapay",
    hint: str | None = None,
    with_partner_key: bool = False,
    token: str | None = None,
) -> HttpRequest:
    """The callback for `record` (order_no, mch_order_no, status, comeback_number, amount,
    pay_time, …), signed at `timestamp` and encrypted. `hint` replaces the outer
    `mch_order_no`; `token` forges the signature; a record already signed is sent as it is.
    """
    if "sign" not in record or token is not None:
        record = signed_record(keys, record, timestamp, token=token)
    data: dict[str, Any] = {
        "en_data": encrypt(keys, php_json(dict(record))),
        "mch_order_no": hint if hint is not None else record.get("mch_order_no"),
    }
    if with_partner_key and keys.partner_key is not None:
        data["partner_key"] = keys.partner_key
    return HttpRequest("POST", path, dict(_JSON), _json({"data": data}))


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def read_query(keys: MonetaPayProviderKeys, body: bytes) -> dict[str, Any]:
    """The decrypted, verified query (`mch_id, appid, mch_order_no, sign, timestamp`),
    or `QueryRefused` as MonetaPay would answer."""
    try:
        data = json.loads(body)["data"]
        partner_key, en_data = data.get("partner_key"), data["en_data"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise QueryRefused("1001", "param error") from exc
    if keys.partner_key is not None and partner_key != keys.partner_key:
        raise QueryRefused("1002", "partner_key error")
    try:
        params = json.loads(decrypt(keys, en_data))
        given, timestamp = params["sign"], params["timestamp"]
        unsigned = {k: params[k] for k in ("mch_id", "appid", "mch_order_no")}
    except (ValueError, KeyError, TypeError) as exc:
        raise QueryRefused("1001", "param error") from exc
    if given != sign(keys.token, unsigned, timestamp):
        raise QueryRefused("1003", "sign error")
    ids = {"mch_id": keys.mch_id, "appid": keys.appid}
    for name, expected in ids.items():
        if expected is not None and params[name] != expected:
            raise QueryRefused("1002", f"{name} error")
    return dict(params)


def reply_found(
    keys: MonetaPayProviderKeys, records: Sequence[Mapping[str, Any]], timestamp: int
) -> bytes:
    """The `code "0"` answer listing `records`; unsigned ones are signed at `timestamp`."""
    signed = [r if "sign" in r else signed_record(keys, r, timestamp) for r in records]
    plaintext = php_json({"list": [dict(r) for r in signed]})
    return _json({"code": "0", "message": "success", "data": {"en_data": encrypt(keys, plaintext)}})


def reply_not_found(keys: MonetaPayProviderKeys) -> bytes:
    """MonetaPay's answer for an order it does not know: success with an empty list."""
    return reply_found(keys, [], 0)


def reply_error(code: str, message: str) -> bytes:
    """An error answer: any `code` but "0", named by its `message`."""
    return _json({"code": code, "message": message, "data": None})


def reply_busy() -> bytes:
    """The sandbox's "busy, try again later" answer [assumed code]."""
    return reply_error("1004", "system busy, please try again later")


RecordLookup = Callable[[str], Sequence[Mapping[str, Any]]]


def answer_query(
    keys: MonetaPayProviderKeys, request: HttpRequest, lookup: RecordLookup, now_ms: int
) -> HttpReply:
    """MonetaPay's whole answer: `lookup(mch_order_no)` gives the order's records (maybe none)."""
    if request.method != "POST" or not urlsplit(request.url).path.endswith(QUERY_PATH):
        return HttpReply(404, b"not found", {"Content-Type": "text/plain"})
    try:
        params = read_query(keys, request.body)
    except QueryRefused as refused:
        return HttpReply(200, reply_error(refused.code, refused.message), dict(_JSON))
    records = lookup(str(params["mch_order_no"]))
    return HttpReply(200, reply_found(keys, records, now_ms // 1000), dict(_JSON))
