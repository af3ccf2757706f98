"""What a sandbox run shows: a compact live view (redrawn in place on a terminal, plain
periodic lines otherwise) and the end-of-run summary with where to look next."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TextIO

from sandbox.check import Report
from sandbox.traffic import Progress

PLAIN_EVERY_S = 5.0
SHOWN_PROBLEMS = 10
EXAMPLE_NOTES = {
    "late_success": "failed, then paid: flagged late_success",
    "out_of_order": "an old pending notice after the success: stale",
    "lost": "callback never sent: resolved by polling (source poll)",
    "static_va": "MonetaPay static VA: several repayments, one repeated",
    "amount": "partial/over-payment or amount_mismatch",
    "forged": "a forged callback (rejected) and the genuine one",
}


def _reasons(reasons: dict[str, int], sep: str = ", ", eq: str = " ") -> str:
    return sep.join(f"{r}{eq}{n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))


def live_lines(p: Progress) -> list[str]:
    """The live view: four short lines."""
    s = p.states
    minutes, seconds = divmod(int(p.elapsed_s), 60)
    rate = p.acknowledged / p.traffic_s if p.traffic_s > 0 else 0.0
    return [
        f"sandbox {minutes}:{seconds:02d}  orders {p.orders}  callbacks {p.acknowledged} "
        f"received ({rate:.1f}/s)  ack p50 {p.ack_p50_ms:.1f} ms  p99 {p.ack_p99_ms:.1f} ms",
        f"  applied {s['applied']}  duplicate {s['duplicate']}  stale {s['stale']}  "
        f"conflict {s['conflict']}  dead {s['dead']}  in flight {s['in_flight']}",
        f"  rejected {s['rejected']}" + (f": {_reasons(p.reasons)}" if p.reasons else ""),
        f"  lost callbacks {p.lost_total}: resolved by polling {p.lost_resolved}, "
        f"waiting {p.lost_total - p.lost_resolved}",
    ]


def plain_line(p: Progress) -> str:
    """The live view as one greppable line (when stdout is not a terminal)."""
    s = p.states
    return (f"sandbox t={p.elapsed_s:.0f}s orders={p.orders} received={p.acknowledged} "
            f"applied={s['applied']} duplicate={s['duplicate']} stale={s['stale']} "
            f"rejected={s['rejected']}"
            + (f" ({_reasons(p.reasons, ' ', '=')})" if p.reasons else "")
            + f" in_flight={s['in_flight']} resolved_by_poll={p.lost_resolved}/{p.lost_total}"
            f" ack_p50={p.ack_p50_ms:.1f}ms ack_p99={p.ack_p99_ms:.1f}ms")


class LiveView:
    """Redraws in place on a TTY; otherwise prints a plain line every few seconds."""

    def __init__(self, out: TextIO, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self._drawn = 0
        self._last_plain = 0.0

    def update(self, progress: Progress) -> None:
        if not self.tty:
            if time.monotonic() - self._last_plain >= PLAIN_EVERY_S:
                self._last_plain = time.monotonic()
                print(plain_line(progress), file=self.out, flush=True)
            return
        lines = live_lines(progress)
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        body = "".join(f"{line}\x1b[K\n" for line in lines)
        self.out.write(f"{up}{body}\x1b[J")
        self.out.flush()
        self._drawn = len(lines)

    def note(self, text: str) -> None:
        """A line printed below the live view (which then redraws under it)."""
        print(text, file=self.out, flush=True)
        self._drawn = 0


@dataclass(frozen=True)
class Hints:
    """How to reach what the run left behind."""

    receiver_url: str
    api_token: str
    redis_url: str | None = None
    logs: str | None = None
    database: str | None = None


def summary(report: Report, hints: Hints) -> str:
    """The end-of-run table, the problems if any, and where to look next (no last line)."""
    s, r = report.states, report
    rate = r.generated / r.traffic_s if r.traffic_s > 0 else 0.0
    lines = [
        "",
        f"payhook sandbox: {r.orders} orders, {r.generated} callbacks received in "
        f"{r.traffic_s:.0f} s ({rate:.1f}/s), "
        + (f"settled {r.elapsed_s - r.traffic_s:.0f} s later" if r.settled
           else "NOT settled in time"),
        f"  {'applied':<16}{s['applied']:>7}",
        f"  {'duplicate':<16}{s['duplicate']:>7}",
        f"  {'stale':<16}{s['stale']:>7}",
        f"  {'conflict':<16}{s['conflict']:>7}",
        f"  {'rejected':<16}{s['rejected']:>7}   {_reasons(r.reasons)}",
        f"  {'dead':<16}{s['dead']:>7}",
        f"  {'not final':<16}{s['in_flight']:>7}",
        f"  {'ack latency':<16}  p50 {r.ack_p50_ms:.1f} ms   p99 {r.ack_p99_ms:.1f} ms   "
        f"(not acknowledged: {r.unacknowledged})",
        f"  {'lost callbacks':<16}{r.lost_callbacks:>7}   {r.lost_resolved} resolved by polling "
        f"({r.resolved_by_poll} orders in all had a poll applied)",
        f"  {'ledger':<16}  {r.ledger}",
        f"  {'check':<16}  {r.orders - r.lost - r.double_applied}/{r.orders} orders where "
        f"expected; lost {r.lost}, double applied {r.double_applied}",
    ]
    if r.problems:
        lines.append(f"  problems ({len(r.problems)}; first {SHOWN_PROBLEMS}):")
        lines += [f"    {p}" for p in r.problems[:SHOWN_PROBLEMS]]
    return "\n".join(lines + _next_steps(report, hints))


def _next_steps(report: Report, hints: Hints) -> list[str]:
    auth = f"-H 'Authorization: Bearer {hints.api_token}'"
    url = hints.receiver_url
    lines = ["", "Where to look next:"]
    for scenario, note in EXAMPLE_NOTES.items():
        if ref := report.examples.get(scenario):
            lines.append(f"  payhook order {ref:<24} # {note}")
    lines += [
        f"  curl {auth} '{url}/api/callbacks?state=rejected&limit=20'",
        f"  curl {auth} {url}/api/ledger/balances",
    ]
    if ref := report.examples.get("late_success"):
        provider, order_no = ref.split()
        lines.append(f"  curl {auth} {url}/api/orders/{provider}/{order_no}")
    if hints.redis_url:
        lines.append(f"  PAYHOOK_REDIS_URL={hints.redis_url} celery -A workers.app flower"
                     "   # task view")
    if hints.logs:
        lines.append(f"  logs: {hints.logs}")
    if hints.database:
        lines.append(f"  (the API and Flower answer while the stack runs; `payhook order` reads "
                     f"{hints.database} at any time)")
    return lines
