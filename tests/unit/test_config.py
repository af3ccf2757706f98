"""The providers file and the settings are validated at start-up; errors name what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from payhook.accounts import NAME_WIDTH, load_accounts
from payhook.broker import celery_config
from payhook.cli import main
from payhook.settings import Settings
from providers.errors import ConfigError
from reconcile.context import ReconcileConfig

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "data" / "vectors"
OTG = f"""
[providers.otgpay.default]
base_url = "https://uat-interface.haipay.asia"
app_id = 1054
currency = "idr"
merchant_secret = "env:TEST_OTG_SECRET"
merchant_private_key = "{VECTORS / 'keys/otgpay-merchant-private.pem'}"
provider_public_key = "{VECTORS / 'keys/otgpay-provider-public.pem'}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "payhook.toml"
    path.write_text(text)
    return path


def test_valid_file_loads_with_env_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`env:NAME` values come from the environment and the account is usable."""
    monkeypatch.setenv("TEST_OTG_SECRET", "s3cret")
    accounts = load_accounts(write(tmp_path, OTG))
    account = accounts.get("otgpay")
    assert account is not None
    assert account.provider.name == "otgpay"
    assert "s3cret" not in repr(account.config)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (OTG.replace("app_id = 1054", "app_id = 'x'"), "[providers.otgpay.default] app_id"),
        (OTG + "\nsurprise = 1\n", "[providers.otgpay.default] surprise"),
        (OTG.replace("otgpay-provider-public.pem", "missing.pem"),
         "[providers.otgpay.default] provider_public_key"),
        ("[providers.nopay.default]\nbase_url='x'\n", "[providers.nopay] unknown provider"),
        ("[providers.otgpay\n", "payhook.toml"),
    ],
    ids=["bad_type", "unknown_key", "missing_key_file", "unknown_provider", "bad_toml"],
)
def test_invalid_file_names_file_table_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, needle: str,
) -> None:
    """Each kind of mistake is refused with a message naming where it is."""
    monkeypatch.setenv("TEST_OTG_SECRET", "s3cret")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_accounts(path)
    assert str(path) in str(caught.value)
    assert needle in str(caught.value)


def test_missing_env_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An `env:NAME` whose variable is unset is refused, naming the variable and the key."""
    monkeypatch.delenv("TEST_OTG_SECRET", raising=False)
    with pytest.raises(ConfigError, match=r"merchant_secret.*TEST_OTG_SECRET"):
        load_accounts(write(tmp_path, OTG))


def _named(name: str) -> str:
    """The OTG account under the table key `name` (TOML text: bare, or a quoted string)."""
    return OTG.replace("[providers.otgpay.default]", f"[providers.otgpay.{name}]")


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("m" * (NAME_WIDTH + 1),
         f"is {NAME_WIDTH + 1} characters long; at most {NAME_WIDTH}"),
        ('"shop one"', 'otgpay."shop one"] account name must be'),
        ('"shop/one"', 'otgpay."shop/one"] account name must be'),
        ('"caf\u00e9"', 'account name must be'),
        ('".."', 'otgpay.".."] account name must be'),
        ('""', 'otgpay.""] account name must be'),
    ],
    ids=["too_long", "space", "slash", "non_ascii", "dot_dot", "empty"],
)
def test_an_account_name_the_tables_or_the_routes_cannot_hold_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, needle: str,
) -> None:
    """A name longer than the account columns would fail every insert on PostgreSQL (and the
    other requests of its inbox group with it), and one the callback route cannot carry as it
    is would never be reached: refused at start-up, naming the file, the account and why."""
    monkeypatch.setenv("TEST_OTG_SECRET", "s3cret")
    path = write(tmp_path, _named(key))
    with pytest.raises(ConfigError) as caught:
        load_accounts(path)
    assert f"{path}: [providers.otgpay." in str(caught.value)
    assert needle in str(caught.value)


