"""REPORT lines tell the invocation's real duration, on every surface (DESIGN.md §6)."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from werkzeug.test import Client

from lambdify import ASGIMiddleware, FunctionApp, WSGIMiddleware, handler

PAUSE = 0.05
_REPORT = re.compile(r"REPORT RequestId: \S+\tDuration: ([\d.]+) ms\tBilled Duration: (\d+) ms")


def _durations(caplog: pytest.LogCaptureFixture) -> list[tuple[float, int]]:
    found = [_REPORT.match(record.getMessage()) for record in caplog.records if record.name == "lambdify"]
    return [(float(match[1]), int(match[2])) for match in found if match]


def _check(caplog: pytest.LogCaptureFixture, wall: float) -> None:
    [(duration, billed)] = _durations(caplog)
    assert PAUSE * 1000 <= duration <= wall * 1000 + 1, (duration, wall)
    # The line shows the duration to 0.01 ms; the bill is the exact one rounded up to a whole ms,
    # so a duration shown as 51.00 ms may have been 51.004 ms and billed 52 ms.
    assert billed in {max(1, math.ceil(duration - 0.005)), max(1, math.ceil(duration + 0.005))}, (duration, billed)


@handler(name="report-sync")
def pause(event: Any, context: Any) -> dict[str, bool]:
    time.sleep(PAUSE)
    return {"ok": True}


@handler(name="report-async")
async def apause(event: Any, context: Any) -> dict[str, bool]:
    await asyncio.sleep(PAUSE)
    return {"ok": True}


@pytest.fixture(scope="module", autouse=True)
def _shut_down() -> Iterator[None]:
    yield
    pause.shutdown()
    apause.shutdown()


def _timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


@pytest.mark.parametrize("fn", [pause, apause], ids=["sync", "async"])
def test_invoke(fn: Any, caplog: pytest.LogCaptureFixture) -> None:
    fn.invoke({})  # (cold: INIT is not part of Duration either way)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lambdify"):
        wall = _timed(lambda: fn.invoke({}))
    _check(caplog, wall)


@pytest.mark.anyio
@pytest.mark.parametrize("surface", ["fn.asgi", "FunctionApp", "Invoke API"])
async def test_http_surfaces(surface: str, caplog: pytest.LogCaptureFixture) -> None:
    if surface == "fn.asgi":
        app, path, method = apause.asgi, "/", "GET"
    elif surface == "FunctionApp":
        app, path, method = FunctionApp([apause]), "/report-async/", "GET"
    else:
        app, path, method = FunctionApp([apause]), "/2015-03-31/functions/report-async/invocations", "POST"
    with caplog.at_level(logging.INFO, logger="lambdify"):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.request(method, path, content=b"{}")
            caplog.clear()
            started = time.perf_counter()
            response = await client.request(method, path, content=b"{}")
            wall = time.perf_counter() - started
    assert response.status_code == 200, response.text
    _check(caplog, wall)


async def _slow_endpoint(request: Request) -> JSONResponse:
    await asyncio.sleep(PAUSE)
    return JSONResponse({"ok": True})


@pytest.mark.anyio
async def test_asgi_middleware(caplog: pytest.LogCaptureFixture) -> None:
    middleware = ASGIMiddleware(Starlette(routes=[Route("/", _slow_endpoint)]))
    with caplog.at_level(logging.INFO, logger="lambdify"):
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.get("/")
            caplog.clear()
            started = time.perf_counter()
            response = await client.get("/")
            wall = time.perf_counter() - started
    assert response.status_code == 200
    _check(caplog, wall)  # (it read as the machine's uptime: Duration: 1180741.35 ms)


@pytest.mark.parametrize("on_thread", [False, True], ids=["inline", "hand-off"])
def test_wsgi_middleware(on_thread: bool, caplog: pytest.LogCaptureFixture) -> None:
    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        time.sleep(PAUSE)
        return "ok"

    client = Client(WSGIMiddleware(app))
    walls: list[float] = []

    def two() -> None:
        client.get("/").close()
        caplog.clear()
        started = time.perf_counter()
        response = client.get("/")
        assert response.data == b"ok"
        response.close()
        walls.append(time.perf_counter() - started)

    with caplog.at_level(logging.INFO, logger="lambdify"):
        if on_thread:
            thread = threading.Thread(target=two)
            thread.start()
            thread.join(10)
        else:
            two()
    _check(caplog, walls[0])
