"""The traffic generator: registers orders (POST /api/orders) and delivers their signed,
encrypted callbacks at a chosen rate, with faults mixed in at configurable ratios, keeping per
order where payhook must leave it (`scenarios.Expected`)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from decimal import Decimal

import aiohttp

from providers.base import HttpRequest
from sandbox.client import Delivery, PayhookApi
from sandbox.scenarios import SCENARIOS, Expected, OrderRun
from sandbox.tracker import CallbackTracker
from sandbox.world import CURRENCY, SandboxWorld


@dataclass(frozen=True)
class FaultMix:
    """Share of generated orders per fault scenario; the rest are clean."""

    duplicate: float = 0.10
    out_of_order: float = 0.07
    late_success: float = 0.06
    forged: float = 0.06
    replayed: float = 0.05
    amount: float = 0.06
    static_va: float = 0.04
    lost: float = 0.05

    @classmethod
    def parse(cls, text: str) -> FaultMix:
        """`duplicate=0.2,lost=0` over the defaults."""
        known = {f.name for f in fields(cls)}
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name not in known:
                raise ValueError(f"unknown fault {name!r} (known: {', '.join(sorted(known))})")
            values[name] = float(value)
        mix = cls(**values)
        if sum(mix.shares().values()) > 1:
            raise ValueError("fault ratios add up to more than 1")
        return mix

    def shares(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}

    def pick(self, rng: random.Random) -> str:
        roll = rng.random()
        for name, share in self.shares().items():
            if roll < share:
                return name
            roll -= share
        return "clean"


@dataclass
class Progress:
    """A snapshot for the live view."""

    elapsed_s: float
    traffic_s: float  # how long traffic was generated (the rate's denominator)
    orders: int
    sent: int
    acknowledged: int
    states: Counter[str]
    reasons: Counter[str]
    lost_total: int
    lost_resolved: int
    ack_p50_ms: float
    ack_p99_ms: float


@dataclass
class AckStats:
    """Acknowledgement latencies as the provider side sees them."""

    latencies: list[float] = field(default_factory=list)
    acknowledged: int = 0
    refused: Counter[int] = field(default_factory=Counter)

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def amount_for(provider: str, rng: random.Random) -> Decimal:
    """A plausible order amount in the provider's currency (IDR in whole rupiah)."""
    if CURRENCY[provider] == "IDR":
        return Decimal(rng.randrange(10_000, 2_000_000, 500))
    return Decimal(rng.randrange(1_000, 500_000)) / 100


class Generator:
    """Scenarios launched at `rate` callbacks per second against one receiver."""

    def __init__(self, world: SandboxWorld, receiver_url: str, api_token: str, *,
                 rate: float = 20.0, mix: FaultMix | None = None, seed: int | None = None,
                 providers: tuple[str, ...] = ("opay", "monetapay", "otgpay", "mtpay")) -> None:
        self.world, self.receiver_url, self._token = world, receiver_url, api_token
        self.rate, self.mix, self.providers = rate, mix or FaultMix(), providers
        self.rng = random.Random(seed)
        self.prefix = f"SB{secrets.token_hex(2)}-"
        self.orders: list[Expected] = []
        self.acks = AckStats()
        self.started = time.monotonic()
        self.stopped: float | None = None
        self.balances_before: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._api: PayhookApi | None = None
        self._tracker: CallbackTracker | None = None
        self._tracker_stop = asyncio.Event()
        self._tracker_task: asyncio.Task[None] | None = None

    @property
    def api(self) -> PayhookApi:
        assert self._api is not None, "Generator.open() first"
        return self._api

    @property
    def tracker(self) -> CallbackTracker:
        assert self._tracker is not None, "Generator.open() first"
        return self._tracker

    async def open(self) -> None:
        """Connect, note the ledger balances before any traffic, start following callbacks."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30),
            connector=aiohttp.TCPConnector(limit=64))
        self._api = PayhookApi(self._session, self.receiver_url, self._token)
        self._tracker = CallbackTracker(self._api)
        self.balances_before = await self._api.balances()
        self.started = time.monotonic()
        self._tracker_task = asyncio.create_task(self._tracker.run(self._tracker_stop))

    async def close(self) -> None:
        self._tracker_stop.set()
        if self._tracker_task is not None:
            await self._tracker_task
        if self._session is not None:
            await self._session.close()

    async def run(self, stop: asyncio.Event, limit: int | None = None) -> None:
        """Launch scenarios until `stop` is set (or `limit` orders), paced to the rate."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set() and (limit is None or len(self.orders) < limit):
            name = self.mix.pick(self.rng)
            scenario = SCENARIOS[name]
            candidates = [p for p in scenario.providers if p in self.providers]
            if not candidates:
                continue
            self._launch(name, self.rng.choice(candidates))
            # A schedule, not a sleep per launch, so the rate holds whatever a launch costs.
            next_at = max(next_at + max(scenario.callbacks, 0.3) / self.rate, loop.time() - 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(next_at - loop.time(), 0))
        self.stopped = time.monotonic()

    def _launch(self, name: str, provider: str) -> None:
        static = name == "static_va"
        expected = Expected(
            name, provider, f"{self.prefix}{len(self.orders) + 1:05d}",
            "static_va" if static else "payment",
            Decimal(0) if static else amount_for(provider, self.rng), CURRENCY[provider])
        self.orders.append(expected)
        task = asyncio.create_task(self._play(OrderRun(self, expected, self.rng)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _play(self, run: OrderRun) -> None:
        e = run.e
        try:
            status = await self.api.register(e.provider, e.merchant_order_no, e.kind, e.amount,
                                             e.currency)
            if status not in (200, 201):
                e.error = f"POST /api/orders answered {status}"
            await SCENARIOS[e.scenario].run(run)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            e.error = f"{type(exc).__name__}: {exc}"[:200]
        e.finished = True

    async def drain(self, timeout_s: float) -> bool:
        """Wait for the scenarios still playing; True when all finished."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        return not pending

    async def deliver(self, request: HttpRequest) -> Delivery:
        """Post one callback and account for its acknowledgement."""
        delivery = await self.api.deliver(request)
        if delivery.acknowledged:
            assert delivery.callback_id is not None
            self.acks.acknowledged += 1
            self.acks.latencies.append(delivery.latency_s)
            self.tracker.add(delivery.callback_id)
        else:
            self.acks.refused[delivery.status] += 1
        return delivery

    def progress(self) -> Progress:
        states, reasons = self.tracker.counts() if self._tracker else (Counter(), Counter())
        sent = sum(len(e.sent) for e in self.orders)
        watched = self._tracker.watched if self._tracker else {}
        now = time.monotonic()
        return Progress(
            now - self.started, (self.stopped or now) - self.started, len(self.orders), sent,
            self.acks.acknowledged, states, reasons, len(watched), sum(watched.values()),
            self.acks.percentile_ms(0.5), self.acks.percentile_ms(0.99))
