"""`python -m bench [--quick] [--json PATH]`: payhook against the limits of its own stack.

Prints a Markdown table and writes the figures as JSON (default `bench/results/latest.json`).
PostgreSQL and Redis when PAYHOOK_DATABASE_URL / PAYHOOK_REDIS_URL are set (a private database
and queue, removed afterwards), else a SQLite file and an embedded redis-server.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple, NoReturn

from sqlalchemy import Engine

from bench import phases, seed
from bench.lab import Lab
from bench.plan import FULL, QUICK, RATES, Plan
from bench.report import markdown, med
from bench.stack import Backends
from bench.summary import ack_label, summarise
from bench.traffic import make_batch, save
from ledger.db import make_engine


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Server(NamedTuple):
    """A server to load: the lab that started it, its process name, port and request pool."""

    lab: Lab
    name: str
    port: int
    pool: Path


def _ack_level(plan: Plan, reps: int, servers: dict[str, Server]) -> dict[str, Any]:
    """Saturation and open-model latency of each of `servers`, interleaved run by run."""
    sat: dict[str, list[dict[str, Any]]] = {s: [] for s in servers}
    lat: dict[str, dict[int, list[dict[str, Any]]]] = {s: {r: [] for r in RATES} for s in servers}
    for _ in range(reps):
        for label, (lab, name, port, pool) in servers.items():
            sat[label].append(phases.saturation(lab, name, port, pool, plan.saturation_s))
    _progress("saturation: " + ", ".join(
        f"{s} {med([r['rate'] for r in sat[s]]):.0f}/s" for s in servers))
    offset = 0
    for rate in RATES:
        for _ in range(plan.latency_reps):
            for label, (lab, name, port, pool) in servers.items():
                if label == "floor" and not plan.floor_latency:
                    continue
                lat[label][rate].append(phases.latency(lab, name, port, pool, rate,
                                                       plan.latency_s, offset))
                offset += int(rate * plan.latency_s)
        _progress(f"latency @{rate}: " + ", ".join(
            f"{s} p99 {med([r['p99_ms'] for r in lat[s][rate]]):.2f} ms" for s in servers
            if lat[s][rate]))
    return {"saturation": sat, "latency": lat}


def _e2e_level(plan: Plan, reps: int, level: int, stacks: dict[str, Stack],
               with_reference: bool) -> dict[str, Any]:
    """End-to-end drains of each stack and, with `with_reference`, of the bare Celery no-op
    reference, interleaved run by run (the stacks' order alternating)."""
    feeds = {label: [phases.prepare_feed(st.lab, st.engine, f"{level}-{rep}", plan.e2e_n)
                     for rep in range(reps)] for label, st in stacks.items()}
    timeout = 120 + plan.e2e_n / 20
    runs: dict[str, list[dict[str, Any]]] = {"noop": [], **{label: [] for label in stacks}}
    try:
        for label, st in stacks.items():
            reference = with_reference and label == "payhook"
            st.lab.start_workers(["worker", "noop_worker"] if reference else ["worker"])
        for rep in range(reps):
            if with_reference:
                runs["noop"].append(phases.noop_drain(stacks["payhook"].lab, plan.e2e_n,
                                                      timeout))
            for label in (list(stacks) if rep % 2 == 0 else list(reversed(stacks))):
                st = stacks[label]
                runs[label].append(phases.end_to_end(st.lab, st.engine, st.ports["receiver"],
                                                     feeds[label][rep], timeout))
    finally:
        for st in stacks.values():
            st.lab.stop("worker")
            st.lab.stop("noop_worker")
    _progress("end-to-end: " + ", ".join(
        f"{label} {med([r['rate'] for r in rs]):.0f}/s" for label, rs in runs.items() if rs))
    return runs


@dataclass
class Stack:
    """One payhook deployment under test: its own database and queue, receiver (and echo
    server, for the main stack), signed ack-request pool, and an engine on its database."""

    lab: Lab
    engine: Engine
    pool: Path
    ports: dict[str, int]
    seeded: int = 0

    @classmethod
    def start(cls, workdir: Path, servers: tuple[str, ...]) -> Stack:
        workdir.mkdir(parents=True, exist_ok=True)
        backends = Backends(workdir).start()
        _progress(f"backends: {backends.describe()}")
        lab: Lab | None = None
        try:
            lab = Lab(workdir, backends)
            pool = save(make_batch(lab.world, "A", 4000, "127.0.0.1").requests,
                        workdir / "ack-pool.pkl")
            ports = {name: lab.start_server(name) for name in servers}
            for name in ports:  # warm the servers up (imports, pools) before anything counts
                phases.saturation(lab, name, ports[name], pool, 1.0)
        except BaseException:
            if lab is not None:
                lab.close()
            backends.stop()
            raise
        return cls(lab, make_engine(backends.database_url), pool, ports)

    def grow(self, orders: int) -> int:
        seed.grow_ledger(self.engine, self.seeded, orders)
        self.seeded = orders
        return seed.order_count(self.engine)

    def server(self, name: str) -> Server:
        return Server(self.lab, name, self.ports[name], self.pool)

    def clear_ack_phase(self, mark: int) -> None:
        """Drop what an ack-only phase stored and queued, so the ledger keeps its size."""
        time.sleep(0.5)  # let the dispatcher publish the last batch before clearing
        self.lab.backends.drain_queue(self.lab.backends.queue)
        seed.drop_callbacks_after(self.engine, mark)

    def close(self) -> None:
        self.lab.close()
        self.engine.dispose()
        self.lab.backends.stop()


def run(plan: Plan, quick: bool, workdir: Path) -> dict[str, Any]:
    main = Stack.start(workdir, ("receiver", "echo", "floor"))
    base: Stack | None = None
    levels: list[dict[str, Any]] = []
    try:
        if len(plan.levels) > 1:
            # Growth is measured side by side: a second payhook stack stays at the smallest
            # ledger and runs interleaved with the main one at every larger level, so the host
            # drifting over the run is not counted as growth.
            base = Stack.start(workdir / "base", ("receiver",))
            base.grow(plan.levels[0])
        for index, level in enumerate(plan.levels):
            orders = main.grow(level)
            _progress(f"level {index + 1}/{len(plan.levels)}: {orders:,} orders in the ledger")
            first = index == 0
            reps = plan.reps if first else plan.growth_reps
            stacks = {"payhook": main} if first or base is None else {"base": base,
                                                                        "payhook": main}
            entry: dict[str, Any] = {"orders": orders}
            if "base" in stacks:  # before its end-to-end runs register their orders
                entry["base_orders"] = seed.order_count(stacks["base"].engine)
            marks = {label: seed.callbacks_mark(st.engine) for label, st in stacks.items()}
            servers = {ref: main.server(ref) for ref in ("echo", "floor")} if first else {}
            servers.update({ack_label(label): st.server("receiver")
                            for label, st in stacks.items()})
            entry["ack"] = _ack_level(plan, reps, servers)
            for label, st in stacks.items():
                st.clear_ack_phase(marks[label])
            entry["e2e"] = _e2e_level(plan, reps, level, stacks, with_reference=first)
            levels.append(entry)
        rss: dict[str, float] = {}
        for st in [main] if base is None else [main, base]:
            for role, peak in st.lab.rss.peaks.items():
                rss[role] = max(rss.get(role, 0.0), peak)
    finally:
        main.close()
        if base is not None:
            base.close()
    return summarise(plan, quick, main.lab.backends, levels, rss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="under 3 minutes, same measures")
    parser.add_argument("--json", type=Path, default=Path("bench/results/latest.json"))
    args = parser.parse_args(argv)
    # Stopped by SIGTERM (`kill`, a CI timeout), a run unwinds as on Ctrl-C: its processes are
    # stopped and its database and queue removed, instead of left behind.
    signal.signal(signal.SIGTERM, _terminated)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="payhook-bench-") as tmp:
        doc = run(QUICK if args.quick else FULL, args.quick, Path(tmp))
    doc["duration_s"] = round(time.monotonic() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2, default=str))
    print(markdown(doc))
    print(f"\nJSON: {args.json} ({doc['duration_s']:.0f} s)")
    return 0


def _terminated(signum: int, _frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
