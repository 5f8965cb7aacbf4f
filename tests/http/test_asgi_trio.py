"""`ASGIMiddleware` on trio (through anyio), as Starlette and FastAPI run there."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI

from lambdify import ASGIMiddleware, current_context


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
