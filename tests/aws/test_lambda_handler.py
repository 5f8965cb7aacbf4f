"""`lambda_handler(app)` in-process (DESIGN.md §8): every HTTP source through a FastAPI and a
Flask app, lifespan once, one loop, background work finished before the return, other events."""

from __future__ import annotations

import asyncio
import base64
import signal
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI, Request, Response
from flask import Flask, request
from lambda_events import HTTP_SOURCES, SQS_EVENT, http_event

import lambdify
from lambdify import ASGIMiddleware, FunctionError, WSGIMiddleware, current_context, lambda_handler

BINARY = bytes(range(256))


class AwsContext:
    """What AWS's Python runtime passes as `context`."""

    def __init__(self, request_id: str = "8f507cfc-e2b8-4e32-9a0a-2b7f7bf7e7c1", remaining_ms: int = 3000) -> None:
        self.aws_request_id = request_id
        self.function_name = "my-function"
        self.function_version = "7"
        self.invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:my-function"
        self.memory_limit_in_mb = 512
        self.log_group_name = "/aws/lambda/my-function"
        self.log_stream_name = "2024/01/01/[7]0123456789abcdef"
        self._deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def make_fastapi(record: dict[str, Any]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        record["startups"] = record.get("startups", 0) + 1
        yield {"greeting": "hi"}
        record["shutdowns"] = record.get("shutdowns", 0) + 1

    app = FastAPI(lifespan=lifespan)

    @app.api_route("/echo/{rest:path}", methods=["GET", "POST"])
    async def echo(request: Request, rest: str) -> Response:
        body = await request.body()
        response = Response(
            body,
            media_type=request.headers.get("content-type", "application/octet-stream"),
            headers={
                "x-path": request.url.path,
                "x-query": "&".join(f"{k}={v}" for k, v in request.query_params.multi_items()),
            },
        )
        response.headers.append("x-many", "1")
        response.headers.append("x-many", "2")
        for name, value in request.cookies.items():
            response.set_cookie(f"got-{name}", value)
        return response

    @app.get("/context")
    async def context(request: Request) -> dict[str, Any]:
        lc = current_context()
        assert request.scope["lambdify.context"] is lc
        record.setdefault("loops", []).append(asyncio.get_running_loop())
        return {
            "request_id": lc.aws_request_id,
            "arn": lc.invoked_function_arn,
            "version": lc.function_version,
            "remaining": lc.get_remaining_time_in_millis(),
            "cold": lc.cold_start,
            "event_keys": sorted(request.scope["lambdify.aws_event"]),
            "aws_context": type(request.scope["lambdify.aws_context"]).__name__,
            "state": request.state.greeting,
        }

    @app.get("/background")
    async def background(tasks: BackgroundTasks) -> dict[str, str]:
        async def later(name: str) -> None:
            await asyncio.sleep(0.05)
            record.setdefault("done", []).append(name)

        tasks.add_task(later, "background-task")
        current_context().defer(later("deferred"))
        asyncio.get_running_loop().create_task(later("stray-task"))
        return {"ok": "yes"}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    return app


@pytest.fixture
def record() -> dict[str, Any]:
    return {}


@pytest.fixture
def fastapi_handler(record: dict[str, Any]) -> Iterator[lambdify.LambdaHandler]:  # type: ignore[name-defined]
    handler = lambda_handler(make_fastapi(record))
    yield handler
    handler.shutdown()


def _headers(result: dict[str, Any]) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {}
    for name, value in (result.get("headers") or {}).items():
        got.setdefault(name.lower(), []).extend(value.split(", ") if name.lower() != "set-cookie" else [value])
    for name, values in (result.get("multiValueHeaders") or {}).items():
        got[name.lower()] = list(values)
    if result.get("cookies"):
        got["set-cookie"] = list(result["cookies"])
    return got


def _body(result: dict[str, Any]) -> bytes:
    return base64.b64decode(result["body"]) if result["isBase64Encoded"] else result["body"].encode()


@pytest.mark.parametrize("source", HTTP_SOURCES)
def test_http_sources_round_trip(fastapi_handler: Any, source: str) -> None:
    headers = [(b"content-type", b"image/png"), (b"cookie", b"a=1; b=2")]
    event = http_event(source, "POST", "/echo/caf%C3%A9", b"q=1&q=2&s=x", headers, BINARY)
    result = fastapi_handler(event, AwsContext())
    assert result["statusCode"] == 200
    assert result["isBase64Encoded"] is True and _body(result) == BINARY
    got = _headers(result)
    assert got["x-path"] == ["/echo/café".encode().decode("latin-1")] or got["x-path"] == ["/echo/café"]
    expected_query = "q=2&s=x" if source == "alb" else "q=1&q=2&s=x"
    assert got["x-query"] == [expected_query]
    assert got["x-many"] == ["1", "2"]
    assert sorted(c.split(";")[0] for c in got["set-cookie"]) == ["got-a=1", "got-b=2"]
    if source.startswith("alb"):
        assert result["statusDescription"] == "200 OK"


def test_text_bodies_stay_text(fastapi_handler: Any) -> None:
    event = http_event("v2", "POST", "/echo/x", b"", [(b"content-type", b"application/json")], b'{"a": 1}')
    result = fastapi_handler(event, AwsContext())
    assert result["isBase64Encoded"] is False and result["body"] == '{"a": 1}'


def test_context_lifespan_and_loop(fastapi_handler: Any, record: dict[str, Any]) -> None:
    results = [fastapi_handler(http_event("v2", path="/context"), AwsContext(f"id-{n}", 5000)) for n in range(5)]
    first = _json(results[0])
    assert first["request_id"] == "id-0" and first["cold"] is True
    assert first["arn"] == "arn:aws:lambda:eu-west-1:123456789012:function:my-function"
    assert first["version"] == "7"
    assert 4000 < first["remaining"] <= 5000
    assert "requestContext" in first["event_keys"] and first["aws_context"] == "AwsContext"
    assert first["state"] == "hi"  # the lifespan's state reaches each request
    assert [_json(r)["cold"] for r in results[1:]] == [False] * 4
    assert record["startups"] == 1 and "shutdowns" not in record
    assert len(set(map(id, record["loops"]))) == 1  # one loop for the environment's life
    fastapi_handler.shutdown()
    assert record["shutdowns"] == 1
    assert record["loops"][0].is_closed()


def _json(result: dict[str, Any]) -> Any:
    import json

    return json.loads(result["body"])


def test_background_work_finishes_before_the_return(fastapi_handler: Any, record: dict[str, Any]) -> None:
    result = fastapi_handler(http_event("v2", path="/background"), AwsContext())
    assert _json(result) == {"ok": "yes"}
    assert sorted(record["done"]) == ["background-task", "deferred", "stray-task"]


def test_app_error_is_the_invocations_error(fastapi_handler: Any) -> None:
    # FastAPI answers 500 and raises on: the response is complete, so it is returned (and logged).
    result = fastapi_handler(http_event("v2", path="/boom"), AwsContext())
    assert result["statusCode"] == 500

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("before any response")

    handler = lambda_handler(broken)
    try:
        with pytest.raises(RuntimeError, match="before any response"):
            handler(http_event("v2"), AwsContext())
    finally:
        handler.shutdown()


def test_other_events_fail_naming_their_source(fastapi_handler: Any) -> None:
    with pytest.raises(FunctionError) as info:
        fastapi_handler(SQS_EVENT, AwsContext("sqs-1"))
    assert "SQS" in str(info.value) and "on_event" in str(info.value)
    assert info.value.request_id == "sqs-1"
    assert not isinstance(info.value, KeyError)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_other_events_reach_on_event(record: dict[str, Any], kind: str) -> None:
    seen: list[Any] = []

    def sync_on_event(event: Any, context: Any) -> dict[str, int]:
        seen.append((event, context.aws_request_id, current_context() is context))
        context.defer(seen.append, "deferred")
        return {"batchItemFailures": 0}

    async def async_on_event(event: Any, context: Any) -> dict[str, int]:
        await asyncio.sleep(0)
        return sync_on_event(event, context)

    handler = lambda_handler(make_fastapi(record), on_event=sync_on_event if kind == "sync" else async_on_event)
    try:
        assert handler(SQS_EVENT, AwsContext("sqs-2")) == {"batchItemFailures": 0}
        assert seen == [(SQS_EVENT, "sqs-2", True), "deferred"]
    finally:
        handler.shutdown()


def make_flask(record: dict[str, Any]) -> Flask:
    app = Flask("flask_app")

    @app.route("/echo/<path:rest>", methods=["GET", "POST"])
    def echo(rest: str) -> Any:
        response = app.response_class(request.get_data(), content_type=request.content_type)
        response.headers["x-path"] = request.path
        response.headers["x-query"] = "&".join(f"{k}={v}" for k, v in request.args.items(multi=True))
        response.headers.add("x-many", "1")
        response.headers.add("x-many", "2")
        for name, value in request.cookies.items():
            response.set_cookie(f"got-{name}", value)
        lc = current_context()
        assert request.environ["lambdify.context"] is lc
        assert request.environ["lambdify.aws_event"]["requestContext"]
        lc.defer(record.setdefault("deferred", []).append, lc.aws_request_id)
        return response

    return app


@pytest.mark.parametrize("source", HTTP_SOURCES)
def test_flask_app(record: dict[str, Any], source: str) -> None:
    handler = lambda_handler(make_flask(record))
    try:
        headers = [(b"content-type", b"application/octet-stream"), (b"cookie", b"a=1; b=2")]
        event = http_event(source, "POST", "/echo/x", b"q=1&q=2", headers, BINARY)
        result = handler(event, AwsContext(f"flask-{source}"))
        assert result["statusCode"] == 200 and _body(result) == BINARY
        got = _headers(result)
        assert got["x-query"] == (["q=2"] if source == "alb" else ["q=1&q=2"])
        assert got["x-many"] == ["1", "2"]
        assert sorted(c.split(";")[0] for c in got["set-cookie"]) == ["got-a=1", "got-b=2"]
        assert record["deferred"] == [f"flask-{source}"]  # finished before the handler returned
    finally:
        handler.shutdown()


def test_middlewares_and_their_options(record: dict[str, Any]) -> None:
    inits: list[str] = []
    asgi = lambda_handler(ASGIMiddleware(make_fastapi(record), name="api", init=lambda ctx: inits.append("asgi")))
    wsgi = lambda_handler(WSGIMiddleware(make_flask(record), name="web", init=lambda ctx: inits.append("wsgi")))
    try:
        assert asgi(http_event("v1", path="/context"), AwsContext())["statusCode"] == 200
        assert wsgi(http_event("v1", "POST", "/echo/x"), AwsContext())["statusCode"] == 200
        assert inits == ["asgi", "wsgi"]
        assert asgi.function.name == "api" and wsgi.function.name == "web"
        stats = lambdify.stats()
        assert stats["api"]["invocations"] == 1 and stats["api"]["cold_starts"] == 1
    finally:
        asgi.shutdown()
        wsgi.shutdown()


def test_what_cannot_be_served_is_refused() -> None:
    with pytest.raises(TypeError, match="ASGI or WSGI"):
        lambda_handler(42)
    with pytest.raises(TypeError, match="cannot tell"):
        lambda_handler(lambda *args: None)
    with pytest.raises(TypeError, match="on_event"):
        lambda_handler(make_flask({}), on_event=42)


def test_oversized_response_is_a_502(caplog: pytest.LogCaptureFixture) -> None:
    async def huge(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"image/png")]})
        await send({"type": "http.response.body", "body": b"\0" * 5_000_000})

    handler = lambda_handler(huge)
    try:
        result = handler(http_event("v2"), AwsContext())
    finally:
        handler.shutdown()
    assert result["statusCode"] == 502
    assert "over Lambda's" in caplog.text


