"""The Tail capture changes the process only while a Tail invocation runs; every failure logs one line."""

from __future__ import annotations

import base64
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from lambdify import Function, FunctionApp, FunctionError, InvocationTimeout, LambdaContext, handler


def _chatty(functions: list[Function[Any]]) -> Function[Any]:
    @handler(name="chatty")
    def chatty(event: Any, context: LambdaContext) -> Any:
        print("printed by the handler")
        sys.stderr.write("written to stderr\n")
        logging.getLogger("app").warning("logged by the handler")
        return {"ok": True}

    functions.append(chatty)
    return chatty


@contextlib.asynccontextmanager
async def _served(app: FunctionApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` between its lifespan startup and shutdown."""
    transport = httpx.ASGITransport(app=app)
    async with app.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://lambda") as client:
        yield client


def _tail(response: httpx.Response) -> str:
    return base64.b64decode(response.headers["x-amz-log-result"]).decode()


def test_constructing_a_function_app_changes_nothing(functions: list[Function[Any]]) -> None:
    stdout, stderr, handlers = sys.stdout, sys.stderr, list(logging.getLogger().handlers)
    FunctionApp([_chatty(functions)])
    assert sys.stdout is stdout and sys.stderr is stderr
    assert logging.getLogger().handlers == handlers


@pytest.mark.anyio
async def test_a_tail_invocation_captures_prints_and_logs_and_leaves_nothing_behind(
    functions: list[Function[Any]],
) -> None:
    stdout, stderr, handlers = sys.stdout, sys.stderr, list(logging.getLogger().handlers)
    app = FunctionApp([_chatty(functions)])
    async with _served(app) as client:
        assert sys.stdout is stdout and sys.stderr is stderr
        response = await client.post(
            "/2015-03-31/functions/chatty/invocations", json={}, headers={"X-Amz-Log-Type": "Tail"}
        )
        assert response.status_code == 200 and response.json() == {"ok": True}
        log = _tail(response)
        assert "printed by the handler\n" in log
        assert "written to stderr\n" in log
        assert "[WARNING]" in log and "logged by the handler" in log
        assert log.startswith("START RequestId:") and "REPORT RequestId:" in log
        # between invocations, the process is the application's again
        assert sys.stdout is stdout and sys.stderr is stderr
        assert logging.getLogger().handlers == handlers
        plain = await client.post("/2015-03-31/functions/chatty/invocations", json={})
        assert "x-amz-log-result" not in plain.headers
    assert sys.stdout is stdout and sys.stderr is stderr
    assert logging.getLogger().handlers == handlers


@pytest.mark.anyio
async def test_concurrent_tail_invocations_share_one_capture(functions: list[Function[Any]]) -> None:
    import asyncio

    @handler(name="slow", concurrency=None)
    async def slow(event: Any, context: LambdaContext) -> Any:
        print(f"hello {event['n']}")
        await asyncio.sleep(0.05)
        print(f"bye {event['n']}")
        return event

    functions.append(slow)
    stdout = sys.stdout
    app = FunctionApp([slow])
    async with _served(app) as client:
        responses = await asyncio.gather(
            *(
                client.post("/2015-03-31/functions/slow/invocations", json={"n": n}, headers={"X-Amz-Log-Type": "Tail"})
                for n in range(3)
            )
        )
    for n, response in enumerate(responses):
        log = _tail(response)
        assert f"hello {n}\n" in log and f"bye {n}\n" in log
        assert all(f"hello {other}" not in log for other in range(3) if other != n)
    assert sys.stdout is stdout


@pytest.mark.anyio
async def test_a_stream_replaced_during_the_invocation_is_left_in_place(functions: list[Function[Any]]) -> None:
    import io

    stdout = sys.stdout
    replacement = io.StringIO()

    @handler(name="redirects")
    def redirects(event: Any, context: LambdaContext) -> Any:
        sys.stdout = replacement  # an application's own redirection outlives the invocation
        return None

    functions.append(redirects)
    try:
        async with _served(FunctionApp([redirects])) as client:
            await client.post("/2015-03-31/functions/redirects/invocations", headers={"X-Amz-Log-Type": "Tail"})
        assert sys.stdout is replacement
    finally:
        sys.stdout = stdout


# -- one log line per failed invocation ------------------------------------------------------


def _failures(caplog: pytest.LogCaptureFixture, request_id: str | None = None) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "lambdify"
        and record.levelno >= logging.ERROR
        and (request_id is None or request_id in record.getMessage())
    ]


@pytest.mark.parametrize(
    "kind",
    ["handler-error", "marshal-error", "response-too-large", "timeout"],
)
def test_every_failed_invocation_logs_one_line(
    functions: list[Function[Any]], caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    @handler(name="failing", timeout=0.2)
    def failing(event: Any, context: LambdaContext) -> Any:
        if kind == "handler-error":
            raise RuntimeError("boom")
        if kind == "marshal-error":
            return {"when": object()}
        if kind == "response-too-large":
            return {"body": "x" * (6 * 1024 * 1024 + 100)}
        time.sleep(1)
        return None

    functions.append(failing)
    caplog.set_level(logging.INFO, logger="lambdify")
    with pytest.raises(FunctionError) as caught:
        failing.invoke({})
    if kind == "timeout":
        assert isinstance(caught.value, InvocationTimeout)
    lines = _failures(caplog)
    assert len(lines) == 1, [record.getMessage() for record in caplog.records]
    assert caught.value.request_id in lines[0].getMessage()
    assert caught.value.error_type in lines[0].getMessage() or "timed out" in lines[0].getMessage()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["marshal-error", "handler-error"])
async def test_a_failed_tail_invocation_has_its_error_in_the_tail(functions: list[Function[Any]], kind: str) -> None:
    @handler(name="bad")
    def bad(event: Any, context: LambdaContext) -> Any:
        if kind == "handler-error":
            raise RuntimeError("boom")
        return {"when": object()}

    functions.append(bad)
    async with _served(FunctionApp([bad])) as client:
        response = await client.post("/2015-03-31/functions/bad/invocations", headers={"X-Amz-Log-Type": "Tail"})
    assert response.headers["x-amz-function-error"] == "Unhandled"
    expected = "Runtime.MarshalError" if kind == "marshal-error" else "RuntimeError"
    assert f"[ERROR] {expected}:" in _tail(response)
