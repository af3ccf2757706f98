"""The sandbox providers' HTTP face: one aiohttp app answering all four query APIs from a
`SandboxWorld`, and a server running it on a thread for tests and benchmarks."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from payhook.embedded import free_port
from providers.base import HttpRequest
from sandbox.world import PROVIDERS, SandboxWorld

WORLD = web.AppKey("world", SandboxWorld)


async def _query(request: web.Request) -> web.Response:
    world = request.app[WORLD]
    provider = request.match_info["provider"]
    if provider not in PROVIDERS:
        raise web.HTTPNotFound()
    if delay := world.stalled.get(provider):
        await asyncio.sleep(delay)
    if provider in world.busy:
        world.queries[(provider, "*busy*")] += 1
        return web.Response(body=world.busy_reply(provider), content_type="application/json")
    outgoing = HttpRequest(request.method, str(request.url), dict(request.headers),
                           await request.read())
    status, body, content_type = world.answer(provider, outgoing)
    return web.Response(status=status, body=body, headers={"Content-Type": content_type})


async def _publish(request: web.Request) -> web.Response:
    """Sandbox control, not a provider API: set what a provider reports for one order (used by
    `payhook sandbox send` to tell the providers of a running `payhook dev`)."""
    provider = request.match_info["provider"]
    if provider not in PROVIDERS:
        raise web.HTTPNotFound()
    fields = await request.json()
    if not isinstance(fields, dict):
        raise web.HTTPBadRequest(text="a JSON object of provider fields")
    request.app[WORLD].publish(provider, fields)
    return web.json_response({"published": provider})


def create_provider_app(world: SandboxWorld) -> web.Application:
    """One app serving every provider's query API under `/<provider>/…` (and the sandbox's
    own `POST /_sandbox/publish/<provider>`)."""
    app = web.Application()
    app[WORLD] = world
    app.router.add_post("/_sandbox/publish/{provider}", _publish)
    app.router.add_route("*", "/{provider}/{tail:.*}", _query)
    return app


class ProviderServer:
    """The sandbox's provider query APIs, served from a thread on 127.0.0.1."""

    def __init__(self, world: SandboxWorld) -> None:
        self.world = world
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(create_provider_app(self.world), access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def start(self) -> ProviderServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
