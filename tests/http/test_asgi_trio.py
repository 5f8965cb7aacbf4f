"""`ASGIMiddleware` and `fn.asgi` on trio (through anyio), as Starlette, FastAPI and hypercorn run there."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI

from lambdify import ASGIMiddleware, LambdaContext, current_context, handler


def _app(done: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def index(tasks: BackgroundTasks) -> dict[str, Any]:
        context = current_context()
        tasks.add_task(done.append, "background")
        context.defer(done.append, "deferred")
        return {"request_id": context.aws_request_id, "cold": context.cold_start}

    @app.get("/sleep")
    async def sleep() -> str:
        await anyio.sleep(10)
        return "late"

    @app.get("/boom")
    async def boom() -> str:
        raise ValueError("boom")

    return app


def test_requests_deadlines_and_background_work_on_trio() -> None:
    done: list[str] = []
    middleware = ASGIMiddleware(_app(done), timeout=0.5)

    async def main() -> tuple[list[httpx.Response], float]:
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = await client.get("/")
            second = await client.get("/")
            started = time.monotonic()
            slow = await client.get("/sleep")
            elapsed = time.monotonic() - started
            with pytest.raises(ValueError, match="boom"):
                await client.get("/boom")
            after = await client.get("/")
        return [first, second, slow, after], elapsed

    (first, second, slow, after), elapsed = anyio.run(main, backend="trio")
    assert first.status_code == second.status_code == 200
    assert first.json()["cold"] is True and second.json()["cold"] is False
    assert slow.status_code == 504 and slow.json() == {"message": "Endpoint request timed out"}
    assert 0.45 <= elapsed < 1.5
    assert after.status_code == 200
    assert done.count("background") == 3 and done.count("deferred") == 3
    stats = middleware.function.stats()
    assert stats["invocations"] == 5 and stats["timeouts"] == 1 and stats["errors"] == 1
    assert stats["cold_starts"] == 2 and stats["contexts_retired"] == 1  # the timed-out context was retired
    middleware.function.shutdown()


async def _lifespan(app: Any, phase: str) -> str:
    """One lifespan phase ("startup", "shutdown") driven as a server does; the app's answer."""
    answers: list[str] = []

    async def receive() -> dict[str, Any]:
        return {"type": f"lifespan.{phase}"}

    async def send(message: dict[str, Any]) -> None:
        answers.append(message["type"])
        raise _PhaseDone

    with pytest.raises(_PhaseDone):
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return answers[0]


class _PhaseDone(Exception):
    pass


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_fn_asgi_on_trio(kind: str) -> None:
    done: list[str] = []

    def describe(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        context.defer(done.append, "deferred")
        return {"cold": context.cold_start, "execution": context.execution.id, "path": event["rawPath"]}

    if kind == "sync":

        @handler(name=f"trio_{kind}", timeout=0.5, provisioned=1)
        def function(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
            if event["rawPath"] == "/sleep":
                for _ in range(500):  # (pure Python between short sleeps: an abandoned thread unwinds soon)
                    time.sleep(0.01)
            return describe(event, context)

    else:

        @handler(name=f"trio_{kind}", timeout=0.5, provisioned=1)
        async def function(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
            if event["rawPath"] == "/sleep":
                await anyio.sleep(10)
            return describe(event, context)

    async def main() -> tuple[list[str], list[httpx.Response], float]:
        phases = [await _lifespan(function.asgi, "startup")]
        transport = httpx.ASGITransport(app=function.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = await client.get("/a")
            second = await client.get("/b")
            started = time.monotonic()
            slow = await client.get("/sleep")
            elapsed = time.monotonic() - started
            after = await client.get("/c")
        phases.append(await _lifespan(function.asgi, "shutdown"))
        return phases, [first, second, slow, after], elapsed

    phases, (first, second, slow, after), elapsed = anyio.run(main, backend="trio")
    assert phases == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert first.status_code == second.status_code == after.status_code == 200
    assert [response.json()["path"] for response in (first, second, after)] == ["/a", "/b", "/c"]
    # the provisioned context, initialised at startup, served the first two: no cold start
    assert first.json()["cold"] is second.json()["cold"] is False
    assert first.json()["execution"] == second.json()["execution"] != after.json()["execution"]
    assert first.headers["x-amzn-requestid"] != second.headers["x-amzn-requestid"]
    assert slow.status_code == 504 and slow.json() == {"message": "Endpoint request timed out"}
    assert 0.45 <= elapsed < 1.5
    assert done == ["deferred"] * 3
    stats = function.stats()
    assert stats["invocations"] == 4 and stats["timeouts"] == 1 and stats["errors"] == 0
    assert stats["contexts_retired"] == 2  # the timed-out one, then the rest at shutdown
    assert stats["abandoned_threads"] == (1 if kind == "sync" else 0)
