"""The `payhook` command (CONTRACT §1)."""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Sequence
from itertools import pairwise

from payhook.settings import Settings, load_settings
from providers.errors import ConfigError


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from aiohttp import web

    from ingest.app import create_app
    from ledger.db import make_engine
    from payhook.accounts import load_accounts
    from payhook.broker import make_celery, redis_url

    redis_url(settings)
    # Without its accounts a receiver would answer 404 to every callback, until the providers
    # stopped retrying: it refuses to start instead.
    accounts = load_accounts(settings.config, required=True)
    # The event loop shares the GIL with the threads it hands blocking work to (SQLite's inbox
    # writes, the API's queries). A thread that wants the GIL waits up to the switch interval
    # (5 ms by default) for the holder to let go, which shows in the ack latency's tail; 1 ms
    # bounds that wait. (On PostgreSQL the inbox and the dispatcher are on the loop itself.)
    sys.setswitchinterval(0.001)
    # Pre-ping on checkout: the pool serves the API, /readyz and /metrics; the inbox writers hold
    # connections of their own, so the ping costs nothing per callback.
    engine = make_engine(settings.database_url, pool_size=8)
    app = create_app(settings, accounts, engine, make_celery(settings))
    app.on_startup.append(_freeze_heap)
    # auto_decompress off: a callback is stored as the bytes that came (CONTRACT §3), and a body
    # whose Content-Encoding lies is stored and judged like any other, not a 500 and lost.
    web.run_app(
        app, host=args.host, port=args.port, access_log=None, print=None, shutdown_timeout=10,
        auto_decompress=False,
    )
    return 0


async def _freeze_heap(_app: object) -> None:
    """Move everything loaded at start-up (modules, SQLAlchemy and aiohttp internals: ~100k
    objects) out of the garbage collector's reach. A full collection over them took ~50 ms
    on the bench machine, a pause every request in flight waits out; frozen, it takes ~0."""
    gc.collect()
    gc.freeze()


def _celery(command: str, extra: list[str]) -> int:
    from payhook.accounts import load_accounts
    from payhook.broker import redis_url
    from workers.app import app

    settings = load_settings()
    redis_url(settings)
    if command == "worker":
        # Checked now, not at the first task: without its accounts a worker would retry every
        # callback (`account_unknown`) until each was `dead`.
        load_accounts(settings.config, required=True)
        _process_pool(extra)
    argv = [command, "--loglevel=INFO", *extra]
    if command == "worker" and not any(a.startswith(("-E", "--task-events")) for a in extra):
        argv.append("--task-events")
    app.start(argv)
    return 0


def _process_pool(extra: list[str]) -> None:
    """Refuse a pool that runs several tasks in one process (threads, gevent, eventlet): a
    worker process has one event loop and one HTTP session for its provider queries, which a
    second task at the same time would find already running."""
    pools = [a.split("=", 1)[1] if "=" in a else a[2:] for a in extra
             if a.startswith(("--pool=", "-P")) and a != "-P"]
    pools += [b for a, b in pairwise(extra) if a in ("-P", "--pool")]
    for pool in pools:
        if pool not in ("prefork", "solo"):
            raise ConfigError(f"--pool {pool}: payhook workers run one task per process "
                              "(prefork, the default, or solo)")


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from ledger.migrate import upgrade

    upgrade(settings.database_url)
    print(f"migrated {settings.database_url.split('@')[-1]} to head")
    return 0


def _order(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from ledger.db import make_engine
    from ledger.views import find_order, order_json

    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        order = find_order(session, args.provider, args.account, args.merchant_order_no)
        if order is None:
            print(f"no order {args.merchant_order_no} in {args.provider}/{args.account}",
                  file=sys.stderr)
            return 1
        print(json.dumps(order_json(session, order), indent=2))
    return 0


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from payhook.replay import replay

    if bool(args.ids) == bool(args.state):
        print("payhook replay: name callback ids or --state STATE (one of them)", file=sys.stderr)
        return 2
    try:
        done = replay(settings, ids=args.ids, state=args.state)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"replayed {len(done.reset)} callback(s)")
    if done.in_flight:
        listed = " ".join(str(i) for i in done.in_flight)
        print(f"not replayed, still being processed: {listed}", file=sys.stderr)
    missing = sorted(set(args.ids) - set(done.reset) - set(done.in_flight))
    if missing:
        print(f"no such callback: {' '.join(str(i) for i in missing)}", file=sys.stderr)
    return 1 if done.in_flight or missing else 0


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from reconcile.cli import reconcile_now

    return int(reconcile_now(settings, provider=args.provider, account=args.account))


def _dev(settings: Settings, args: argparse.Namespace) -> int:
    from payhook.dev import run_dev

    return int(run_dev(settings, args))


def _sandbox(settings: Settings, args: argparse.Namespace) -> int:
    from sandbox.cli import main as sandbox_main

    return int(sandbox_main(settings, args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payhook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the aiohttp receiver")
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a receiver listens for providers
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=_serve)
    for name in ("worker", "beat"):
        sub.add_parser(name, help=f"run the Celery {name} (extra arguments pass through)")
    sub.add_parser("migrate", help="upgrade the database schema to head").set_defaults(
        func=_migrate
    )
    replay = sub.add_parser("replay", help="re-process stored callbacks from their raw bytes")
    replay.add_argument("ids", nargs="*", type=int)
    replay.add_argument("--state", help="replay every callback in this state (e.g. dead)")
    replay.set_defaults(func=_replay)
    rec = sub.add_parser("reconcile", help="run a reconciliation pass now and print its report")
    rec.add_argument("--provider")
    rec.add_argument("--account")
    rec.set_defaults(func=_reconcile)
    order = sub.add_parser("order", help="print one order with its history")
    order.add_argument("provider")
    order.add_argument("merchant_order_no")
    order.add_argument("--account", default="default")
    order.set_defaults(func=_order)
    dev = sub.add_parser("dev", help="receiver + worker + beat on embedded defaults")
    dev.add_argument("--sandbox", action="store_true", help="also run the provider sandbox")
    dev.add_argument("--duration", type=float, help="stop after this many seconds")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument("--rate", type=float, default=20.0, help="sandbox callbacks per second")
    dev.set_defaults(func=_dev)
    sandbox = sub.add_parser("sandbox", help="fake providers and a traffic generator")
    sandbox.add_argument("action", nargs="?", default="run")
    sandbox.add_argument("rest", nargs=argparse.REMAINDER)
    sandbox.set_defaults(func=_sandbox)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in ("worker", "beat"):
            return _celery(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        settings = load_settings()
        from payhook.logs import configure

        configure(settings.log_format, settings.log_level)
        return int(args.func(settings, args))
    except ConfigError as exc:
        print(f"payhook: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
