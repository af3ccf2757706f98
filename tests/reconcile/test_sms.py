"""SMS alerts through SSSMS88 against the stand-in server and a real Redis."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from providers.errors import QueryAuth, QueryPermanent, QueryTransient
from providers.http import QueryHttp, RetryPolicy
from reconcile.alerts import Alerter, build_alert, scrub
from reconcile.report import PassReport
from reconcile.sms import SmsConfig, Sssms88Client, login_signature, mask_number
from sandbox.sms import SMS_SANDBOX, SmsSandbox, create_sms_app

USERNAME, PASSWORD = "merchant_user", "pw-Very-Secret-42"
API_KEY, API_SECRET = "AK-9f8e7d6c5b4a", "S3cretHmacKeyForTheSmsGateway0xDEADBEEF"
ALERT_NUMBERS = ["601111330000", "60189990000"]
FAST = RetryPolicy(attempts=2, backoff_base_s=0.01, backoff_max_s=0.02)


def make_config(base_url: str, **overrides: object) -> SmsConfig:
    """A valid `[notify.sssms88]` table for the stand-in."""
    table = {"base_url": base_url, "username": USERNAME, "password": PASSWORD, "api_key": API_KEY}
    table |= {"api_secret": API_SECRET, "account_code": "SANDBOXAPP", "low_credit": "10.0000"}
    return SmsConfig.model_validate(table | {"alert_numbers": ALERT_NUMBERS} | overrides)


@asynccontextmanager
async def stand_in(
    credit: str = "100.0000", **overrides: object
) -> AsyncIterator[tuple[SmsSandbox, Sssms88Client]]:
    """The stand-in on 127.0.0.1 at a free port, with a client on the shared HTTP layer."""
    app = create_sms_app(USERNAME, PASSWORD, API_KEY, API_SECRET, Decimal(credit))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    http = QueryHttp(retry=FAST)
    config = make_config(str(server.make_url("")), **overrides)
    try:
        yield app[SMS_SANDBOX], Sssms88Client.from_http(config, http, 1000)
    finally:
        await http.close()
        await server.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A real Redis, the session's; every key the test made under its prefix is deleted after."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix unique to this test."""
    value = f"test:sms:{uuid.uuid4().hex}"
    yield value
    keys = list(redis_client.scan_iter(match=f"{value}:*"))
    if keys:
        redis_client.delete(*keys)


def test_login_signature_matches_the_seed_formula() -> None:
    """The signature is base64 HMAC-SHA256(secret, "username=…&password=…&apiKey=…")."""
    signed = b"username=u&password=p&apiKey=YOUR_API_KEY"
    mac = hmac.new(b"YOUR_API_SECRET", signed, hashlib.sha256)
    expected = base64.b64encode(mac.digest()).decode()
    assert login_signature("YOUR_API_SECRET", "u", "p", "YOUR_API_KEY") == expected


def test_login_is_accepted_and_credit_is_read() -> None:
    """The stand-in accepts the client's signed login and reports the credit as a Decimal."""

    async def scenario() -> None:
        async with stand_in(credit="100") as (state, client):
            assert await client.credit() == Decimal("100.0000")
            assert state.logins == 1

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("override", "refusal"),
    [({"api_secret": "not-the-secret"}, "Invalid signature"), ({"password": "wrong"}, "username")],
)
def test_refused_login_is_query_auth(override: dict[str, str], refusal: str) -> None:
    """A login the provider refuses (bad signature, bad password) raises QueryAuth."""

    async def scenario() -> None:
        async with stand_in(**override) as (state, client):
            with pytest.raises(QueryAuth, match=refusal):
                await client.credit()
            assert state.logins == 0

    asyncio.run(scenario())


def test_token_is_reused_across_sends() -> None:
    """Several sends and credit reads log in once."""

    async def scenario() -> None:
        async with stand_in() as (state, client):
            for i in range(3):
                await client.send(ALERT_NUMBERS, f"alert {i}")
            await client.credit()
            assert state.logins == 1
            assert [s.message for s in state.sends] == ["alert 0", "alert 1", "alert 2"]

    asyncio.run(scenario())


