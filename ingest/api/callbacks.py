"""/api/callbacks: stored callbacks, secrets masked, and replaying one from its raw bytes."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ingest.api.common import bad_request, db_session, found, in_thread, row_id
from ledger.models import Callback
from ledger.replay import Replay, reset_for_replay
from ledger.views import callback_summary, list_callbacks
from payhook.bodies import mask_body
from payhook.masking import MASK, is_secret


async def get_callbacks(request: web.Request) -> web.Response:
    try:
        limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
    except ValueError:
        return bad_request("limit must be an integer")
    state, provider = request.query.get("state"), request.query.get("provider")

    def work() -> list[dict[str, Any]]:
        with db_session(request) as session:
            return list_callbacks(session, state=state, provider=provider, limit=limit)

    return web.json_response({"callbacks": await in_thread(work)})


async def get_callback(request: web.Request) -> web.Response:
    callback_id = row_id(request, "callback")

    def work() -> dict[str, Any] | None:
        with db_session(request) as session:
            cb = session.get(Callback, callback_id)
            if cb is None:
                return None
            body = callback_summary(cb)
            # Secrets masked (CONTRACT §3): in the headers, and in the body's own fields (OPay
            # sends its clientAuthKey in both).
            body["headers"] = [[k, MASK if is_secret(k) else v] for k, v in json.loads(cb.headers)]
            body["body"] = mask_body(cb.body)
            body["remote_addr"] = cb.remote_addr
            return body

    return await found("callback", work)


async def replay_callback(request: web.Request) -> web.Response:
    """Put a stored callback back to `received` and enqueue it: processed again from raw bytes."""
    from ingest.app import DISPATCHER

    callback_id = row_id(request, "callback")

    def work() -> Replay:
        with db_session(request) as session, session.begin():
            return reset_for_replay(session, ids=[callback_id])

    replay = await in_thread(work)
    if replay.in_flight:
        return web.json_response(
            {"error": "callback has not ended yet; it is still being processed"}, status=409
        )
    if not replay.reset:
        return web.json_response({"error": "callback not found"}, status=404)
    request.app[DISPATCHER].submit(replay.reset)
    return web.json_response({"replayed": replay.reset}, status=202)

