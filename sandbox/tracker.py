"""Following what payhook did with the traffic: the state of every callback the generator sent
(one listing request per refresh, whatever the rate) and whether lost-callback orders have
been resolved by polling yet."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import aiohttp

from sandbox.client import CallbackView, PayhookApi

REFRESH_S = 0.5
ORDER_REFRESH_S = 2.0
FETCH_ONE_LIMIT = 50  # per refresh: ids that fell out of the newest-1000 listing


class CallbackTracker:
    """States of the callbacks we sent; waiters released when their callbacks are final."""

    def __init__(self, api: PayhookApi) -> None:
        self.api = api
        self.states: dict[int, CallbackView] = {}
        self.sent: set[int] = set()
        self.watched: dict[tuple[str, str], bool] = {}  # lost-callback order → resolved by poll
        self._changed = asyncio.Event()
        self._last_orders = 0.0

    def add(self, callback_id: int) -> None:
        self.sent.add(callback_id)

    def watch(self, provider: str, merchant_order_no: str) -> None:
        """Follow an order only a reconciliation pass can resolve."""
        self.watched[(provider, merchant_order_no)] = False

    def final(self, callback_id: int) -> bool:
        view = self.states.get(callback_id)
        return view is not None and view.final

    def unfinished(self) -> list[int]:
        return sorted(i for i in self.sent if not self.final(i))

    @property
    def resolved_by_poll(self) -> int:
        return sum(self.watched.values())

    def counts(self) -> tuple[Counter[str], Counter[str]]:
        """Callbacks we sent by final state, and rejections by reason."""
        states: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for callback_id in self.sent:
            view = self.states.get(callback_id)
            if view is None or not view.final:
                states["in_flight"] += 1
                continue
            states[view.state] += 1
            if view.state in ("rejected", "dead"):
                reasons[view.reason or "?"] += 1
        return states, reasons

    async def wait_final(self, ids: list[int], timeout_s: float) -> bool:
        """Block until every id is final (True) or the timeout passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not all(self.final(i) for i in ids):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, REFRESH_S * 4))
        return True

    async def refresh(self) -> None:
        """One look at the newest callbacks, plus single lookups for older unfinished ones."""
        listing = await self.api.recent_callbacks()
        for view in listing:
            if view.id in self.sent:
                self.states[view.id] = view
        oldest = min((v.id for v in listing), default=0)
        stragglers = [i for i in self.unfinished() if i < oldest][:FETCH_ONE_LIMIT]
        for found in await asyncio.gather(*(self.api.callback(i) for i in stragglers)):
            if found is not None:
                self.states[found.id] = found
        self._changed.set()

    async def refresh_all(self) -> None:
        """Look up every unfinished callback individually (for the final count)."""
        pending = self.unfinished()
        for start in range(0, len(pending), 32):
            batch = pending[start:start + 32]
            for view in await asyncio.gather(*(self.api.callback(i) for i in batch)):
                if view is not None:
                    self.states[view.id] = view
        self._changed.set()

    async def refresh_watched(self) -> None:
        """Check the lost-callback orders not yet resolved by polling."""
        waiting = [key for key, done in self.watched.items() if not done]
        views = await asyncio.gather(*(self.api.order(p, no) for p, no in waiting))
        for key, view in zip(waiting, views, strict=True):
            if view is not None and view.poll_applied > 0:
                self.watched[key] = True

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh until `stop` is set; API hiccups are retried on the next round."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                await self.refresh()
                if loop.time() - self._last_orders >= ORDER_REFRESH_S:
                    self._last_orders = loop.time()
                    await self.refresh_watched()
            except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError, ValueError, KeyError):
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_S)
