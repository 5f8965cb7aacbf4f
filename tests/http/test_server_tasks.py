"""A task the server starts while sending a response belongs to the connection, not to the
invocation: hypercorn's asyncio worker (re)starts a keep-alive timer as a response ends. Taken
for the invocation's background work, it held every request open until its deadline (counted
as a timeout, its context retired). Driven in-process by a fake server that does the same.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lambdify import ASGIMiddleware, current_context, handler
from lambdify.http.types import ASGIApp, Message

TIMEOUT = 1.0  # s: a request held open by the server's task would take this long


class KeepAliveServer:
    """Sends requests to an ASGI app as hypercorn does: the `send` of a response's last body
    message starts a timer task on the connection (kept until the connection closes)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.timers: list[asyncio.Task[None]] = []

    async def get(self, path: str) -> tuple[int, bytes]:
        status = 0
        chunks: list[bytes] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self.timers.append(asyncio.get_running_loop().create_task(asyncio.sleep(60)))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        await self.app(scope, receive, send)
        return status, b"".join(chunks)

    async def close(self) -> None:
        for timer in self.timers:
            timer.cancel()
        await asyncio.gather(*self.timers, return_exceptions=True)


async def _serve_three(server: KeepAliveServer) -> list[tuple[int, bytes]]:
    try:
        started = time.monotonic()
        responses = [await server.get("/") for _ in range(3)]
        assert time.monotonic() - started < TIMEOUT  # none waited for the connection's timer
    finally:
        await server.close()
    return responses


@pytest.mark.anyio
async def test_middleware_requests_end_without_the_servers_task() -> None:
    deferred: list[str] = []

    async def index(request: Request) -> JSONResponse:
        context = current_context()
        context.defer(deferred.append, context.aws_request_id)
        return JSONResponse({"execution": context.execution.id})

    middleware = ASGIMiddleware(Starlette(routes=[Route("/", index)]), timeout=TIMEOUT)
    responses = await _serve_three(KeepAliveServer(middleware))
    assert [status for status, _ in responses] == [200] * 3
    assert len({body for _, body in responses}) == 1  # one warm context served all three
    assert len(deferred) == 3  # background work still runs before each invocation ends
    stats = middleware.function.stats()
    assert stats["invocations"] == 3 and stats["timeouts"] == 0 and stats["errors"] == 0
    assert stats["cold_starts"] == 1 and stats["contexts_retired"] == 0
    await middleware.function.ashutdown()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_fn_asgi_requests_end_without_the_servers_task(kind: str) -> None:
    def describe(context: Any) -> dict[str, Any]:
        return {"execution": context.execution.id}

    if kind == "sync":

        @handler(name="sync_keepalive", timeout=TIMEOUT)
        def hello(event: Any, context: Any) -> dict[str, Any]:
            return describe(context)

    else:

        @handler(name="async_keepalive", timeout=TIMEOUT)
        async def hello(event: Any, context: Any) -> dict[str, Any]:
            return describe(context)

    try:
        responses = await _serve_three(KeepAliveServer(hello.asgi))
        assert [status for status, _ in responses] == [200] * 3
        assert len({body for _, body in responses}) == 1
        stats = hello.stats()
        assert stats["invocations"] == 3 and stats["timeouts"] == 0 and stats["errors"] == 0
        assert stats["cold_starts"] == 1 and stats["contexts_retired"] == 0
    finally:
        await hello.ashutdown()
