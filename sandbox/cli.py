"""`payhook sandbox send|run|config`: one signed callback by hand, standalone traffic against a
running receiver, or just the sandbox providers file (keys under ./.payhook/sandbox)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import tomllib
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from types import FrameType

from payhook.settings import Settings
from sandbox.world import PROVIDERS, SandboxWorld

DEFAULT_ROOT = Path(".payhook") / "sandbox"
STATUSES = ("pending", "succeeded", "failed", "closed", "cancelled", "partial", "overpaid")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payhook sandbox")
    sub = parser.add_subparsers(dest="action", required=True)
    send = sub.add_parser("send", help="send one signed callback with the sandbox keys")
    send.add_argument("provider", choices=PROVIDERS)
    send.add_argument("merchant_order_no")
    send.add_argument("amount", type=Decimal)
    send.add_argument("--status", default="succeeded", choices=STATUSES)
    send.add_argument("--url", default="http://127.0.0.1:8080", help="the payhook receiver")
    send.add_argument("--event-id", help="the provider's order number (default: random)")
    send.add_argument("--forged", action="store_true", help="sign with the wrong key")
    send.add_argument("--plain", action="store_true", help="OPay's unsigned plain callback")
    run = sub.add_parser("run", help="provider servers + traffic against a running receiver")
    run.add_argument("--url", default="http://127.0.0.1:8080", help="the payhook receiver")
    run.add_argument("--token", default=os.environ.get("PAYHOOK_API_TOKEN"),
                     help="its API token (default $PAYHOOK_API_TOKEN)")
    run.add_argument("--duration", type=float, default=30.0)
    run.add_argument("--rate", type=float, default=10.0, help="callbacks per second")
    run.add_argument("--faults", default="", help="e.g. duplicate=0.2,lost=0.1")
    run.add_argument("--seed", type=int)
    config = sub.add_parser("config", help="write the sandbox providers file and print its path")
    for cmd in (run, config):
        cmd.add_argument("--providers-port", type=int, default=8079)
    for cmd in (send, run, config):
        cmd.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="sandbox keys")
    return parser


def main(_settings: Settings, args: argparse.Namespace) -> int:
    """Entry point of `payhook sandbox ACTION …` (`args.action`, `args.rest`)."""
    ns = _parser().parse_args([args.action, *args.rest])
    ns.root = ns.root.resolve()
    if ns.action == "send":
        return send(ns)
    if ns.action == "config":
        world = SandboxWorld(ns.root)
        from sandbox.stack import STALE_AFTER_S

        path = world.write_config(f"http://127.0.0.1:{ns.providers_port}",
                                  ns.root / "payhook.toml", stale_after_s=STALE_AFTER_S)
        print(path)
        return 0
    return run(ns)


def providers_url(root: Path, provider: str) -> str | None:
    """Where the running sandbox serves `provider` (from its providers file), if written."""
    path = root / "payhook.toml"
    if not path.exists():
        return None
    base = tomllib.loads(path.read_text())["providers"][provider]["default"]["base_url"]
    return str(base).removesuffix(f"/{provider}")


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - user's URL
            return reply.status, reply.read(), reply.headers.get("X-Payhook-Callback-Id")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), None


def publish(root: Path, provider: str, fields: dict[str, object]) -> bool:
    """Tell the running sandbox providers what to answer for this order; False if none runs."""
    base = providers_url(root, provider)
    if base is None:
        return False
    try:
        status, _, _ = _post(f"{base}/_sandbox/publish/{provider}", json.dumps(fields).encode(),
                             {"Content-Type": "application/json"})
    except OSError:
        return False
    return status == 200


def send(ns: argparse.Namespace) -> int:
    """Publish the order's state to the sandbox providers, then deliver its callback."""
    world = SandboxWorld(ns.root)
    fields = world.fields(ns.provider, ns.merchant_order_no, ns.status, ns.amount,
                          event_id=ns.event_id)
    published = not ns.forged and publish(ns.root, ns.provider, fields)
    if not published and not ns.forged and (ns.provider == "mtpay" or ns.plain):
        print("payhook sandbox: no sandbox providers running (start `payhook dev`); this "
              "callback is confirmed by query and cannot be confirmed", file=sys.stderr)
    request = world.callback(ns.provider, fields, forged=ns.forged, plain=ns.plain)
    try:
        status, body, callback_id = _post(ns.url.rstrip("/") + request.url, request.body,
                                          dict(request.headers))
    except OSError as exc:
        print(f"payhook sandbox: cannot reach {ns.url}: {exc}", file=sys.stderr)
        return 1
    print(f"{ns.provider} {ns.merchant_order_no} {ns.status} {ns.amount}: HTTP {status} "
          f"{body.decode(errors='replace')} (callback {callback_id or '-'})")
    if status == 200:
        print(f"see it: payhook order {ns.provider} {ns.merchant_order_no}")
    return 0 if status == 200 else 1


def run(ns: argparse.Namespace) -> int:
    """Serve the providers and send traffic for `--duration` seconds, then check and count."""
    from sandbox.stack import SandboxStack
    from sandbox.traffic import FaultMix
    from sandbox.view import Hints, summary

    if not ns.token:
        print("payhook sandbox run: --token or PAYHOOK_API_TOKEN is required", file=sys.stderr)
        return 2
    stack = SandboxStack(ns.root, ns.url, providers_port=ns.providers_port)
    config = stack.prepare()
    print(f"sandbox providers on {stack.providers_url}; the receiver must use "
          f"PAYHOOK_CONFIG={config}", file=sys.stderr)
    signals = 0

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1

    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.start({"PAYHOOK_API_TOKEN": ns.token}, rate=ns.rate, mix=FaultMix.parse(ns.faults),
                    seed=ns.seed)
        ends = time.monotonic() + ns.duration
        while time.monotonic() < ends and not signals:
            stack.tick()
            time.sleep(0.5)
        report = stack.finish(abort=lambda: signals >= 2, kick=True)
    finally:
        stack.close()
    assert report is not None
    print(summary(report, Hints(ns.url, ns.token)))
    print(report.last_line(), flush=True)
    return 0 if report.lost == 0 and report.double_applied == 0 else 1
