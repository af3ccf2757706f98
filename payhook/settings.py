"""One settings object, from the environment (CONTRACT §2), loaded by each entry point."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from dotenv import load_dotenv
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from providers.base import BackoffSchedule
from providers.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///./.payhook/payhook.db"
# What the receiver's inbox holds at most of bodies and headers waiting for their commit; past
# it a request is refused (503). The default `max_pending_bytes` of ingest/inbox.py (64 MiB),
# which a test holds equal.
INBOX_PENDING_BYTES = 64 * 1024 * 1024
# The largest PAYHOOK_MAX_BODY: half the inbox bound, so a body within the limit fits it with
# its headers (aiohttp takes at most 128, of 8 KiB name and value), alone or not. A larger body
# would be refused (503) at every try, and its provider retry it for ever.
MAX_BODY_LIMIT = INBOX_PENDING_BYTES // 2
LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


class Settings(BaseSettings):
    """Process settings; `PAYHOOK_*` variables, `.env` read if present."""

    model_config = SettingsConfigDict(env_prefix="PAYHOOK_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    config: Path = Path("payhook.toml")
    api_token: SecretStr | None = None
    log_format: Literal["json", "console"] | None = None
    log_level: LogLevel = "INFO"
    max_body: int = Field(default=65536, gt=0, le=MAX_BODY_LIMIT)
    reconcile_interval_s: float = Field(default=60.0, gt=0)
    sweep_interval_s: float = Field(default=30.0, gt=0)
    # A callback still not final this long after receipt (or after its last enqueue) is re-sent.
    sweep_after_s: float = Field(default=120.0, gt=0)
    # Redis redelivers an unacked task after this: minutes, not Celery's default hour. It bounds
    # a task's time limit plus its retry countdown (workers/process.py).
    visibility_timeout_s: int = Field(default=600, gt=0)
    # How often each worker looks for unacked tasks past the visibility timeout, to redeliver
    # them: kombu's `unacked_restore_interval`, with every look a scan. Kombu's own default
    # scans one look in ten (every 100 s), which a redelivery waits on top of the timeout.
    redelivery_scan_s: int = Field(default=10, gt=0)
    # The Celery queue (and Redis key prefix): separate deployments sharing one Redis use their own.
    queue: str = Field(default="payhook", pattern=r"^[A-Za-z0-9_.:-]+$")
    max_attempts: int = Field(default=6, gt=0)
    # The wait after a transient failure, doubling per attempt (15 s, 30 s, 1 min, 2 min, 4 min),
    # so the attempts span minutes of provider trouble, not one.
    retry_backoff_s: int = Field(default=15, gt=0)
    # A task running longer is killed (a hung provider query, a runaway callback) and counts as
    # an attempt; under the visibility timeout, so Redis never hands a running task to another.
    task_time_limit_s: int = Field(default=240, gt=0)
    # A reconciliation pass is told to stop (Celery's soft time limit) this long before that
    # kill: time to store its run's report and hand back the orders it did not get to answer.
    reconcile_wind_down_s: float = Field(default=20.0, gt=0)
    batch_size: int = Field(default=64, gt=0)
    # How long a batch waits for its account's query budget (`query_rate_per_s`, shared with
    # reconciliation by every process) before it defers the confirmations left. The budget
    # bounds the rate whatever the wait; a short wait keeps a flood of callbacks to confirm from
    # holding, for long, the batches and workers every other account shares.
    confirm_wait_s: float = Field(default=2.0, gt=0)
    # Reconciliation: default per-order backoff (each step within (0 s, 7 days]) and the
    # provider-silence window.
    reconcile_backoff_s: BackoffSchedule = (300, 900, 3600, 21600, 86400)
    reconcile_silence_window_s: int = Field(default=900, gt=0)
    # How long the receiver waits for the broker when handing a batch to the workers.
    publish_timeout_s: float = Field(default=2.0, gt=0)

    @field_validator("api_token")
    @classmethod
    def _blank_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty PAYHOOK_API_TOKEN is no token (the API answers 503, disabled), not a token
        nobody can send (401 for ever: HTTP strips the space "Bearer " would end with)."""
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_name(cls, value: Any) -> Any:
        """Any case, as the logging module's names: `info`, `Warning`; WARN and FATAL too."""
        if not isinstance(value, str):
            return value
        name = value.strip().upper()
        return {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(name, name)

    @property
    def confirm_wait_limit_s(self) -> float:
        """`confirm_wait_s`, but at most a quarter of the task time limit, which the wait shares
        with the queries and the writes of its batch."""
        return min(self.confirm_wait_s, self.task_time_limit_s / 4)

    @property
    def reconcile_soft_time_limit_s(self) -> float:
        """When a reconciliation pass is told to stop: `reconcile_wind_down_s` before the task
        time limit, but at most a quarter of it earlier, so the pass keeps most of its time."""
        return self.task_time_limit_s - min(self.reconcile_wind_down_s, self.task_time_limit_s / 4)

    @model_validator(mode="after")
    def _time_limit_under_visibility(self) -> Settings:
        if self.task_time_limit_s >= self.visibility_timeout_s:
            raise ValueError(
                f"PAYHOOK_TASK_TIME_LIMIT_S ({self.task_time_limit_s}) must be below "
                f"PAYHOOK_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}): Redis would hand "
                "a task that is still running to a second worker"
            )
        return self


def load_settings() -> Settings:
    """Read `.env` into the environment (without overriding it), then the settings. A value
    that is not valid raises `ConfigError` naming its variable, never its value."""
    load_dotenv(Path.cwd() / ".env", override=False)
    try:
        return Settings()
    # `from None`: pydantic's own error holds each bad value (`input`), and the value of
    # PAYHOOK_API_TOKEN or of a URL with a password in it must reach no log nor traceback.
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None
    except SettingsError as exc:  # a list variable (PAYHOOK_RECONCILE_BACKOFF_S) not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = _variable(field.group(1)) if field else "a PAYHOOK_* variable"
        raise ConfigError(f"{name}: not a valid JSON value") from None


def _variable(field: str) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def _problems(exc: ValidationError) -> str:
    """Each error as `PAYHOOK_NAME: reason` (the item of a list variable as `NAME[i]`); a
    check across fields names its variables itself. pydantic's reasons quote no input."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = error["loc"]
        reason = error["msg"].removeprefix("Value error, ")
        if not loc:
            problems.append(reason)
            continue
        items = "".join(f"[{part}]" for part in loc[1:] if isinstance(part, int))
        problems.append(f"{_variable(str(loc[0]))}{items}: {reason}")
    return "; ".join(problems)
