"""`payhook dev`: embedded Redis, migrations, receiver, worker and beat on one machine.

Every part runs as its own process, exactly as in production; Ctrl-C (or `--duration`)
stops them all, children first, then Redis.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from payhook.embedded import EmbeddedRedis
from payhook.settings import Settings

WORKDIR = Path(".payhook")


class Stack:
    """The child processes of a dev run."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, *args: str) -> None:
        cmd = [sys.executable, "-m", "payhook.cli", *args]
        self.children.append((name, subprocess.Popen(cmd, env=self.env)))  # noqa: S603

    def dead(self) -> str | None:
        for name, proc in self.children:
            if proc.poll() is not None:
                return f"{name} exited with {proc.returncode}"
        return None

    def stop(self) -> None:
        for _, proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, proc in self.children:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(url: str, timeout_s: float = 30.0) -> None:
    """Block until GET url answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310 - our own loopback URL
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f}s")


def dev_environment(settings: Settings, redis_url: str, config: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PAYHOOK_DATABASE_URL"] = settings.database_url
    env["PAYHOOK_REDIS_URL"] = redis_url
    env["PAYHOOK_CONFIG"] = str(config)
    env.setdefault("PAYHOOK_LOG_FORMAT", settings.log_format or "console")
    if settings.api_token is None:
        env["PAYHOOK_API_TOKEN"] = secrets.token_urlsafe(16)
    return env


def run_dev(settings: Settings, args: argparse.Namespace) -> int:
    """Run the stack until Ctrl-C or `args.duration` seconds."""
    from ledger.migrate import upgrade

    embedded: EmbeddedRedis | None = None
    redis_url = settings.redis_url
    if not redis_url:
        embedded = EmbeddedRedis(WORKDIR / "redis")
        redis_url = embedded.start()
    config = settings.config
    sandbox = None
    if args.sandbox or not config.exists():
        from sandbox.stack import SandboxStack

        sandbox = SandboxStack(WORKDIR / "sandbox", receiver=f"http://127.0.0.1:{args.port}")
        config = sandbox.prepare(use_existing=config if config.exists() else None)
    stack = Stack(dev_environment(settings, redis_url, config))
    stop = False

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        upgrade(settings.database_url)
        stack.spawn("receiver", "serve", "--host", "127.0.0.1", "--port", str(args.port))
        stack.spawn("worker", "worker", "--concurrency", "2")
        stack.spawn("beat", "beat", "--schedule", str(WORKDIR / "celerybeat-schedule"))
        wait_ready(f"http://127.0.0.1:{args.port}/healthz")
        _banner(stack.env, args.port, config)
        if sandbox is not None and args.sandbox:
            sandbox.start(stack.env, rate=args.rate)
        started = time.monotonic()
        while not stop:
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
            if problem := stack.dead():
                print(f"payhook dev: {problem}; stopping", file=sys.stderr)
                return 1
            if sandbox is not None:
                sandbox.tick()
            time.sleep(0.5)
        return 0
    finally:
        if sandbox is not None:
            sandbox.finish(stack.env)
        stack.stop()
        if embedded is not None:
            embedded.stop()
        print("payhook dev: stopped", file=sys.stderr)


def _banner(env: dict[str, str], port: int, config: Path) -> None:
    print(
        f"payhook dev: receiver http://127.0.0.1:{port}  providers {config}\n"
        f"  API token: {env['PAYHOOK_API_TOKEN']}  (curl -H 'Authorization: Bearer …' "
        f"http://127.0.0.1:{port}/api/callbacks)\n"
        f"  Flower: PAYHOOK_REDIS_URL={env['PAYHOOK_REDIS_URL']} celery -A workers.app flower\n"
        "  Ctrl-C stops everything.",
        file=sys.stderr,
        flush=True,
    )
