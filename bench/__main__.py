"""`python -m bench [--quick] [--json PATH]`: payhook against the limits of its own stack.

Prints a Markdown table and writes the figures as JSON (default `bench/results/latest.json`).
PostgreSQL and Redis when PAYHOOK_DATABASE_URL / PAYHOOK_REDIS_URL are set (a private database
and queue, removed afterwards), else a SQLite file and an embedded redis-server.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import phases, seed
from bench.lab import Lab
from bench.report import machine, markdown, med, verdicts
from bench.stack import Backends
from bench.traffic import make_batch, save
from ledger.db import make_engine

RATES = (500, 1000)


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or `--quick` (the same things, smaller and fewer)."""

    levels: tuple[int, ...]
    reps: int
    growth_reps: int
    latency_reps: int  # at every level: a tail is decided by a few disk stalls, so more runs
    saturation_s: float
    latency_s: float
    e2e_n: int


FULL = Plan(levels=(10_000, 100_000, 1_000_000), reps=3, growth_reps=2, latency_reps=5,
            saturation_s=5, latency_s=10, e2e_n=20_000)
QUICK = Plan(levels=(1_000, 10_000, 50_000), reps=2, growth_reps=2, latency_reps=3,
             saturation_s=2, latency_s=3, e2e_n=1_500)


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _ack_level(lab: Lab, plan: Plan, reps: int, ports: dict[str, int], pool: Path,
               with_reference: bool) -> dict[str, Any]:
    """Saturation and open-model latency, payhook and (interleaved) the echo reference."""
    servers = ["echo", "receiver"] if with_reference else ["receiver"]
    sat: dict[str, list[dict[str, Any]]] = {s: [] for s in servers}
    lat: dict[str, dict[int, list[dict[str, Any]]]] = {s: {r: [] for r in RATES} for s in servers}
    for _ in range(reps):
        for server in servers:
            sat[server].append(phases.saturation(lab, server, ports[server], pool,
                                                 plan.saturation_s))
    _progress("saturation: " + ", ".join(
        f"{s} {med([r['rate'] for r in sat[s]]):.0f}/s" for s in servers))
    offset = 0
    for rate in RATES:
        for _ in range(plan.latency_reps):
            for server in servers:
                lat[server][rate].append(phases.latency(lab, server, ports[server], pool, rate,
                                                        plan.latency_s, offset))
                offset += int(rate * plan.latency_s)
        _progress(f"latency @{rate}: " + ", ".join(
            f"{s} p99 {med([r['p99_ms'] for r in lat[s][rate]]):.2f} ms" for s in servers))
    return {"saturation": sat, "latency": lat}


def _e2e_level(lab: Lab, engine: Any, plan: Plan, reps: int, port: int, level: int,
               with_reference: bool) -> dict[str, Any]:
    """End-to-end drains of payhook and (interleaved) the bare Celery no-op reference."""
    feeds = [phases.prepare_feed(lab, engine, f"{level}-{rep}", plan.e2e_n) for rep in range(reps)]
    lab.start_workers(["worker", "noop_worker"] if with_reference else ["worker"])
    timeout = 120 + plan.e2e_n / 20
    runs: dict[str, list[dict[str, Any]]] = {"payhook": [], "noop": []}
    try:
        for feed in feeds:
            if with_reference:
                runs["noop"].append(phases.noop_drain(lab, plan.e2e_n, timeout))
            runs["payhook"].append(phases.end_to_end(lab, engine, port, feed, timeout))
    finally:
        lab.stop("worker")
        lab.stop("noop_worker")
    _progress(f"end-to-end: payhook {med([r['rate'] for r in runs['payhook']]):.0f}/s" + (
        f", no-op {med([r['rate'] for r in runs['noop']]):.0f}/s" if with_reference else ""))
    return runs


def run(plan: Plan, quick: bool, workdir: Path) -> dict[str, Any]:
    backends = Backends(workdir).start()
    _progress(f"backends: {backends.describe()}")
    lab = Lab(workdir, backends)
    engine = make_engine(backends.database_url)
    levels: list[dict[str, Any]] = []
    try:
        pool = save(make_batch(lab.world, "A", 4000, "127.0.0.1").requests,
                    workdir / "ack-pool.pkl")
        ports = {"receiver": lab.start_server("receiver"), "echo": lab.start_server("echo")}
        for server in ports:  # warm both servers up (imports, pools) before anything counts
            phases.saturation(lab, server, ports[server], pool, 1.0)
        seeded = 0
        for index, level in enumerate(plan.levels):
            seed.grow_ledger(engine, seeded, level)
            seeded = level
            orders = seed.order_count(engine)
            _progress(f"level {index + 1}/{len(plan.levels)}: {orders:,} orders in the ledger")
            first = index == 0
            reps = plan.reps if first else plan.growth_reps
            mark = seed.callbacks_mark(engine)
            ack = _ack_level(lab, plan, reps, ports, pool, with_reference=first)
            time.sleep(0.5)  # let the dispatcher publish the last batch before clearing
            backends.drain_queue(backends.queue)
            seed.drop_callbacks_after(engine, mark)
            e2e = _e2e_level(lab, engine, plan, reps, ports["receiver"], level, first)
            levels.append({"orders": orders, "ack": ack, "e2e": e2e})
        rss = dict(lab.rss.peaks)
    finally:
        lab.close()
        engine.dispose()
        backends.stop()
    return _summarise(plan, quick, backends, levels, rss)


