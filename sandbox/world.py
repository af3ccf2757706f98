"""The sandbox's providers: generated keys, the providers file for payhook, each provider's
view of its orders and signed callbacks, and the answers to their status queries (served over
HTTP by `sandbox.server`).

This is the one implementation of the fake providers; the tests and `payhook dev --sandbox`
both use it.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.base import HttpRequest
from sandbox.wire import monetapay as w_monetapay
from sandbox.wire import mtpay as w_mtpay
from sandbox.wire import opay as w_opay
from sandbox.wire import otgpay as w_otgpay

PROVIDERS = ("opay", "monetapay", "otgpay", "mtpay")
WIB = timezone(timedelta(hours=7))  # MonetaPay and OTGPAY write Jakarta local time
CURRENCY = {"opay": "NGN", "monetapay": "IDR", "otgpay": "IDR", "mtpay": "CNY"}
_OPAY = {"pending": "PENDING", "succeeded": "SUCCESS", "failed": "FAIL", "closed": "CLOSE",
         "cancelled": "CANCEL"}
_MTPAY = {"pending": "PENDING", "succeeded": "SUCCESS", "failed": "FAILED", "closed": "EXPIRED",
          "cancelled": "CANCELLED"}
_MONETA = {"pending": 0, "succeeded": 1, "failed": 2}
_OTG = {"pending": 1, "succeeded": 2, "failed": 3, "partial": 4, "overpaid": 5}


def _key_pair(root: Path, name: str, bits: int) -> rsa.RSAPrivateKey:
    """Load `root/name-private.pem`, or generate and store it (with its public half)."""
    private_path, public_path = root / f"{name}-private.pem", root / f"{name}-public.pem"
    if private_path.exists():
        key = serialization.load_pem_private_key(private_path.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    public_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


class SandboxWorld:
    """The four fake providers of one sandbox, with keys and secrets kept under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        keys = root / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        secrets_file = root / "secrets.json"
        if secrets_file.exists():
            self.secrets: dict[str, str] = json.loads(secrets_file.read_text())
        else:
            self.secrets = {
                "opay_client_auth_key": secrets.token_hex(16),
                "monetapay_token": secrets.token_hex(16),
                "monetapay_aes_key": secrets.token_hex(8),
                "monetapay_aes_iv": secrets.token_hex(8),
                "otgpay_secret": secrets.token_hex(16),
                "mtpay_access_key": secrets.token_hex(16),
                "mtpay_secret_key": secrets.token_hex(32),
            }
            secrets_file.write_text(json.dumps(self.secrets))
        opay_provider = _key_pair(keys, "opay-provider", 1024)
        opay_merchant = _key_pair(keys, "opay-merchant", 1024)
        otg_provider = _key_pair(keys, "otgpay-provider", 2048)
        otg_merchant = _key_pair(keys, "otgpay-merchant", 2048)
        s = self.secrets
        self.opay = w_opay.OPayProviderKeys(
            opay_provider, opay_merchant.public_key(), s["opay_client_auth_key"],
            head_merchant_id="256620000000001", merchant_id="256620000000002")
        self.monetapay = w_monetapay.MonetaPayProviderKeys(
            s["monetapay_token"], s["monetapay_aes_key"], s["monetapay_aes_iv"],
            partner_key="1234567890", mch_id=100000, appid=100001002)
        self.otgpay = w_otgpay.OTGPayProviderKeys(
            otg_provider, otg_merchant.public_key(), s["otgpay_secret"], app_id=1054)
        self.mtpay = w_mtpay.MTPayProviderKeys(s["mtpay_access_key"], s["mtpay_secret_key"])
        # A key that is not the provider's, to forge signatures with; size is irrelevant.
        self._forger = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
        self._lock = threading.Lock()
        self.orders: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.busy: set[str] = set()
        self.stalled: dict[str, float] = {}  # provider → seconds each query is held first
        # (provider, order asked about) → the order whose record is answered instead: a provider
        # that mixes up its orders.
        self.misfiled: dict[tuple[str, str], str] = {}
        self.queries: Counter[tuple[str, str]] = Counter()

    # -- payhook's side of the keys ---------------------------------------------------------
    def write_config(self, base_url: str, path: Path | None = None, **account: Any) -> Path:
        """A providers file whose accounts talk to this sandbox at `base_url/<provider>`."""
        s, keys = self.secrets, (self.root / "keys").resolve()  # the file may live elsewhere
        extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in account.items())
        text = f"""# Generated by the payhook sandbox: test keys, never real ones.
[providers.opay.default]
base_url = "{base_url}/opay"
client_auth_key = "{s['opay_client_auth_key']}"
head_merchant_id = "256620000000001"
merchant_id = "256620000000002"
merchant_private_key = "{keys / 'opay-merchant-private.pem'}"
provider_public_key = "{keys / 'opay-provider-public.pem'}"
{extra}
[providers.monetapay.default]
base_url = "{base_url}/monetapay"
mch_id = 100000
appid = 100001002
partner_key = "1234567890"
token = "{s['monetapay_token']}"
aes_key = "{s['monetapay_aes_key']}"
aes_iv = "{s['monetapay_aes_iv']}"
{extra}
[providers.otgpay.default]
base_url = "{base_url}/otgpay"
app_id = 1054
currency = "idr"
merchant_secret = "{s['otgpay_secret']}"
merchant_private_key = "{keys / 'otgpay-merchant-private.pem'}"
provider_public_key = "{keys / 'otgpay-provider-public.pem'}"
{extra}
[providers.mtpay.default]
base_url = "{base_url}/mtpay"
access_key = "{s['mtpay_access_key']}"
secret_key = "{s['mtpay_secret_key']}"
{extra}"""
        target = path or self.root / "payhook.toml"
        target.write_text(text)
        return target

    # -- the providers' records -------------------------------------------------------------
    def fields(
        self, provider: str, merchant_order_no: str, status: str, amount: Decimal | str,
        *, event_id: str | None = None, when: datetime | None = None, **extra: Any,
    ) -> dict[str, Any]:
        """Provider-native fields for one event; `status` is canonical (or, for OTGPAY,
        `partial`/`overpaid`), `amount` in the currency's unit."""
        when = when or datetime.now(UTC)
        ms = int(when.timestamp() * 1000)
        amount = Decimal(amount)
        ref = event_id or f"{provider[:2].upper()}{secrets.token_hex(6)}"
        if provider == "opay":
            return {"outOrderNo": merchant_order_no, "orderNo": ref, "transactionId": f"{ref}T",
                    "status": _OPAY[status], "amount": f"{amount:.2f}", "currency": "NGN",
                    "completedTime": str(ms), **extra}
        if provider == "mtpay":
            return {"merchantOrderNo": merchant_order_no, "orderNo": ref,
                    "status": _MTPAY[status], "depositAmount": f"{amount:.2f}",
                    "fiatCurrency": "CNY", "updatedAt": ms, **extra}
        local = when.astimezone(WIB).strftime("%Y-%m-%d %H:%M:%S")
        if provider == "monetapay":
            return {"order_no": ref, "mch_order_no": merchant_order_no,
                    "status": _MONETA[status], "comeback_number": "880812345678",
                    "amount": int(amount), "pay_time": local, **extra}
        return {"appId": 1054, "currency": "IDR", "orderId": merchant_order_no, "orderNo": ref,
                "amount": f"{amount:.2f}", "fee": "0.00", "status": _OTG[status],
                "payTime": local, "errorMsg": "", **extra}

    def publish(self, provider: str, fields: Mapping[str, Any]) -> None:
        """Make `fields` what the provider's query API reports for its order (MonetaPay keeps
        every record of an order: static VAs have many)."""
        order_no = str(fields.get("outOrderNo") or fields.get("merchantOrderNo")
                       or fields.get("mch_order_no") or fields.get("orderId"))
        with self._lock:
            records = self.orders.setdefault((provider, order_no), [])
            if provider == "monetapay":
                records[:] = [r for r in records if r["order_no"] != fields["order_no"]]
                records.append(dict(fields))
            else:
                records[:] = [dict(fields)]

    def forget(self, provider: str, merchant_order_no: str) -> None:
        """Make the provider's query API no longer know the order, as a provider purging old
        orders (or a restarted sandbox) does."""
        with self._lock:
            self.orders.pop((provider, merchant_order_no), None)

    def callback(
        self, provider: str, fields: Mapping[str, Any], *, forged: bool = False,
        timestamp_ms: int | None = None, form: bool = False, plain: bool = False,
        account: str | None = None,
    ) -> HttpRequest:
        """The callback request the provider would send for `fields` (or a forged one)."""
        ts = timestamp_ms if timestamp_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
        path = f"/callbacks/{provider}" + (f"/{account}" if account else "")
        if provider == "opay":
            if plain:
                return w_opay.plain_callback(fields, str(fields.get("transactionId")), path=path)
            return w_opay.encrypted_callback(self.opay, fields, ts, path=path,
                                             signing_key=self._forger if forged else None)
        if provider == "mtpay":
            return w_mtpay.callback_request(self.mtpay, fields, ts, path=path,
                                            secret_key="forged" if forged else None)
        if provider == "monetapay":
            return w_monetapay.callback(self.monetapay, fields, ts // 1000, path=path,
                                        token="forged" if forged else None)
        return w_otgpay.callback(self.otgpay, fields, form=form, path=path,
                                 signing_key=self._forger if forged else None)

    # -- the query APIs -----------------------------------------------------------------------
    def _lookup_one(self, provider: str, order_no: str) -> Mapping[str, Any] | None:
        order_no = self.misfiled.get((provider, order_no), order_no)
        with self._lock:
            records = self.orders.get((provider, order_no))
            return dict(records[-1]) if records else None

    def answer(self, provider: str, request: HttpRequest) -> tuple[int, bytes, str]:
        """Status, body and content type of the provider's answer to one query."""
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        if provider == "opay":
            reply = w_opay.answer_query(self.opay, request,
                                        lambda no, _p: self._count("opay", no), now_ms)
        elif provider == "mtpay":
            reply = w_mtpay.answer_query(self.mtpay, request,
                                         lambda no: self._count("mtpay", no), now_ms)
        elif provider == "monetapay":
            reply = w_monetapay.answer_query(
                self.monetapay, request, self._count_all, now_ms)
        else:
            reply = w_otgpay.answer_query(self.otgpay, request,
                                          lambda no, _p: self._count("otgpay", no), now_ms)
        return reply.status, reply.body, reply.headers.get("Content-Type", "application/json")

    def _count(self, provider: str, order_no: str) -> Mapping[str, Any] | None:
        self.queries[(provider, order_no)] += 1
        return self._lookup_one(provider, order_no)

    def _count_all(self, order_no: str) -> list[Mapping[str, Any]]:
        self.queries[("monetapay", order_no)] += 1
        with self._lock:
            return [dict(r) for r in self.orders.get(("monetapay", order_no), [])]

    def busy_reply(self, provider: str) -> bytes:
        """The provider's "busy, retry later" answer."""
        if provider == "opay":
            return w_opay.reply_busy()
        if provider == "mtpay":
            return w_mtpay.reply_error("SYSTEM_BUSY", "busy")
        if provider == "monetapay":
            return w_monetapay.reply_busy()
        return w_otgpay.reply_busy()