def test_init_on_aws_runs_at_construction(monkeypatch: pytest.MonkeyPatch, record: dict[str, Any]) -> None:
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")  # nothing listens: INIT must not call it
    previous = signal.getsignal(signal.SIGTERM)
    try:
        handler = lambda_handler(make_fastapi(record))
        assert record["startups"] == 1  # before any event: Lambda's INIT phase
        assert signal.getsignal(signal.SIGTERM) is not previous
        handler(http_event("v2", path="/context"), AwsContext())
        assert record["startups"] == 1
        handler.shutdown()
        assert record["shutdowns"] == 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_counts_and_an_app_that_is_a_plain_callable() -> None:
    # An ASGI app whose __call__ is a plain function returning the inner app's coroutine (a
    # hand-written wrapper): it runs in the event's task, with the loop running, as under a server.
    seen: dict[str, Any] = {}

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen["loop"] = asyncio.get_running_loop()
        seen["task"] = asyncio.current_task()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"Content-Type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"plain"})

    class Wrapper:
        def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
            seen["running_at_call"] = asyncio.get_running_loop()
            return inner(scope, receive, send)

    handler = lambda_handler(ASGIMiddleware(Wrapper()), name="plain_callable")
    try:
        for _ in range(3):
            result = handler(http_event("v2"), AwsContext())
            assert (result["statusCode"], result["body"], result["headers"]["content-type"]) == (
                200,
                "plain",
                "text/plain",
            )
        assert seen["loop"] is seen["running_at_call"] and seen["task"] is not None
        with pytest.raises(FunctionError):
            handler(SQS_EVENT, AwsContext())  # not HTTP, no on_event: counted as an error
        stats = handler.function.stats()
        assert (stats["invocations"], stats["cold_starts"], stats["warm_starts"], stats["errors"]) == (4, 1, 3, 1)
    finally:
        handler.shutdown()
