"""Realistic provider callbacks, signed before any timed phase, as raw HTTP/1.1 request bytes.

Providers are mixed round-robin (OPay encrypted + RSA-signed, MonetaPay AES + token, OTGPAY
RSA-2048-signed, MTPay HMAC headers and confirmed by a status query to the sandbox). Statuses
are mostly successes (the most expensive path: payment, journal, two postings) with some
failures and pendings.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.money import to_minor
from providers.base import HttpRequest
from sandbox.world import CURRENCY, PROVIDERS, SandboxWorld

_AMOUNT = {"opay": "300.00", "monetapay": "150000", "otgpay": "75000.00", "mtpay": "88.50"}


def status_for(index: int) -> str:
    """85% succeeded, 10% failed, 5% pending."""
    slot = index % 20
    return "failed" if slot in (3, 11) else "pending" if slot == 17 else "succeeded"


@dataclass(frozen=True)
class Batch:
    """Callbacks for distinct orders, with the orders to register before they are sent."""

    requests: list[bytes]
    orders: list[dict[str, Any]]
    by_provider: dict[str, int]


def raw_request(request: HttpRequest, host: str) -> bytes:
    """The exact bytes a provider would send for `request` over a keep-alive connection."""
    lines = [f"{request.method} {request.url} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() != "content-length"]
    lines.append(f"Content-Length: {len(request.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body


def make_batch(world: SandboxWorld, prefix: str, count: int, host: str,
               now: datetime | None = None) -> Batch:
    """`count` signed callbacks, each for its own order `<prefix><n>`; MTPay ones are published
    to the sandbox so its query API confirms them."""
    now = now or datetime.now(UTC)
    requests: list[bytes] = []
    orders: list[dict[str, Any]] = []
    by_provider: dict[str, int] = {}
    for index in range(count):
        provider = PROVIDERS[index % len(PROVIDERS)]
        order_no = f"{prefix}{index:07d}"
        amount = _AMOUNT[provider]
        fields = world.fields(provider, order_no, status_for(index), amount, when=now)
        if provider == "mtpay":
            world.publish(provider, fields)
        requests.append(raw_request(world.callback(provider, fields), host))
        currency = CURRENCY[provider]
        orders.append({
            "provider": provider, "account": "default", "merchant_order_no": order_no,
            "kind": "payment", "status": "pending", "amount_minor": to_minor(amount, currency),
            "paid_minor": 0, "currency": currency, "needs_review": False, "review_reasons": "[]",
            "registered": True, "created_at": now, "updated_at": now, "poll_attempts": 0,
        })
        by_provider[provider] = by_provider.get(provider, 0) + 1
    return Batch(requests, orders, by_provider)


def save(requests: list[bytes], path: Path) -> Path:
    path.write_bytes(pickle.dumps(requests))
    return path