def test_account_names_up_to_the_column_width_are_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The width is the account columns' own (read from the models), and a name of exactly that
    length, or with `_`, `.` and `-` in it, loads."""
    monkeypatch.setenv("TEST_OTG_SECRET", "s3cret")
    assert NAME_WIDTH == 64  # callbacks.account, orders.account, … are String(64)
    names = ["m" * NAME_WIDTH, "eu-2.shop_B", "default"]
    accounts = load_accounts(write(tmp_path, "".join(_named(f'"{n}"') for n in names)))
    assert sorted(a.name for a in accounts) == sorted(names)


def test_task_time_limit_must_be_below_visibility_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A time limit at or above the visibility timeout would let Redis hand a running task to a
    second worker: refused at start-up, naming both variables; one below it is taken."""
    monkeypatch.setenv("PAYHOOK_VISIBILITY_TIMEOUT_S", "60")
    monkeypatch.setenv("PAYHOOK_TASK_TIME_LIMIT_S", "60")
    with pytest.raises(ValidationError, match=r"TASK_TIME_LIMIT_S \(60\).*VISIBILITY_TIMEOUT_S"):
        Settings()
    monkeypatch.setenv("PAYHOOK_TASK_TIME_LIMIT_S", "59")
    settings = Settings(redis_url="redis://127.0.0.1:6379/0")
    assert celery_config(settings)["task_time_limit"] == 59


@pytest.mark.parametrize("value", ["[0]", "[300, -1]", "[]", "[300, 604801]", "[1e12]"])
def test_a_reconcile_backoff_outside_its_bounds_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A zero or negative step would query an order at every pass, a step past the 7-day
    give-up age only postpones its `unresolved` flag, and no step is no schedule: refused at
    start-up, naming the variable; steps within (0 s, 7 days] are taken."""
    monkeypatch.setenv("PAYHOOK_RECONCILE_BACKOFF_S", value)
    with pytest.raises(ValidationError, match="reconcile_backoff_s"):
        Settings()
    monkeypatch.setenv("PAYHOOK_RECONCILE_BACKOFF_S", "[1, 604800]")
    assert ReconcileConfig.from_settings(Settings()).backoff_s == (1, 604800)


@pytest.mark.parametrize("value", ["[0]", "[300, -1]", "[]", "[604801]"])
def test_an_accounts_poll_backoff_outside_its_bounds_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """An account's `poll_backoff_s` is held to the bounds of the default backoff, and the
    refusal names the file, the table and the key."""
    monkeypatch.setenv("TEST_OTG_SECRET", "s3cret")
    path = write(tmp_path, OTG + f"poll_backoff_s = {value}\n")
    with pytest.raises(ConfigError, match=r"\[providers\.otgpay\.default\] poll_backoff_s"):
        load_accounts(path)
    account = load_accounts(write(tmp_path, OTG + "poll_backoff_s = [60, 604800]\n")).get("otgpay")
    assert account is not None
    assert account.config.poll_backoff_s == (60, 604800)


def test_the_confirm_wait_leaves_the_task_time_to_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch waits for its query budget at most a quarter of the task time limit, so a short
    limit does not kill the batches that wait; within it, `PAYHOOK_CONFIRM_WAIT_S` holds."""
    monkeypatch.setenv("PAYHOOK_TASK_TIME_LIMIT_S", "2")
    assert Settings().confirm_wait_limit_s == 0.5
    monkeypatch.setenv("PAYHOOK_TASK_TIME_LIMIT_S", "240")
    assert Settings().confirm_wait_limit_s == 2.0
    monkeypatch.setenv("PAYHOOK_CONFIRM_WAIT_S", "2.5")
    assert Settings().confirm_wait_limit_s == 2.5


@pytest.mark.parametrize("token", ["", "  ", "\t"])
def test_a_blank_api_token_is_no_token(monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    """An empty PAYHOOK_API_TOKEN disables the API (503), as no token does, rather than
    demanding a bearer token nobody can send."""
    monkeypatch.setenv("PAYHOOK_API_TOKEN", token)
    assert Settings().api_token is None
    monkeypatch.setenv("PAYHOOK_API_TOKEN", "s3cret")
    token_set = Settings().api_token
    assert token_set is not None
    assert token_set.get_secret_value() == "s3cret"


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_receiver_or_worker_without_provider_accounts_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """A mistyped PAYHOOK_CONFIG, or a file with no account, stops `serve` and `worker` at
    start-up (exit 2, the file named): a receiver would answer 404 to every callback, a worker
    retry every one (`account_unknown`) until it was `dead`."""
    monkeypatch.setenv("PAYHOOK_REDIS_URL", "redis://127.0.0.1:1/0")  # found; never reached
    missing = tmp_path / "typo.toml"
    monkeypatch.setenv("PAYHOOK_CONFIG", str(missing))
    assert main([command]) == 2
    assert f"{missing}: no such providers file" in capsys.readouterr().err
    empty = tmp_path / "empty.toml"
    empty.write_text("[providers]\n")
    monkeypatch.setenv("PAYHOOK_CONFIG", str(empty))
    assert main([command]) == 2
    assert f"{empty}: no provider account" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "worker", "beat", "reconcile", "replay"])