def test_relogin_after_forced_401() -> None:
    """An expired token gets 401; the client logs in once more and the send goes through."""

    async def scenario() -> None:
        async with stand_in() as (state, client):
            await client.send(ALERT_NUMBERS, "first")
            state.expire_tokens()
            await client.send(ALERT_NUMBERS, "second")
            assert state.logins == 2
            assert [s.message for s in state.sends] == ["first", "second"]

    asyncio.run(scenario())


def test_concurrent_401s_log_in_once() -> None:
    """Calls that all find the token expired share one new login."""

    async def scenario() -> None:
        async with stand_in() as (state, client):
            await client.credit()
            state.expire_tokens()
            await asyncio.gather(*(client.credit() for _ in range(5)))
            assert state.logins == 2

    asyncio.run(scenario())


def test_2500_numbers_take_three_calls() -> None:
    """2500 recipients go out in three calls of at most 1000 comma-separated numbers."""

    async def scenario() -> None:
        numbers = [f"60{n:09d}" for n in range(2500)]
        async with stand_in(credit="1000") as (state, client):
            await client.send(numbers, "bulk")
            sizes = [len(s.numbers) for s in state.sends]
            assert sizes == [1000, 1000, 500]
            assert [n for s in state.sends for n in s.numbers] == numbers
            assert await client.credit() == Decimal("875.0000")

    asyncio.run(scenario())


def test_provider_error_is_query_permanent() -> None:
    """An unknown SMS account code is a permanent error named by the provider's message."""

    async def scenario() -> None:
        async with stand_in(account_code="NOPE") as (_state, client):
            with pytest.raises(QueryPermanent, match="Merchant Sms Account not found"):
                await client.send(ALERT_NUMBERS, "x")

    asyncio.run(scenario())


def test_incident_alerted_twice_sends_one_sms(redis_client: redis.Redis, prefix: str) -> None:
    """The same incident key alerted twice (even by two alerters) sends one SMS."""

    async def scenario() -> None:
        async with stand_in() as (state, client):
            first = Alerter(client, redis_client, prefix)
            second = Alerter(client, redis_client, prefix)
            assert await first.alert("opay:default:stale", "payhook: 3 orders stale") is True
            assert await second.alert("opay:default:stale", "payhook: 3 orders stale") is False
            assert [s.numbers for s in state.sends] == [ALERT_NUMBERS]
            ttl = redis_client.ttl(first.key("opay:default:stale"))
            assert isinstance(ttl, int)
            assert 0 < ttl <= 86400

    asyncio.run(scenario())


def test_failed_send_releases_the_claim(redis_client: redis.Redis, prefix: str) -> None:
    """A send that fails releases the incident so the next pass sends it."""

    async def scenario() -> None:
        async with stand_in() as (state, client):
            alerter = Alerter(client, redis_client, prefix)
            state.fail_sends = FAST.attempts
            with pytest.raises(QueryTransient):
                await alerter.alert("inc-1", "payhook: 2 orders need review")
            assert redis_client.exists(alerter.key("inc-1")) == 0
            assert await alerter.alert("inc-1", "payhook: 2 orders need review") is True
            assert len(state.sends) == 1

    asyncio.run(scenario())


def test_low_credit_alerts_once_per_day(redis_client: redis.Redis, prefix: str) -> None:
    """Credit below the threshold alerts once a UTC day; credit above it never alerts."""

    async def scenario() -> None:
        async with stand_in(credit="5") as (state, client):
            alerter = Alerter(client, redis_client, prefix)
            day1 = datetime(2024, 5, 1, 8, tzinfo=UTC)
            first = await alerter.check_credit(Decimal("10"), now=day1)
            again = await alerter.check_credit(Decimal("10"), now=day1.replace(hour=20))
            assert (first.low, first.alerted, again.alerted) == (True, True, False)
            assert len(state.sends) == 1
            assert "credit" in state.sends[0].message
            fine = await alerter.check_credit(Decimal("1"), now=day1.replace(day=2))
            assert (fine.low, fine.alerted) == (False, False)
            assert len(state.sends) == 1

    asyncio.run(scenario())


