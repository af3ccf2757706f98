"""The sandbox as `payhook dev` (and `payhook sandbox run`) drive it: the fake providers' query
servers and the traffic generator on one background event loop, the sandbox providers file,
the live view, and the bounded end-of-run settle and check."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO, TypeVar

from aiohttp import web

from payhook.embedded import free_port
from sandbox.check import Report, settle, verify
from sandbox.server import create_provider_app
from sandbox.traffic import FaultMix, Generator, Progress
from sandbox.view import LiveView
from sandbox.world import SandboxWorld

T = TypeVar("T")
STALE_AFTER_S = 4  # pending this long, an order is due for a status query
# Short beat periods so lost callbacks are resolved within seconds of a sandbox run.
SANDBOX_ENV = {
    "PAYHOOK_RECONCILE_INTERVAL_S": "3",
    "PAYHOOK_SWEEP_INTERVAL_S": "2",
    "PAYHOOK_SWEEP_AFTER_S": "10",
}


def sandbox_environment(env: dict[str, str]) -> None:
    """Short reconciliation and sweep periods, unless the environment sets its own."""
    for name, value in SANDBOX_ENV.items():
        env.setdefault(name, value)


class LoopThread:
    """An asyncio event loop on a daemon thread, fed coroutines from the main thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sandbox",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = 60) -> T:
        return self.submit(coro).result(timeout_s)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


class SandboxStack:
    """Provider servers (always), traffic and its check (after `start`), for one receiver."""

    def __init__(self, root: Path, receiver: str, *, providers_port: int | None = None,
                 out: TextIO | None = None) -> None:
        self.root = root.resolve()
        self.receiver = receiver
        self.providers_port = providers_port or free_port()
        self.providers_url = f"http://127.0.0.1:{self.providers_port}"
        self.out = out or sys.stdout
        self.world: SandboxWorld | None = None
        self.generator: Generator | None = None
        self.view = LiveView(self.out)
        self._loop = LoopThread()
        self._runner: web.AppRunner | None = None
        self._stop: asyncio.Event | None = None
        self._traffic: concurrent.futures.Future[None] | None = None

    def prepare(self, use_existing: Path | None = None, **account: Any) -> Path:
        """Start the provider servers and write the sandbox providers file (`use_existing`
        is returned instead when given); the path payhook should be configured with."""
        self.world = SandboxWorld(self.root)
        self._loop.start()
        self._loop.call(self._serve(self.world))
        settings = {"stale_after_s": STALE_AFTER_S, **account}
        written = self.world.write_config(self.providers_url, self.root / "payhook.toml",
                                          **settings)
        return use_existing or written

    async def _serve(self, world: SandboxWorld) -> None:
        self._runner = web.AppRunner(create_provider_app(world), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.providers_port).start()

    def start(self, env: dict[str, str], rate: float = 20.0, mix: FaultMix | None = None,
              seed: int | None = None) -> None:
        """Begin the traffic (the receiver must be up); `env` holds PAYHOOK_API_TOKEN."""
        assert self.world is not None, "prepare() first"
        self.generator = Generator(self.world, self.receiver, env["PAYHOOK_API_TOKEN"],
                                   rate=rate, mix=mix, seed=seed)
        self._loop.call(self.generator.open())
        self._stop = self._loop.call(_event())
        self._traffic = self._loop.submit(self.generator.run(self._stop))

    def progress(self) -> Progress | None:
        if self.generator is None:
            return None
        return self._loop.call(_value(self.generator.progress), timeout_s=5)

    def tick(self) -> None:
        """Redraw the live view (called every half second by `payhook dev`); a busy loop only
        skips a frame."""
        try:
            progress = self.progress()
        except concurrent.futures.TimeoutError:
            return
        if progress is not None:
            self.view.update(progress)

    def finish(self, env: dict[str, str] | None = None, abort: Callable[[], bool] = bool,
               settle_timeout_s: float = 60, kick: bool = False) -> Report | None:
        """Stop the traffic, wait (bounded) for callbacks and polls to settle, check every
        order against the API; None when no traffic ran. The providers keep serving."""
        gen, stop = self.generator, self._stop
        if gen is None or stop is None:
            return None
        self._loop.loop.call_soon_threadsafe(stop.set)
        self.view.note(f"sandbox: traffic stopped; waiting up to {settle_timeout_s:.0f} s for "
                       "callbacks and polls to settle (Ctrl-C again to skip)")
        pending = self._loop.submit(settle(gen, settle_timeout_s, lambda: bool(abort()), kick))
        while not pending.done():
            self.tick()
            time.sleep(0.5)
        self.tick()
        report = self._loop.call(verify(gen, pending.result()), timeout_s=120)
        self._loop.call(gen.close())
        self._save(gen, report)
        return report

    def _save(self, gen: Generator, report: Report) -> None:
        """The run's expectations and counts, for a test or a curious operator."""
        record = {"last_line": report.last_line(), "problems": report.problems,
                  "orders": [e.to_json() for e in gen.orders]}
        (self.root / "last-run.json").write_text(json.dumps(record, indent=1))

    def close(self) -> None:
        """Stop the provider servers and the background loop."""
        if self._runner is not None and self._loop.loop.is_running():
            self._loop.call(self._runner.cleanup(), timeout_s=10)
        self._loop.stop()


async def _event() -> asyncio.Event:
    return asyncio.Event()


async def _value(fn: Callable[[], T]) -> T:
    """Run `fn` on the loop's thread (so it reads the generator's state consistently)."""
    return fn()
