"""`lambdify.stats()` and `context.execution.function`: statistics without holding the middleware
(FastAPI's `add_middleware` keeps it to itself)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import lambdify
from lambdify import ASGIMiddleware, current_context, handler


@pytest.mark.anyio
async def test_a_middleware_nobody_holds_is_seen_from_the_app_and_from_lambdify_stats() -> None:
    app = FastAPI()

    @app.get("/")
    async def index() -> dict[str, Any]:
        stats = current_context().execution.function.stats()
        return {"invocations": stats["invocations"], "name": current_context().execution.function.name}

    app.add_middleware(ASGIMiddleware, name="registry-app")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = (await client.get("/")).json()
        second = (await client.get("/")).json()
    assert first == {"invocations": 0, "name": "registry-app"}  # (counted once it has ended)
    assert second["invocations"] == 1
    entry = lambdify.stats()["registry-app"]
    assert entry["invocations"] == 2 and entry["cold_starts"] == 1 and entry["warm_starts"] == 1
    [context] = entry["contexts"]
    assert context["state"] == "idle" and context["invocations"] == 2 and context["pid"] > 0


def test_functions_of_one_name_are_told_apart() -> None:
    first = handler(name="twin")(lambda event, context: 1)
    second = handler(name="twin")(lambda event, context: 2)
    first.invoke({})
    second.invoke({})
    second.invoke({})
    report = lambdify.stats()
    counts = sorted(report[key]["invocations"] for key in report if key.split("#")[0] == "twin")
    assert counts == [1, 2]
    first.shutdown()
    second.shutdown()
