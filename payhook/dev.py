"""`payhook dev`: embedded Redis, migrations, receiver, worker and beat on one machine, and
with `--sandbox` the fake providers' traffic, its live view and its end-of-run check.

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
from typing import TYPE_CHECKING

from payhook.embedded import EmbeddedRedis
from payhook.masking import mask_string
from payhook.settings import Settings

if TYPE_CHECKING:
    from sandbox.check import Report
    from sandbox.stack import SandboxStack

WORKDIR = Path(".payhook")


class Stack:
    """The child processes of a dev run, each in its own session: a terminal's Ctrl-C reaches
    only `payhook dev`, which stops them in order (and can still count a sandbox run)."""

    def __init__(self, env: dict[str, str], logs: Path | None = None) -> None:
        self.env = env
        self.logs = logs
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, *args: str) -> None:
        cmd = [sys.executable, "-m", "payhook.cli", *args]
        output = None
        if self.logs is not None:
            self.logs.mkdir(parents=True, exist_ok=True)
            output = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(cmd, env=self.env, stdout=output,  # noqa: S603
                                stderr=subprocess.STDOUT if output else None,
                                start_new_session=True)
        self.children.append((name, proc))

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
    # Unset, the format is each child's own choice (CONTRACT §2: JSON unless its stderr is a
    # TTY): dev's terminal, which a child inherits, or a `.payhook/logs` file with --sandbox.
    if settings.log_format:
        env["PAYHOOK_LOG_FORMAT"] = settings.log_format
    if settings.api_token is None:
        env["PAYHOOK_API_TOKEN"] = secrets.token_urlsafe(16)
    return env


class Interrupts:
    """Counts SIGINT/SIGTERM: the first stops the run, a second skips the sandbox's settle."""

    def __init__(self) -> None:
        self.count = 0
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, _sig: int, _frame: FrameType | None) -> None:
        self.count += 1


def _providers(settings: Settings, args: argparse.Namespace) -> tuple[SandboxStack | None, Path]:
    """The sandbox (with --sandbox, or when there is no providers file) and the file to use."""
    if not args.sandbox and settings.config.exists():
        return None, settings.config
    from sandbox.stack import SandboxStack

    sandbox = SandboxStack(WORKDIR / "sandbox", receiver=f"http://127.0.0.1:{args.port}")
    if args.sandbox and settings.config.exists():
        print(f"payhook dev: --sandbox uses the sandbox's providers file, not {settings.config}",
              file=sys.stderr)
    return sandbox, sandbox.prepare()


def _supervise(stack: Stack, sandbox: SandboxStack | None, duration: float | None,
               interrupts: Interrupts) -> int:
    """Keep the live view fresh until Ctrl-C, the duration, or a child's death."""
    started = time.monotonic()
    while not interrupts.count:
        if duration is not None and time.monotonic() - started >= duration:
            break
        if problem := stack.dead():
            print(f"payhook dev: {problem}; stopping", file=sys.stderr)
            return 1
        if sandbox is not None:
            sandbox.tick()
        time.sleep(0.5)
    return 0


def _start_redis() -> tuple[EmbeddedRedis, str]:
    """The embedded Redis (in a session of its own, deaf to the terminal's Ctrl-C):
    `payhook dev` stops it last, after the sandbox's final check has used it."""
    embedded = EmbeddedRedis(WORKDIR / "redis")
    return embedded, embedded.start()


def run_dev(settings: Settings, args: argparse.Namespace) -> int:
    """Run the stack until Ctrl-C or `args.duration` seconds (then, with --sandbox, settle,
    check every generated order and print the summary)."""
    from ledger.migrate import upgrade

    WORKDIR.mkdir(exist_ok=True)
    embedded, redis_url = (None, settings.redis_url) if settings.redis_url else _start_redis()
    try:
        sandbox, config = _providers(settings, args)
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
    env = dev_environment(settings, redis_url, config)
    traffic = sandbox is not None and args.sandbox
    if sandbox is not None:
        from sandbox.stack import sandbox_environment

        sandbox_environment(env)
    stack = Stack(env, logs=WORKDIR / "logs" if traffic else None)
    interrupts = Interrupts()
    report: Report | None = None
    code = 1
    try:
        upgrade(settings.database_url)
        _spawn_all(stack, args.port)
        _banner(stack.env, args.port, config, stack.logs)
        if sandbox is not None and traffic:
            sandbox.start(stack.env, rate=args.rate)
        code = _supervise(stack, sandbox, args.duration, interrupts)
    finally:
        if sandbox is not None:
            report = _finish(sandbox, stack, interrupts)
            sandbox.close()
        stack.stop()
        if embedded is not None:
            embedded.stop()
        print("payhook dev: stopped", file=sys.stderr, flush=True)
    if report is not None:
        _print_report(report, stack.env, args.port)
        code = code or int(bool(report.lost or report.double_applied))
    return code


def _spawn_all(stack: Stack, port: int) -> None:
    stack.spawn("receiver", "serve", "--host", "127.0.0.1", "--port", str(port))
    stack.spawn("worker", "worker", "--concurrency", "2")
    stack.spawn("beat", "beat", "--schedule", str(WORKDIR / "celerybeat-schedule"))
    wait_ready(f"http://127.0.0.1:{port}/healthz")


def _finish(sandbox: SandboxStack, stack: Stack, interrupts: Interrupts) -> Report | None:
    """The sandbox's settle and check; never in the way of stopping the children."""
    try:
        return sandbox.finish(
            stack.env, abort=lambda: interrupts.count >= 2 or stack.dead() is not None)
    except Exception as exc:  # the check is a report: stopping cleanly matters more
        print(f"payhook dev: the sandbox check failed: {exc!r}", file=sys.stderr)
        return None


def _print_report(report: Report, env: dict[str, str], port: int) -> None:
    from sandbox.view import Hints, summary

    hints = Hints(f"http://127.0.0.1:{port}", env["PAYHOOK_API_TOKEN"],
                  redis_url=mask_string(env["PAYHOOK_REDIS_URL"]), logs=str(WORKDIR / "logs"),
                  database=str(WORKDIR / "payhook.db"))
    print(summary(report, hints))
    print(report.last_line(), flush=True)


def _banner(env: dict[str, str], port: int, config: Path, logs: Path | None) -> None:
    print(
        f"payhook dev: receiver http://127.0.0.1:{port}  providers {config}\n"
        f"  API token: {env['PAYHOOK_API_TOKEN']}  (curl -H 'Authorization: Bearer …' "
        f"http://127.0.0.1:{port}/api/callbacks)\n"
        f"  Flower: PAYHOOK_REDIS_URL={mask_string(env['PAYHOOK_REDIS_URL'])} "
        "celery -A workers.app flower\n"
        + (f"  Logs of the receiver, worker and beat: {logs}/\n" if logs else "")
        + "  Ctrl-C stops everything.",
        file=sys.stderr,
        flush=True,
    )
