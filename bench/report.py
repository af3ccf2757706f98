"""The figures against the issue's targets: a Markdown table for people, a JSON file for tools."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from statistics import median
from typing import Any


@dataclass(frozen=True)
class Target:
    """One target of the issue: the JSON key it reads, the bound and its direction."""

    key: str
    label: str
    bound: float
    at_least: bool  # True: figure ≥ bound; False: figure ≤ bound

    def met(self, figure: float) -> bool:
        return figure >= self.bound if self.at_least else figure <= self.bound

    def text(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {self.bound:g}"


TARGETS = (
    Target("ack_ratio", "saturation acks/s ÷ bare aiohttp", 0.8, True),
    Target("ack_p99_ms_500", "ack p99 at 500 req/s (ms)", 5, False),
    Target("ack_p999_ms_500", "ack p99.9 at 500 req/s (ms)", 15, False),
    Target("ack_p99_ms_1000", "ack p99 at 1000 req/s (ms)", 10, False),
    Target("e2e_ratio", "end-to-end callbacks/s ÷ bare Celery no-op drain", 1.0, True),
    Target("growth_ratio", "worst largest÷smallest ledger cost ratio", 1.2, False),
    Target("rss_receiver_mb", "peak RSS receiver (MB)", 150, False),
    Target("rss_worker_mb", "peak RSS per worker process (MB)", 200, False),
)


def med(values: list[float]) -> float:
    return float(median(values)) if values else float("nan")


def machine() -> dict[str, Any]:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    with open("/proc/meminfo") as fh:
        mem_kb = int(fh.readline().split()[1])
    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 1024**2, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def verdicts(figures: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for target in TARGETS:
        value = float(figures[target.key])
        rows.append({"key": target.key, "target": target.text(), "value": value,
                     "met": target.met(value)})
    return rows


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"  # NaN: not measured


def markdown(doc: dict[str, Any]) -> str:
    """The tables the README shows."""
    f, raw, m = doc, doc["raw"], doc["machine"]
    lines = [
        f"payhook bench — {doc['date']} — {'quick' if doc['quick'] else 'full'} — "
        f"{doc['database']} — {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, "
        f"Python {m['python']}",
        "",
        "| measure | payhook | reference | ratio | target | met |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    met = {v["key"]: ("yes" if v["met"] else "**no**") for v in doc["targets"]}
    tgt = {t.key: t.text() for t in TARGETS}
    lines.append(f"| saturation acks/s (bare aiohttp echo) | {_fmt(raw['ack_rate'], 0)} | "
                 f"{_fmt(raw['echo_rate'], 0)} | {_fmt(f['ack_ratio'])} | {tgt['ack_ratio']} | "
                 f"{met['ack_ratio']} |")
    lines.append(f"| saturation acks/s (smallest durable receiver) | {_fmt(raw['ack_rate'], 0)} | "
                 f"{_fmt(raw['floor_rate'], 0)} | {_fmt(f['ack_ratio_to_floor'])} | | |")
    for rate in (500, 1000):
        lat, echo = raw["latency"][str(rate)], raw["echo_latency"][str(rate)]
        for q, key in (("p50", "p50_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms")):
            jkey = {"p99": f"ack_p99_ms_{rate}", "p99.9": f"ack_p999_ms_{rate}"}.get(q)
            mark = met.get(jkey or "", "") if jkey else ""
            target = tgt.get(jkey or "", "") if jkey else ""
            lines.append(f"| ack {q} ms at {rate} req/s (echo) | {_fmt(lat[key])} | "
                         f"{_fmt(echo[key])} | {_fmt(lat[key] / echo[key])} | {target} | {mark} |")
        floor = raw["floor_latency"][str(rate)]["p99_ms"]
        lines.append(f"| ack p99 ms at {rate} req/s (smallest durable receiver) | "
                     f"{_fmt(lat['p99_ms'])} | {_fmt(floor)} | {_fmt(lat['p99_ms'] / floor)} | | |")
    lines.append(f"| end-to-end callbacks/s, N={raw['e2e_n']:,} (Celery no-op tasks/s) | "
                 f"{_fmt(raw['e2e_rate'], 0)} | {_fmt(raw['noop_rate'], 0)} | "
                 f"{_fmt(f['e2e_ratio'])} | {tgt['e2e_ratio']} | {met['e2e_ratio']} |")
    largest = raw["levels"][-1]
    smallest = largest.get("alongside", raw["levels"][0])
    lines.append(f"| growth: worst cost ratio {largest['orders']:,} ÷ {smallest['orders']:,} "
                 f"orders, side by side | {_fmt(f['growth_ratio'])} | | | "
                 f"{tgt['growth_ratio']} | {met['growth_ratio']} |")
    lines.append(f"| peak RSS receiver MB (echo) | {_fmt(f['rss_receiver_mb'], 0)} | "
                 f"{_fmt(raw['rss'].get('echo', float('nan')), 0)} | | {tgt['rss_receiver_mb']} | "
                 f"{met['rss_receiver_mb']} |")
    lines.append(f"| peak RSS per worker process MB (no-op worker) | "
                 f"{_fmt(f['rss_worker_mb'], 0)} | "
                 f"{_fmt(raw['rss'].get('noop_worker', float('nan')), 0)} | | "
                 f"{tgt['rss_worker_mb']} | {met['rss_worker_mb']} |")
    lines += ["", "| orders in ledger | saturation acks/s | p99 ms @500 | p99.9 ms @500 | "
              "p99 ms @1000 | end-to-end callbacks/s | stalls / inbox commits > 10 ms | "
              "worst cost ratio ÷ smallest ledger |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def row(level: dict[str, Any], label: str, ratio: str) -> str:
        return (f"| {label} | {_fmt(level['ack_rate'], 0)} | "
                f"{_fmt(level['p99_ms_500'])} | {_fmt(level['p999_ms_500'])} | "
                f"{_fmt(level['p99_ms_1000'])} | {_fmt(level['e2e_rate'], 0)} | "
                f"{level['stalls']} / {level['slow_commits']:.0f} | {ratio} |")

    for level in raw["levels"]:
        lines.append(row(level, f"{level['orders']:,}",
                         _fmt(level["growth_worst"]) if "growth_worst" in level else ""))
        if "alongside" in level:
            side = level["alongside"]
            lines.append(row(side, f"{side['orders']:,}, alongside", ""))
    lines += ["", f"Medians of {doc['reps']} runs (growth levels after the first: "
              f"{doc['growth_reps']}; latency: {doc['latency_reps']} per rate and level); "
              f"references measured interleaved with payhook in the same run. Growth: every "
              f"larger ledger is measured interleaved with a second payhook stack (its own "
              f"database, queue, receiver and worker) seeded to the smallest level, the rows "
              f"'alongside' (it grows only by the orders its own end-to-end runs register); the "
              f"ratio compares the two, measured in the same minutes. Stalls: episodes of "
              f"requests slower than 10 ms in all of a level's latency runs (echo server: "
              f"{raw['echo_stalls']}), beside the receiver's inbox commits that took over 10 ms "
              f"in the same runs (its `payhook_inbox_commit_seconds`). The smallest durable "
              f"receiver (`bench/floor.py`) is the issue's own prototype: group commit of the "
              f"body alone, commit before ack, nothing else; its saturation rate was "
              f"{_fmt(f['floor_ratio'])} of the echo server's. Generator CPU share at "
              f"saturation: {_fmt(raw['generator_cpu_share'])} "
              f"(payhook), {_fmt(raw['echo_generator_cpu_share'])} (echo); server CPU share: "
              f"{_fmt(raw['receiver_cpu_share'])} (payhook), {_fmt(raw['echo_cpu_share'])} "
              f"(echo)."]
    return "\n".join(lines)