def test_a_process_without_a_redis_url_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """Without PAYHOOK_REDIS_URL every process that uses the shared Redis stops at start-up,
    naming the variable (exit 2), rather than guess one on localhost its peers do not use."""
    monkeypatch.setenv("TEST_OTG_SECRET", "s3cret")
    monkeypatch.setenv("PAYHOOK_CONFIG", str(write(tmp_path, OTG)))
    monkeypatch.setenv("PAYHOOK_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.delenv("PAYHOOK_REDIS_URL", raising=False)
    argv = [command, "1"] if command == "replay" else [command]
    assert main(argv) == 2
    assert "PAYHOOK_REDIS_URL is not set" in capsys.readouterr().err


BROKER = {"PAYHOOK_REDIS_URL": "redis://127.0.0.1:1/0"}  # found; never reached


@pytest.mark.parametrize(
    ("command", "variables", "message"),
    [
        ("worker", {}, "PAYHOOK_REDIS_URL is not set"),
        ("worker", {**BROKER, "PAYHOOK_SWEEP_INTERVAL_S": "0"},
         "PAYHOOK_SWEEP_INTERVAL_S: Input should be greater than 0"),
        ("report", {**BROKER, "PAYHOOK_SWEEP_INTERVAL_S": "0"},
         "PAYHOOK_SWEEP_INTERVAL_S: Input should be greater than 0"),
        ("report", {**BROKER, "PAYHOOK_TASK_TIME_LIMIT_S": "600"},
         "PAYHOOK_TASK_TIME_LIMIT_S (600) must be below"),
    ],
    ids=["no_redis_url", "worker_bad_value", "report_bad_value", "report_time_limit"],
)
@pytest.mark.parametrize("celery_app", ["workers.app", "bench.noop"])
def test_celery_on_the_payhook_app_with_a_bad_configuration_exits(
    tmp_path: Path, command: str, variables: dict[str, str], message: str, celery_app: str
) -> None:
    """`celery -A workers.app …` (Flower, a worker started by hand) exits 2 without
    PAYHOOK_REDIS_URL, or with a value that is not valid, naming the variable. Celery would log
    the error and go on with its own defaults (RabbitMQ on localhost, the queue `celery`, no
    late acks): a Flower that looks ready and never sees a task. (`report` prints the settings
    Celery runs with, as Flower would use them, without a worker's start-up around it.) The
    benchmark's no-op reference app is configured the same way, so it exits the same."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYHOOK_")}
    env["PAYHOOK_CONFIG"] = str(write(tmp_path, OTG))
    env["TEST_OTG_SECRET"] = "s3cret"
    env.update(variables)
    argv = ["worker", "--pool=solo"] if command == "worker" else [command]
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", celery_app, *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"payhook: configuration error: {message}" in done.stderr
    assert "Traceback" not in done.stderr
    assert "amqp" not in done.stdout + done.stderr


@pytest.mark.parametrize("pool", [["--pool=threads"], ["-P", "gevent"], ["--pool", "eventlet"],
                                  ["-Pthreads"]])
def test_a_worker_refuses_a_pool_that_shares_a_process_between_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    pool: list[str],
) -> None:
    """Two tasks at once in one worker process would share its one event loop (the second
    fails with "already running"): `payhook worker` takes prefork or solo only."""
    monkeypatch.setenv("TEST_OTG_SECRET", "s3cret")
    monkeypatch.setenv("PAYHOOK_CONFIG", str(write(tmp_path, OTG)))
    monkeypatch.setenv("PAYHOOK_REDIS_URL", "redis://127.0.0.1:1/0")  # found; never reached
    assert main(["worker", *pool]) == 2
    assert "one task per process" in capsys.readouterr().err


def test_every_process_shares_one_reconciliation_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """`payhook reconcile` keeps its budgets and breakers under the deployment's queue, as the
    workers do: another prefix would be a second query budget, and twice the provider's rate."""
    monkeypatch.setenv("PAYHOOK_QUEUE", "prod")
    assert ReconcileConfig.from_settings(Settings()).redis_prefix == "prod:recon"
    assert ReconcileConfig().redis_prefix == "payhook:recon"
