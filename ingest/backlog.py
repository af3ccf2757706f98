"""Pending work that tasks on one event loop wait for: inbox requests, dispatcher ids."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Backlog(Generic[T]):
    """Items added on the loop's thread and taken by consumer tasks on the same loop. Once
    `close`d, consumers still take what is left, then `ready` tells them to end."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self.closed = False
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()

    def extend(self, items: Iterable[T]) -> None:
        self.items.extend(items)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()
        self._closing.set()

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds`, or until the backlog is closed if that comes first: a consumer's
        wait before a retry must not hold up the shutdown that `close` starts."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def ready(self) -> bool:
        """Wait until there are items (True), or the backlog is closed and empty (False)."""
        while not self.items:
            if self.closed:
                return False
            self._wake.clear()
            await self._wake.wait()
        return True

    def take(self, limit: int) -> list[T]:
        """Up to `limit` of the oldest items, removed from the backlog."""
        taken = self.items[:limit]
        del self.items[:limit]
        return taken
