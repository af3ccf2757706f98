"""The ack path's reference: a bare aiohttp server that reads each callback and echoes it as JSON.

Same routes, same `run_app` settings (no access log) as `payhook serve`, and nothing else: no
database, no broker, no metrics. `python -m bench.echo PORT`.
"""

from __future__ import annotations

import sys

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(body=body, content_type="application/json")


def create_app() -> web.Application:
    app = web.Application(client_max_size=65536)
    app.router.add_post("/callbacks/{provider}", echo)
    app.router.add_post("/callbacks/{provider}/{account}", echo)
    app.router.add_get("/healthz", lambda _r: _healthz())
    return app


async def _healthz() -> web.Response:
    return web.json_response({"status": "ok"})


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
                print=None, shutdown_timeout=2, auto_decompress=False)
