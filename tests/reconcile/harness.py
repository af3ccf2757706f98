"""Stand-ins for reconciliation tests: a clock, aiohttp servers on threads, an MTPay query API."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web

from providers.base import HttpRequest
from sandbox.wire import mtpay as wire

T = TypeVar("T")
ACCESS_KEY = "B6QKwx0NnKaQ14zf24Ux5Oc9Gy1xlf2R"
SECRET_KEY = "WUYx7DTQZakugtP9gOAimYUphcnc3jWuPRi1UVnWmwXSnMnsCVBzz1ILdaxisvz9"


@dataclass
class Clock:
    """The pass's notion of now; tests move it by hand."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def ms(self) -> int:
        return int(self.now.timestamp() * 1000)


class ThreadServer:
    """An aiohttp app served on 127.0.0.1 at a free port from a thread with its own loop."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(app)
        self.url = ""

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def start(self) -> str:
        self.thread.start()
        self._call(self._start())
        return self.url

    async def _start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        self._call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass
class MTPayState:
    """What the stand-in knows (order records by merchantOrderNo) and what it was asked."""

    clock: Clock
    keys: wire.MTPayProviderKeys = field(
        default_factory=lambda: wire.MTPayProviderKeys(ACCESS_KEY, SECRET_KEY)
    )
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # wall-clock time.time() of each query
    held_until: float = 0.0  # time.time() before which no query is answered
    busy: bool = False
    fail_with: str | None = None  # a statusCode every query is answered with
    unavailable: bool = False  # every query is answered HTTP 503 (the HTTP layer retries it)
    on_query: Callable[[], None] | None = None  # run as each query arrives
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, merchant_order_no: str, status: str, amount: str = "100.00") -> None:
        """Let the provider know the order, with `status` and `amount` (CNY)."""
        self.orders[merchant_order_no] = {
            "merchantOrderNo": merchant_order_no,
            "orderNo": f"MT-{merchant_order_no}",
            "status": status,
            "depositAmount": amount,
            "fiatCurrency": "CNY",
            "updatedAt": self.clock.ms(),
        }

    def count(self, merchant_order_no: str | None = None) -> int:
        with self.lock:
            return sum(1 for q in self.queries if merchant_order_no in (None, q))


MTPAY_STATE = web.AppKey("mtpay_state", MTPayState)


async def _order_query(request: web.Request) -> web.Response:
    state = request.app[MTPAY_STATE]
    with state.lock:
        state.queries.append(request.query.get("merchantOrderNo", ""))
        state.arrivals.append(time.time())
    if state.on_query is not None:
        state.on_query()
    if (held := state.held_until - time.time()) > 0:
        await asyncio.sleep(held)
    if state.unavailable:
        return web.Response(status=503)
    if state.busy or state.fail_with is not None:
        code = "SYSTEM_BUSY" if state.busy else state.fail_with or ""
        body = wire.reply_error(code, "refused by the stand-in")
        return web.Response(body=body, content_type="application/json")
    asked = HttpRequest("GET", str(request.url), dict(request.headers), b"")
    reply = wire.answer_query(state.keys, asked, state.orders.get, state.clock.ms())
    return web.Response(status=reply.status, body=reply.body, headers=dict(reply.headers))


def create_mtpay_app(state: MTPayState) -> web.Application:
    """MTPay's order-query API (CONTRACT §4), answering from `state`."""
    app = web.Application()
    app[MTPAY_STATE] = state
    app.router.add_get(wire.QUERY_PATH, _order_query)
    return app