def _summarise(plan: Plan, quick: bool, backends: Backends, levels: list[dict[str, Any]],
               rss: dict[str, float]) -> dict[str, Any]:
    def level_figures(level: dict[str, Any]) -> dict[str, Any]:
        sat, lat = level["ack"]["saturation"]["receiver"], level["ack"]["latency"]["receiver"]
        return {
            "orders": level["orders"], "ack_rate": med([r["rate"] for r in sat]),
            **{f"{q}_ms_{rate}": med([r[f"{q}_ms"] for r in lat[rate]])
               for rate in RATES for q in ("p50", "p99", "p999")},
            "e2e_rate": med([r["rate"] for r in level["e2e"]["payhook"]]),
            # Over all of the level's latency runs: the generator's stalls (requests > 10 ms,
            # 50 ms apart counted once) and the inbox commits that took > 10 ms meanwhile.
            **{key: sum(r[key] for rate in RATES for r in lat[rate])
               for key in ("stalls", "slow_commits", "commits")},
            "latency_runs": sum(len(lat[rate]) for rate in RATES),
        }

    figures = [level_figures(level) for level in levels]
    first, last = levels[0], figures[-1]
    base = figures[0]
    echo_sat = first["ack"]["saturation"]["echo"]
    echo_lat = first["ack"]["latency"]["echo"]
    noop = first["e2e"]["noop"]
    growth = {
        "ack_p99_ms_500": last["p99_ms_500"] / base["p99_ms_500"],
        "ack_p99_ms_1000": last["p99_ms_1000"] / base["p99_ms_1000"],
        "e2e_rate": base["e2e_rate"] / last["e2e_rate"],
        "ack_rate (info)": base["ack_rate"] / last["ack_rate"],
    }
    raw = {
        "ack_rate": base["ack_rate"],
        "echo_rate": med([r["rate"] for r in echo_sat]),
        "receiver_cpu_share": med([r["server_cpu_share"]
                                   for r in first["ack"]["saturation"]["receiver"]]),
        "echo_cpu_share": med([r["server_cpu_share"] for r in echo_sat]),
        "generator_cpu_share": med([r["generator_cpu_share"]
                                    for r in first["ack"]["saturation"]["receiver"]]),
        "echo_generator_cpu_share": med([r["generator_cpu_share"] for r in echo_sat]),
        "latency": {str(rate): {f"{q}_ms": base[f"{q}_ms_{rate}"] for q in ("p50", "p99", "p999")}
                    for rate in RATES},
        "echo_latency": {str(rate): {k: med([r[k] for r in echo_lat[rate]])
                                     for k in ("p50_ms", "p99_ms", "p999_ms")} for rate in RATES},
        "echo_stalls": sum(r["stalls"] for rate in RATES for r in echo_lat[rate]),
        "e2e_n": plan.e2e_n, "e2e_rate": base["e2e_rate"],
        "noop_rate": med([r["rate"] for r in noop]),
        "growth": growth, "levels": figures, "rss": rss, "runs": levels,
    }
    doc: dict[str, Any] = {
        "ack_ratio": raw["ack_rate"] / raw["echo_rate"],
        "ack_p99_ms_500": base["p99_ms_500"], "ack_p999_ms_500": base["p999_ms_500"],
        "ack_p99_ms_1000": base["p99_ms_1000"], "ack_p999_ms_1000": base["p999_ms_1000"],
        "e2e_ratio": raw["e2e_rate"] / raw["noop_rate"],
        "growth_ratio": max(v for k, v in growth.items() if "info" not in k),
        "growth_levels": [f["orders"] for f in figures],
        "rss_receiver_mb": rss.get("receiver", 0.0), "rss_worker_mb": rss.get("worker", 0.0),
        "database": backends.database, "database_version": backends.server_version(),
        "database_source": backends.database_source, "redis": backends.redis_source,
        "quick": quick, "reps": plan.reps, "growth_reps": plan.growth_reps,
        "latency_reps": plan.latency_reps,
        "plan": asdict(plan), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "raw": raw,
    }
    doc["targets"] = verdicts(doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="under 3 minutes, same measures")
    parser.add_argument("--json", type=Path, default=Path("bench/results/latest.json"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="payhook-bench-") as tmp:
        doc = run(QUICK if args.quick else FULL, args.quick, Path(tmp))
    doc["duration_s"] = round(time.monotonic() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2, default=str))
    print(markdown(doc))
    print(f"\nJSON: {args.json} ({doc['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
