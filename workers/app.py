"""The Celery app `workers.app`: configured lazily from the settings when first used."""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery, signals

from payhook.broker import celery_config
from payhook.logs import configure as configure_logging
from payhook.settings import load_settings
from providers.errors import ConfigError

app = Celery("payhook", include=["workers.tasks"])


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    try:
        config = celery_config(load_settings())
    except ConfigError as exc:
        # Celery logs what a signal handler raises and carries on with its defaults: a worker
        # or Flower on RabbitMQ's localhost, looking healthy, seeing nothing. Exit instead,
        # for a missing Redis URL as for a value that is not valid (PAYHOOK_SWEEP_INTERVAL_S=0).
        print(f"payhook: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    sender.conf.update(config)


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A forked child must not share its parent's database connections or event loop.
    from workers import runtime

    runtime.reset()