def test_messages_and_logs_carry_no_secrets(redis_client: redis.Redis, prefix: str) -> None:
    """Neither the SMS text nor the log lines carry credentials, tokens or full numbers."""

    async def scenario() -> list[str]:
        async with stand_in() as (state, client):
            alerter = Alerter(client, redis_client, prefix, secrets=[PASSWORD])
            raw = f"review M1: 60123456789 jane@example.com password={PASSWORD} Bearer 1|AbC"
            await alerter.alert("inc-2", raw)
            token = next(iter(state.tokens))
            return [state.sends[0].message, token]

    with capture_logs() as logs:
        message, token = asyncio.run(scenario())
    logged = repr(logs)
    for secret in (PASSWORD, API_KEY, API_SECRET, token, "60123456789", "jane@example.com"):
        assert secret not in message
    for secret in (PASSWORD, API_KEY, API_SECRET, token, *ALERT_NUMBERS):
        assert secret not in logged
    assert "M1" in message
    assert "*******6789" in message


def test_client_refuses_to_send_its_own_credentials() -> None:
    """A message containing the API secret is refused before anything is sent."""

    async def scenario() -> None:
        async with stand_in() as (state, client):
            with pytest.raises(ValueError, match="credential"):
                await client.send(ALERT_NUMBERS, f"oops {API_SECRET}")
            assert state.sends == []

    asyncio.run(scenario())


def test_builder_keeps_counts_names_and_refs() -> None:
    """The builder lists counts, provider/account and order refs, and refuses free-form names."""
    counts, refs = {"resolved": 3, "not_found": 1}, [f"M{i}" for i in range(7)]
    text = build_alert(
        "reconcile findings", provider="opay", account="default", counts=counts, refs=refs
    )
    assert text == (
        "payhook: reconcile findings opay/default resolved=3 not_found=1 "
        "orders: M0, M1, M2, M3, M4 (+2 more)"
    )
    with pytest.raises(ValueError, match="count label"):
        build_alert("x", counts={"not found": 1})
    with pytest.raises(ValueError, match="order ref"):
        build_alert("x", refs=["M1 +60 12-345 6789"])


def test_an_unusual_account_name_is_made_plain_and_still_alerts() -> None:
    """Account names are any TOML key: a long or spaced one is cut and made plain, not refused."""
    long_name, spaced = "a" * 45, "kuala lumpur/2"
    report = PassReport(datetime(2026, 11, 22, tzinfo=UTC), None, None, cap=5)
    report.stats(f"opay/{long_name}").note("review", "M1")
    report.stats(f"mtpay/{spaced}").note("not_found", "M2")
    specs = report.alert_specs("2026-11-22")
    assert [s.incident for s in specs] == [
        "recon:mtpay/kuala lumpur/2:not_found:2026-11-22",
        f"recon:opay/{long_name}:review:2026-11-22",
    ]
    assert specs[0].message == (
        "payhook: orders not found at provider mtpay/kuala_lumpur_2 not_found=1 orders: M2"
    )
    assert specs[1].message == (
        f"payhook: orders need review opay/{'a' * 39}~ review=1 orders: M1"
    )


def test_scrub_masks_phone_numbers_and_opaque_tokens() -> None:
    """Phone-like digit runs keep only their last four digits; credential-like strings go."""
    assert scrub("call +60 12-345 6789 now") == "call +** **-*** 6789 now"
    assert scrub("order 2308123456789012345678 ok") == "order 2308123456789012345678 ok"
    assert "[redacted]" in scrub("key WUYx7DTQZakugtP9gOAimYUphcnc3jWu")
    assert scrub("credit=5.0000 threshold=10.0000") == "credit=5.0000 threshold=10.0000"
    assert mask_number("601111330000") == "********0000"


def test_config_refuses_unknown_keys_and_bad_numbers() -> None:
    """The `[notify.sssms88]` table forbids unknown keys and alert numbers that are not ASCII
    digits alone (`\\d` would take any script's digits, and `$` a trailing newline)."""
    with pytest.raises(ValueError, match="extra"):
        make_config("https://sms.example", colour="blue")
    for number in ("+60 111", "601111330000\n", "\u0666\u0660\u0661\u0661\u0661\u0661\u0663\u0663",
                   "\uff16\uff10\uff11\uff11\uff11\uff11\uff13\uff13"):  # Arabic-Indic, full-width
        with pytest.raises(ValueError, match="digits only"):
            make_config("https://sms.example", alert_numbers=[number])
    assert make_config("https://sms.example/").base_url == "https://sms.example"
