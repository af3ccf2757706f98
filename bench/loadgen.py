"""The load generator: raw HTTP/1.1 over persistent keep-alive connections, one request in flight
per connection (no pipelining), from pre-built request bytes.

Two models. `open`: requests are scheduled at a constant arrival rate whatever the server does,
and each latency runs from the request's *scheduled* start, so time spent waiting for a free
connection or behind a stalled server is counted, never hidden (no coordinated omission).
`closed`: every connection sends its next request as soon as the previous answer is in; the
completions per second at that point are the server's saturation throughput.

Runs as its own process (`python -m bench.loadgen SPEC.json OUT.json`) so it can be pinned to
a core of its own; it reports its own CPU use, so a saturated generator is visible.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HEAD_END = b"\r\n\r\n"


class Connection(asyncio.Protocol):
    """One keep-alive connection; `request()` sends bytes and waits for one whole response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        end = buf.find(_HEAD_END)
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(buf) < total:
            return
        status = int(head[9:12])
        del buf[:total]
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(status)

    async def request(self, payload: bytes) -> int:
        if self._closed or self.transport is None:
            raise ConnectionError("connection closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self._waiter


@dataclass
class Spec:
    """What to send, where, how."""

    host: str
    port: int
    requests: str  # a pickle of list[bytes]: complete HTTP/1.1 requests
    mode: str  # "open" | "closed" | "once"
    connections: int
    duration_s: float = 0.0
    rate: float = 0.0  # open model only
    warmup_s: float = 1.0  # closed model: completions in the first warmup_s are not counted
    offset: int = 0  # where in the request list this generator starts
    trace: str = ""  # open model: a file for (scheduled s, latency ms, send lag ms) per request


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


STALL_S = 0.010  # a request slower than this is part of a stall
_EPISODE_GAP_S = 0.050


def _episodes(offsets: list[float]) -> int:
    """How many separate stalls: slow requests scheduled within 50 ms of each other are one."""
    count, last = 0, float("-inf")
    for at in offsets:
        if at - last > _EPISODE_GAP_S:
            count += 1
        last = at
    return count


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


async def _connect(spec: Spec) -> list[Connection]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(spec.connections):
        _, proto = await loop.create_connection(Connection, spec.host, spec.port)
        conns.append(proto)
    return conns


async def run_open(spec: Spec, payloads: list[bytes]) -> dict[str, Any]:
    """Constant arrival rate; latency from each request's scheduled start."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for conn in await _connect(spec):
        idle.put_nowait(conn)
    latencies: list[float] = []
    send_lag: list[float] = []
    trace: list[tuple[float, float, float]] = []
    slow: list[float] = []  # scheduled offsets of the requests slower than STALL_S
    statuses: dict[int, int] = {}
    errors = 0
    total = int(spec.rate * spec.duration_s)
    pending: set[asyncio.Task[None]] = set()

    async def one(index: int, scheduled: float) -> None:
        nonlocal errors
        conn = await idle.get()
        lag = time.perf_counter() - scheduled
        send_lag.append(lag)
        try:
            status = await conn.request(payloads[(spec.offset + index) % len(payloads)])
        except ConnectionError:
            errors += 1
            return
        latency = time.perf_counter() - scheduled
        latencies.append(latency)
        if latency > STALL_S:
            slow.append(scheduled - start)
        if spec.trace:
            trace.append((scheduled - start, latency * 1e3, lag * 1e3))
        statuses[status] = statuses.get(status, 0) + 1
        idle.put_nowait(conn)

    cpu0, start = _cpu_s(), time.perf_counter() + 0.05
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * spec.rate) + 1)
        while sent < due:
            task = asyncio.ensure_future(one(sent, start + sent / spec.rate))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        # No spinning: it would take the core PostgreSQL also needs. A late timer wake-up
        # (a shared VM's noise) is counted against the server; `send_lag_p99_ms` reports it.
        await asyncio.sleep(max(0.0, start + sent / spec.rate - time.perf_counter()))
    if pending:
        await asyncio.wait(pending, timeout=30)
    elapsed = time.perf_counter() - start
    start_wall = time.time() - (time.perf_counter() - start)
    latencies.sort()
    send_lag.sort()
    return {
        "mode": "open", "rate": spec.rate, "scheduled": total, "completed": len(latencies),
        "errors": errors + len(pending), "statuses": statuses, "elapsed_s": elapsed,
        "achieved_rate": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": _percentile(latencies, 0.50) * 1e3, "p99_ms": _percentile(latencies, 0.99) * 1e3,
        "p999_ms": _percentile(latencies, 0.999) * 1e3,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1e3,
        "send_lag_p99_ms": _percentile(send_lag, 0.99) * 1e3,
        "stalls": _episodes(sorted(slow)), "slow_requests": len(slow),
        "trace": {"start_wall": start_wall, "requests": sorted(trace)} if spec.trace else None,
        "cpu_s": _cpu_s() - cpu0,
    }


async def run_closed(spec: Spec, payloads: list[bytes]) -> dict[str, Any]:
    """Every connection busy all the time: completions per second after the warm-up."""
    conns = await _connect(spec)
    statuses: dict[int, int] = {}
    counted = 0
    errors = 0
    start = time.perf_counter()
    measure_from = start + spec.warmup_s
    stop_at = measure_from + spec.duration_s
    cpu_marks: list[float] = []

    async def drive(conn: Connection, index: int) -> None:
        nonlocal counted, errors
        step = len(conns)
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            try:
                status = await conn.request(payloads[(spec.offset + index) % len(payloads)])
            except ConnectionError:
                errors += 1
                return
            index += step
            done = time.perf_counter()
            if measure_from <= done < stop_at:
                counted += 1
                statuses[status] = statuses.get(status, 0) + 1

    async def mark_cpu() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu_marks.append(_cpu_s())

    marker = asyncio.ensure_future(mark_cpu())
    await asyncio.gather(*(drive(c, i) for i, c in enumerate(conns)))
    await marker
    return {
        "mode": "closed", "connections": spec.connections, "completed": counted,
        "errors": errors, "statuses": statuses, "elapsed_s": spec.duration_s,
        "rate": counted / spec.duration_s, "cpu_s": _cpu_s() - cpu_marks[0],
        "cpu_share": (_cpu_s() - cpu_marks[0]) / spec.duration_s,
    }


async def run_once(spec: Spec, payloads: list[bytes]) -> dict[str, Any]:
    """Every request exactly once, as fast as the connections allow (the end-to-end feed)."""
    conns = await _connect(spec)
    statuses: dict[int, int] = {}
    errors = 0
    cursor = iter(range(len(payloads)))
    first_wall = time.time()
    start = time.perf_counter()

    async def drive(conn: Connection) -> None:
        nonlocal errors
        for index in cursor:
            try:
                status = await conn.request(payloads[index])
            except ConnectionError:
                errors += 1
                return
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(drive(c) for c in conns))
    elapsed = time.perf_counter() - start
    return {"mode": "once", "completed": sum(statuses.values()), "errors": errors,
            "statuses": statuses, "first_wall": first_wall, "elapsed_s": elapsed,
            "rate": sum(statuses.values()) / elapsed if elapsed else 0.0}


_RUNNERS = {"open": run_open, "closed": run_closed, "once": run_once}


def main(argv: list[str]) -> int:
    spec = Spec(**json.loads(Path(argv[0]).read_text()))
    payloads: list[bytes] = pickle.loads(Path(spec.requests).read_bytes())  # noqa: S301 - ours
    runner = _RUNNERS[spec.mode]
    result = asyncio.run(runner(spec, payloads))
    trace = result.pop("trace", None)
    if trace is not None:
        Path(spec.trace).write_text(json.dumps(trace))
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
