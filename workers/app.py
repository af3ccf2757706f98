"""The Celery app `workers.app`: configured lazily from the settings when first used."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from payhook.broker import configure_or_exit
from payhook.logs import configure as configure_logging
from payhook.settings import load_settings

app = Celery("payhook", include=["workers.tasks"])


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    configure_or_exit(sender)


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A forked child must not share its parent's database connections or event loop.
    from workers import runtime

    runtime.reset()
