"""BaseExceptions raised by a wrapped ASGI app pass through `ASGIMiddleware` unchanged (DESIGN.md §5)."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lambdify import ASGIMiddleware


class Stop(BaseException):
    """Like KeyboardInterrupt or SystemExit: not an Exception, so no framework handles it."""


async def stop(request: Request) -> PlainTextResponse:
    raise Stop("out")


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@pytest.mark.anyio
async def test_a_base_exception_passes_through_and_retires_the_context() -> None:
    middleware = ASGIMiddleware(Starlette(routes=[Route("/stop", stop), Route("/", ok)]), timeout=5)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/")).status_code == 200
        with pytest.raises(Stop, match="out"):
            await client.get("/stop")
        stats = middleware.function.stats()
        assert stats["contexts_retired"] == 1 and stats["contexts_alive"] == 0
        assert stats["errors"] == 1 and stats["timeouts"] == 0
        assert (await client.get("/")).status_code == 200  # a fresh context serves the next one
    assert middleware.function.stats()["cold_starts"] == 2
    await middleware.function.ashutdown()
