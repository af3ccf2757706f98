"""The sandbox's HTTP side towards payhook: delivering callbacks as a provider would (with
retries), and reading the API (orders, callbacks, balances) into small typed views."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp

from providers.base import HttpRequest

FINAL_STATES = frozenset({"applied", "duplicate", "stale", "conflict", "rejected", "dead"})
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)  # a provider retries a callback it got no 2xx for


@dataclass(frozen=True)
class Delivery:
    """The receiver's answer to one callback (after the provider's retries)."""

    status: int
    callback_id: int | None
    latency_s: float
    body: bytes
    attempts: int

    @property
    def acknowledged(self) -> bool:
        return self.status == 200 and self.callback_id is not None


@dataclass(frozen=True)
class CallbackView:
    """One stored callback as GET /api/callbacks shows it."""

    id: int
    state: str
    reason: str | None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def label(self) -> str:
        """`state`, or `rejected:reason` for rejections (what expectations are written in)."""
        return f"rejected:{self.reason}" if self.state == "rejected" else self.state

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> CallbackView:
        return cls(int(raw["id"]), str(raw["state"]), raw.get("reason"))


@dataclass(frozen=True)
class OrderView:
    """One order as GET /api/orders shows it, reduced to what the check compares."""

    status: str
    paid: Decimal
    payments: int
    review_reasons: frozenset[str]
    poll_applied: int  # history entries with source poll and outcome applied

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> OrderView:
        polled = [h for h in raw.get("history", [])
                  if h.get("source") == "poll" and h.get("outcome") == "applied"]
        return cls(str(raw["status"]), Decimal(raw["paid_amount"]), len(raw.get("payments", [])),
                   frozenset(raw.get("review_reasons", [])), len(polled))


class PayhookApi:
    """A receiver's callback route and its bearer-token API, over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, payload: object = None) -> tuple[int, Any]:
        """One API exchange: status and parsed JSON body (None when empty)."""
        async with self.session.request(method, self.base_url + path, json=payload,
                                        headers=self._auth) as reply:
            raw = await reply.read()
            body = await reply.json(content_type=None) if raw else None
            return reply.status, body

    async def deliver(self, request: HttpRequest) -> Delivery:
        """Post a callback; retried like a provider does while the answer is not a 2xx."""
        started = time.perf_counter()
        status, body, callback_id, attempts = 0, b"", None, 0
        for delay in (*RETRY_DELAYS_S, None):
            attempts += 1
            started = time.perf_counter()
            try:
                async with self.session.post(self.base_url + request.url, data=request.body,
                                             headers=dict(request.headers)) as reply:
                    status, body = reply.status, await reply.read()
                    header = reply.headers.get("X-Payhook-Callback-Id")
                    callback_id = int(header) if header else None
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if 200 <= status < 300 or delay is None:
                break
            await asyncio.sleep(delay)
        return Delivery(status, callback_id, time.perf_counter() - started, body, attempts)

    async def register(self, provider: str, merchant_order_no: str, kind: str,
                       amount: Decimal, currency: str) -> int:
        """POST /api/orders; the status (201 new, 200 identical repeat)."""
        status, _ = await self.call("POST", "/api/orders", {
            "provider": provider, "merchant_order_no": merchant_order_no, "kind": kind,
            "amount": str(amount), "currency": currency})
        return status

    async def order(self, provider: str, merchant_order_no: str) -> OrderView | None:
        status, body = await self.call("GET", f"/api/orders/{provider}/{merchant_order_no}")
        return OrderView.parse(body) if status == 200 else None

    async def recent_callbacks(self, limit: int = 1000) -> list[CallbackView]:
        """The newest stored callbacks (all providers)."""
        status, body = await self.call("GET", f"/api/callbacks?limit={limit}")
        if status != 200:
            return []
        return [CallbackView.parse(c) for c in body["callbacks"]]

    async def callback(self, callback_id: int) -> CallbackView | None:
        status, body = await self.call("GET", f"/api/callbacks/{callback_id}")
        return CallbackView.parse(body) if status == 200 else None

    async def balances(self) -> dict[tuple[str, str], int]:
        """Ledger balances in minor units by (ledger account, currency)."""
        status, body = await self.call("GET", "/api/ledger/balances")
        if status != 200:
            raise RuntimeError(f"GET /api/ledger/balances answered {status}")
        return {(b["account"], b["currency"]): int(b["balance_minor"]) for b in body["balances"]}

    async def start_reconcile(self) -> None:
        """Ask for a reconciliation pass now (for receivers whose beat polls rarely)."""
        await self.call("POST", "/api/reconcile", {})
