"""The receiver's second hand-off, against the session's real Redis: the publisher's task
message is the one `send_task` writes (any Celery worker reads it), and the dispatcher merges
small hand-offs into one task and survives a Redis it cannot reach."""

from __future__ import annotations

import asyncio
import base64
import json

import redis

from ingest.dispatch import Dispatcher
from payhook.broker import PROCESS_TASK, AsyncPublisher, Publisher, make_celery
from payhook.settings import Settings
from tests.conftest import queue_name


def _settings(redis_url: str, queue: str) -> Settings:
    return Settings(redis_url=redis_url, queue=queue)


def test_the_publisher_writes_the_message_send_task_writes(redis_url: str) -> None:
    """Same envelope, headers, properties and body as Celery's own `send_task` for the same
    call; only the ids that are fresh per message differ."""
    queue = queue_name("payhook-pub")
    settings = _settings(redis_url, queue)
    client = redis.Redis.from_url(redis_url)
    celery = make_celery(settings)
    celery.send_task(PROCESS_TASK, args=[[7, 8, 9]], retry=False)
    publisher = Publisher(settings)
    publisher([7, 8, 9])
    publisher.close()
    ours, theirs = (json.loads(m) for m in client.lrange(queue, 0, -1))  # LPUSH: newest first
    client.close()
    assert ours.keys() == theirs.keys()
    for part in ("headers", "properties"):
        assert ours[part].keys() == theirs[part].keys()
    fresh = {"id", "root_id", "origin", "correlation_id", "reply_to", "delivery_tag"}
    for part in ("headers", "properties"):
        for key, value in theirs[part].items():
            if key not in fresh:
                assert ours[part][key] == value, key
    assert ours["headers"]["root_id"] == ours["headers"]["id"]
    assert ours["properties"]["correlation_id"] == ours["headers"]["id"]
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(
        base64.b64decode(theirs["body"]))
    assert {k: ours[k] for k in ("content-type", "content-encoding")} == {
        k: theirs[k] for k in ("content-type", "content-encoding")}


def test_the_dispatcher_merges_small_hand_offs_into_one_task(redis_url: str) -> None:
    """Ten hand-offs of two ids within the linger time go out as one task of all twenty."""
    queue = queue_name("payhook-disp")
    publisher = AsyncPublisher(_settings(redis_url, queue))
    dispatcher = Dispatcher(publisher, max_ids=64, linger_s=0.2)

    async def scenario() -> None:
        await dispatcher.start()
        for n in range(10):
            dispatcher.submit([n * 2, n * 2 + 1])
        await dispatcher.stop()
        await publisher.close()

    asyncio.run(scenario())
    client = redis.Redis.from_url(redis_url)
    messages = [json.loads(m) for m in client.lrange(queue, 0, -1)]
    client.close()
    assert len(messages) == 1
    assert dispatcher.tasks == 1
    args, _kwargs, _embed = json.loads(base64.b64decode(messages[0]["body"]))
    assert args == [list(range(20))]


def test_a_failed_publish_is_logged_not_raised() -> None:
    """Redis unreachable: the ids stay committed for the sweeper; the dispatcher carries on."""
    publisher = AsyncPublisher(Settings(redis_url="redis://127.0.0.1:1/0", queue="nowhere",
                                        publish_timeout_s=0.2))
    dispatcher = Dispatcher(publisher, max_ids=64, linger_s=0.0)

    async def scenario() -> None:
        await dispatcher.start()
        dispatcher.submit([1, 2, 3])
        await dispatcher.stop()
        await publisher.close()

    asyncio.run(scenario())
    assert (dispatcher.published, dispatcher.tasks) == (0, 0)
