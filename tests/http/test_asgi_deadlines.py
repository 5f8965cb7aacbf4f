"""`ASGIMiddleware` at the deadline, after the response: what went out whole stays whole."""

from __future__ import annotations

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lambdify import ASGIMiddleware


async def _slow_cleanup() -> None:
    await anyio.sleep(1)  # background work past the deadline


async def send_mail(request: Request) -> PlainTextResponse:
    return PlainTextResponse("queued", background=BackgroundTask(_slow_cleanup))


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_a_deadline_passed_in_background_work_after_a_whole_response_does_not_cut_the_connection() -> None:
    # The response went out whole: the server must not be told to close the connection, which
    # may already carry the client's next request (uvicorn closes it on any exception).
    middleware = ASGIMiddleware(Starlette(routes=[Route("/send_mail", send_mail)]), timeout=0.3)
    transport = httpx.ASGITransport(app=middleware)  # (raises what the app raises)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/send_mail")
    assert (response.status_code, response.text) == (200, "queued")
    stats = middleware.function.stats()
    assert stats["timeouts"] == 1 and stats["contexts_retired"] == 1  # (still a timeout: counted, reset)
    await middleware.function.ashutdown()
