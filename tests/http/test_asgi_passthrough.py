"""BaseExceptions raised by a wrapped ASGI app pass through `ASGIMiddleware` unchanged (DESIGN.md §5),
and those raised by a handler pass through `fn.asgi` alike."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lambdify import ASGIMiddleware, LambdaContext, handler


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


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_base_exception_from_a_handler_passes_through_fn_asgi(kind: str) -> None:
    def body(event: Any, context: LambdaContext) -> Any:
        if event["rawPath"] == "/stop":
            raise Stop("out")
        return {"statusCode": 200, "body": context.execution.id}

    async def async_body(event: Any, context: LambdaContext) -> Any:
        return body(event, context)

    fn = handler(name=f"stops_{kind}", timeout=5)(async_body if kind == "async" else body)
    transport = httpx.ASGITransport(app=fn.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = (await client.get("/")).text
        with pytest.raises(Stop, match="out"):
            await client.get("/stop")
        assert (await client.get("/")).text != first  # the context it left was retired
    stats = fn.stats()
    assert stats["invocations"] == 3 and stats["errors"] == 1 and stats["contexts_retired"] == 1
    await fn.ashutdown()
